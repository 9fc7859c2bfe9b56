"""IAM Admin v1 (google.iam.admin.v1.IAM): service accounts (the configuration's, and those
created over the API) and their IAM policies, as the official IAM client reads, writes and
tests them.

Served: CreateServiceAccount, GetServiceAccount, ListServiceAccounts, GetIamPolicy,
SetIamPolicy, TestIamPermissions. Every other method of the service answers UNIMPLEMENTED.

A service account is named ``projects/PROJECT/serviceAccounts/ACCOUNT`` or, with the
project inferred from the account, ``projects/-/serviceAccounts/ACCOUNT``; ACCOUNT is the
email or the unique ID. An account that does not exist answers NOT_FOUND ``Unknown service
account``, as Google does for both forms.

CreateServiceAccount makes ``ACCOUNT_ID@PROJECT.iam.gserviceaccount.com`` in the emulator's
project, with the request's display name and description; it is kept in the state and,
from then on, is an account like the configured ones (found, listed, its policy read and
set, acted as by CreateTask). ``account_id`` is checked as Google checks it: 6 to 30
characters, then the pattern Google's own message quotes; an account that exists answers
ALREADY_EXISTS "Service account ID already exists within project projects/P."
(github.com/GoogleCloudPlatform/java-docs-samples/issues/3605).

IAM, when ``[iam] enforce = true``, as Google checks it and before saying whether the account
exists: CreateServiceAccount needs ``iam.serviceAccounts.create`` and ListServiceAccounts
``iam.serviceAccounts.list`` on the project; GetServiceAccount ``iam.serviceAccounts.get``,
GetIamPolicy ``iam.serviceAccounts.getIamPolicy`` and SetIamPolicy
``iam.serviceAccounts.setIamPolicy`` on the account (or the project). A refusal is IAM's
"Permission P is required to perform this operation on service account NAME."
(``iam.iam_denied``). TestIamPermissions needs nothing and answers what the caller holds.
What the policies grant is enforced elsewhere too: Cloud Tasks' CreateTask checks
``iam.serviceAccounts.actAs``.

Where the emulator differs from Google, on purpose:

- The configured accounts' unique ID and display name are derived from the email; created
  accounts get their unique ID the same way.
- Accounts cannot be deleted, disabled or updated over the API; the configuration's
  ``[[service_accounts]]`` stay as the file says at every start.
- Policies have no conditions; ``options.requested_policy_version`` is ignored.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import grpc
from google.cloud import iam_admin_v1
from google.iam.v1 import iam_policy_pb2

from emulator.config import EmulatorConfig
from emulator.errors import ApiError, denied, invalid, not_found
from emulator.grpc_server import GrpcRouter
from emulator.iam import (
    OWNER_ROLES,
    Authorizer,
    Policy,
    PolicyStore,
    iam_denied,
    service_account_resource,
)
from emulator.store import Store

IAM_ADMIN_V1 = "google.iam.admin.v1.IAM"
ServiceAccount = iam_admin_v1.ServiceAccount.pb()
CreateServiceAccountRequest = iam_admin_v1.CreateServiceAccountRequest.pb()
GetServiceAccountRequest = iam_admin_v1.GetServiceAccountRequest.pb()
ListServiceAccountsRequest = iam_admin_v1.ListServiceAccountsRequest.pb()
ListServiceAccountsResponse = iam_admin_v1.ListServiceAccountsResponse.pb()

# Google's answers (iam.googleapis.com), word for word.
UNKNOWN_ACCOUNT = "Unknown service account"
ENTITY_MISSING = "Requested entity was not found."
_NAME = re.compile(r"^projects/(?P<project>[^/]+)/serviceAccounts/(?P<account>[^/]+)$")
_PARENT = re.compile(r"^projects/(?P<project>[^/]+)$")
_SA_DOMAIN = ".iam.gserviceaccount.com"
# The pattern IAM's refusal quotes ("adcp-sales-tenant_wonderstruck does not match
# [a-zA-Z][a-zA-Z\d\-]*[a-zA-Z\d].": github.com/prebid/salesagent/pull/789); the reference
# documents lower case, [a-z]([-a-z0-9]*[a-z0-9]), and emails are lower case: a capital in
# an ID is accepted as Google's check accepts it and the email made lower case.
ACCOUNT_ID_PATTERN = r"[a-zA-Z][a-zA-Z\d\-]*[a-zA-Z\d]"
_ACCOUNT_ID = re.compile(f"^{ACCOUNT_ID_PATTERN}$")
MIN_ACCOUNT_ID, MAX_ACCOUNT_ID = 6, 30
DEFAULT_PAGE, MAX_PAGE = 20, 100

# What TestIamPermissions accepts on a service account.
SERVICE_ACCOUNT_PERMISSIONS = frozenset(f"iam.serviceAccounts.{p}" for p in (
    "actAs", "get", "getIamPolicy", "setIamPolicy", "update", "delete", "disable", "enable",
    "undelete", "getAccessToken", "getOpenIdToken", "signBlob", "signJwt",
    "implicitDelegation",
))
# The roles a service account's policy may grant; others are refused as Google refuses them.
SERVICE_ACCOUNT_ROLES = OWNER_ROLES | frozenset({
    "roles/viewer", "roles/iam.serviceAccountUser", "roles/iam.serviceAccountTokenCreator",
    "roles/iam.serviceAccountOpenIdTokenCreator", "roles/iam.serviceAccountAdmin",
    "roles/iam.serviceAccountKeyAdmin", "roles/iam.serviceAccountViewer",
    "roles/iam.workloadIdentityUser", "roles/iam.securityAdmin", "roles/iam.securityReviewer",
})


@dataclass(frozen=True)
class Account:
    email: str
    project: str
    unique_id: str
    display_name: str
    description: str = ""

    @property
    def name(self) -> str:
        return f"projects/{self.project}/serviceAccounts/{self.email}"

    @property
    def resource(self) -> str:
        """The account's key in the policy store."""
        return service_account_resource(self.email)

    def to_proto(self) -> ServiceAccount:
        return ServiceAccount(
            name=self.name, project_id=self.project, unique_id=self.unique_id,
            email=self.email, display_name=self.display_name, description=self.description,
            oauth2_client_id=self.unique_id,
        )

    @classmethod
    def from_proto(cls, sa: ServiceAccount) -> Account:
        return cls(sa.email, sa.project_id, sa.unique_id, sa.display_name, sa.description)


def unique_id(email: str) -> str:
    """A stable 21-digit ID, like Google's, derived from the email."""
    digest = int.from_bytes(hashlib.sha256(email.lower().encode()).digest()[:16], "big")
    return str(10**20 + digest % (9 * 10**20))


def display_name(email: str) -> str:
    """``enqueuer-caller@...`` -> ``Enqueuer Caller``."""
    local = email.split("@", 1)[0]
    return " ".join(w.capitalize() for w in re.split(r"[-_.]+", local) if w) or local


def account_project(email: str, default: str) -> str:
    """The project an account belongs to: ``NAME@PROJECT.iam.gserviceaccount.com``, else
    ``default`` (Google-managed accounts such as ``N-compute@developer...``)."""
    domain = email.split("@", 1)[-1].lower()
    return domain.removesuffix(_SA_DOMAIN) if domain.endswith(_SA_DOMAIN) else default


class IamAdmin:
    def __init__(self, config: EmulatorConfig, authorizer: Authorizer, store: Store) -> None:
        self.config = config
        self.authorizer = authorizer
        self.store = store
        self.policies: PolicyStore = authorizer.policies
        self.configured: list[Account] = []
        seen: set[str] = set()
        for sa in config.service_accounts:
            email = sa.email
            if email.lower() in seen:
                continue
            seen.add(email.lower())
            self.configured.append(Account(email, account_project(email, config.project),
                                           unique_id(email), display_name(email)))

    def register(self, router: GrpcRouter) -> None:
        """Serve google.iam.admin.v1.IAM on the emulator's gRPC port."""
        router.add_all(IAM_ADMIN_V1, self, {
            "CreateServiceAccount": CreateServiceAccountRequest,
            "GetServiceAccount": GetServiceAccountRequest,
            "ListServiceAccounts": ListServiceAccountsRequest,
            "GetIamPolicy": iam_policy_pb2.GetIamPolicyRequest,
            "SetIamPolicy": iam_policy_pb2.SetIamPolicyRequest,
            "TestIamPermissions": iam_policy_pb2.TestIamPermissionsRequest,
        })

    # -- accounts ---------------------------------------------------------------------

    @property
    def accounts(self) -> list[Account]:
        """Every account: the configured ones, then those created over the API (a created
        account the configuration now lists too is the configured one)."""
        configured = {a.email.lower() for a in self.configured}
        created = (Account.from_proto(ServiceAccount.FromString(body))
                   for body in self.store.service_accounts())
        return self.configured + [a for a in created if a.email.lower() not in configured]

    def _find(self, name: str) -> Account | None:
        """The account ``name`` designates, in any of Google's forms; None if there is none."""
        m = _NAME.match(name)
        if not m:
            raise invalid(
                f'Invalid service account name "{name}": use '
                "projects/PROJECT_ID/serviceAccounts/EMAIL_OR_UNIQUE_ID, or "
                "projects/-/serviceAccounts/EMAIL_OR_UNIQUE_ID to infer the project."
            )
        key, project = m["account"].lower(), m["project"]
        for acc in self.accounts:
            if key in (acc.email.lower(), acc.unique_id) and project in ("-", acc.project):
                return acc
        return None

    def account(self, name: str) -> Account:
        """The account ``name`` designates; NOT_FOUND if there is none."""
        acc = self._find(name)
        if acc is None:
            raise not_found(UNKNOWN_ACCOUNT)
        return acc

    def _checked(self, name: str, permission: str) -> Account:
        """The account, once the caller is known to hold ``permission`` on it: IAM answers
        who may not before whether the account exists."""
        acc = self._find(name)
        resource = acc.resource if acc else service_account_resource(name)
        self.authorizer.check(permission, resource,
                              iam_denied(permission, "service account", name))
        if acc is None:
            raise not_found(UNKNOWN_ACCOUNT)
        return acc

    def _project(self, name: str) -> str:
        m = _PARENT.match(name)
        if not m or m["project"] == "-":
            raise invalid(
                f'Invalid project resource name "{name}": use projects/PROJECT_ID.'
            )
        return m["project"]

    def CreateServiceAccount(self, req: CreateServiceAccountRequest) -> ServiceAccount:
        project = self._project(req.name)
        permission = "iam.serviceAccounts.create"
        refusal = iam_denied(permission, "project", req.name)
        if project != self.config.project:  # a project the emulator does not have
            raise denied(refusal)
        self.authorizer.check(permission, req.name, refusal)
        account_id = req.account_id
        # Google's words (github.com/google/litmus/issues/107,
        # github.com/DataDog/stratus-red-team/issues/294).
        if not MIN_ACCOUNT_ID <= len(account_id) <= MAX_ACCOUNT_ID:
            raise invalid(f'The account ID "{account_id}" does not have a length between '
                          f"{MIN_ACCOUNT_ID} and {MAX_ACCOUNT_ID}.")
        if not _ACCOUNT_ID.match(account_id):
            raise invalid(f"{account_id} does not match {ACCOUNT_ID_PATTERN}.")
        email = f"{account_id.lower()}@{project}{_SA_DOMAIN}"
        exists = ApiError(grpc.StatusCode.ALREADY_EXISTS,
                          f"Service account {account_id} already exists within project "
                          f"projects/{project}.")
        if any(a.email.lower() == email for a in self.configured):
            raise exists
        given = req.service_account
        acc = Account(email, project, unique_id(email), given.display_name, given.description)
        if not self.store.add_service_account(email, acc.to_proto().SerializeToString()):
            raise exists
        return acc.to_proto()

    def GetServiceAccount(self, req: GetServiceAccountRequest) -> ServiceAccount:
        return self._checked(req.name, "iam.serviceAccounts.get").to_proto()

    def ListServiceAccounts(self, req: ListServiceAccountsRequest) -> ListServiceAccountsResponse:
        project = self._project(req.name)
        permission = "iam.serviceAccounts.list"
        self.authorizer.check(permission, req.name, iam_denied(permission, "project", req.name))
        mine = [a for a in self.accounts if a.project == project]
        if not mine and project != self.config.project:
            raise not_found(ENTITY_MISSING)
        if req.page_size < 0:
            raise invalid(f"page_size must not be negative; the maximum is {MAX_PAGE}.")
        size = min(req.page_size or DEFAULT_PAGE, MAX_PAGE)
        start = _offset(req.page_token, len(mine))
        page = mine[start:start + size]
        more = start + size < len(mine)
        return ListServiceAccountsResponse(
            accounts=[a.to_proto() for a in page],
            next_page_token=str(start + size) if more else "",
        )

    # -- policies ---------------------------------------------------------------------

    def GetIamPolicy(self, req: iam_policy_pb2.GetIamPolicyRequest) -> Policy:
        return self.policies.get(self._checked(req.resource,
                                               "iam.serviceAccounts.getIamPolicy").resource)

    def SetIamPolicy(self, req: iam_policy_pb2.SetIamPolicyRequest) -> Policy:
        acc = self._checked(req.resource, "iam.serviceAccounts.setIamPolicy")
        for binding in req.policy.bindings:
            if binding.role.startswith("roles/") and binding.role not in SERVICE_ACCOUNT_ROLES:
                raise invalid(f"Role {binding.role} is not supported for this resource.")
        return self.policies.set(acc.resource, req)

    def TestIamPermissions(
        self, req: iam_policy_pb2.TestIamPermissionsRequest
    ) -> iam_policy_pb2.TestIamPermissionsResponse:
        """The requested permissions the caller holds on the account (all of them when IAM
        is not enforced)."""
        acc = self.account(req.resource)
        self.policies.test(req, SERVICE_ACCOUNT_PERMISSIONS)  # refuses invalid permissions
        wanted = list(dict.fromkeys(req.permissions))
        if self.authorizer.enforce:
            member = self.authorizer.principal()
            wanted = [p for p in wanted if self.authorizer.holds(member, p, acc.resource)]
        return iam_policy_pb2.TestIamPermissionsResponse(permissions=wanted)


def _offset(token: str, total: int) -> int:
    if not token:
        return 0
    if not token.isdigit() or int(token) > total:
        raise invalid(
            "Invalid page_token: pass the next_page_token of the previous response unchanged."
        )
    return int(token)

"""IAM Admin v1 (google.iam.admin.v1.IAM): the service accounts the configuration lists, and
their IAM policies, as the official IAM client reads, writes and tests them.

Served: GetServiceAccount, ListServiceAccounts, GetIamPolicy, SetIamPolicy,
TestIamPermissions. Every other method of the service answers UNIMPLEMENTED.

A service account is named ``projects/PROJECT/serviceAccounts/ACCOUNT`` or, with the
project inferred from the account, ``projects/-/serviceAccounts/ACCOUNT``; ACCOUNT is the
email or the unique ID. An account the configuration does not list answers NOT_FOUND
``Unknown service account``, as Google does for both forms.

Where the emulator differs from Google, on purpose:

- The accounts are fixed by ``[[service_accounts]]``: they cannot be created or deleted
  over the API. Their unique ID and display name are derived from the email.
- These admin calls are not themselves checked against IAM (Google checks
  ``iam.serviceAccounts.get``, ``getIamPolicy``, ``setIamPolicy``): anyone may read and
  change the policies, so that tests and tools can set up the bindings they need. What
  the policies grant *is* enforced where it matters (Cloud Tasks' CreateTask checks
  ``iam.serviceAccounts.actAs`` when ``[iam] enforce = true``).
- Policies have no conditions; ``options.requested_policy_version`` is ignored.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from google.cloud import iam_admin_v1
from google.iam.v1 import iam_policy_pb2

from emulator.config import EmulatorConfig
from emulator.errors import invalid, not_found
from emulator.grpc_server import GrpcRouter
from emulator.iam import OWNER_ROLES, Authorizer, Policy, PolicyStore, service_account_resource

IAM_ADMIN_V1 = "google.iam.admin.v1.IAM"
ServiceAccount = iam_admin_v1.ServiceAccount.pb()
GetServiceAccountRequest = iam_admin_v1.GetServiceAccountRequest.pb()
ListServiceAccountsRequest = iam_admin_v1.ListServiceAccountsRequest.pb()
ListServiceAccountsResponse = iam_admin_v1.ListServiceAccountsResponse.pb()

# Google's answers (iam.googleapis.com), word for word.
UNKNOWN_ACCOUNT = "Unknown service account"
ENTITY_MISSING = "Requested entity was not found."
_NAME = re.compile(r"^projects/(?P<project>[^/]+)/serviceAccounts/(?P<account>[^/]+)$")
_PARENT = re.compile(r"^projects/(?P<project>[^/]+)$")
_SA_DOMAIN = ".iam.gserviceaccount.com"
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
            email=self.email, display_name=self.display_name,
            oauth2_client_id=self.unique_id,
        )


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
    def __init__(self, config: EmulatorConfig, authorizer: Authorizer) -> None:
        self.config = config
        self.authorizer = authorizer
        self.policies: PolicyStore = authorizer.policies
        self.accounts: list[Account] = []
        seen: set[str] = set()
        for sa in config.service_accounts:
            email = sa.email
            if email.lower() in seen:
                continue
            seen.add(email.lower())
            self.accounts.append(Account(email, account_project(email, config.project),
                                         unique_id(email), display_name(email)))

    def register(self, router: GrpcRouter) -> None:
        """Serve google.iam.admin.v1.IAM on the emulator's gRPC port."""
        router.add_all(IAM_ADMIN_V1, self, {
            "GetServiceAccount": GetServiceAccountRequest,
            "ListServiceAccounts": ListServiceAccountsRequest,
            "GetIamPolicy": iam_policy_pb2.GetIamPolicyRequest,
            "SetIamPolicy": iam_policy_pb2.SetIamPolicyRequest,
            "TestIamPermissions": iam_policy_pb2.TestIamPermissionsRequest,
        })

    # -- accounts ---------------------------------------------------------------------

    def account(self, name: str) -> Account:
        """The account ``name`` designates, in any of Google's forms."""
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
        raise not_found(UNKNOWN_ACCOUNT)

    def GetServiceAccount(self, req: GetServiceAccountRequest) -> ServiceAccount:
        return self.account(req.name).to_proto()

    def ListServiceAccounts(self, req: ListServiceAccountsRequest) -> ListServiceAccountsResponse:
        m = _PARENT.match(req.name)
        if not m or m["project"] == "-":
            raise invalid(
                f'Invalid project resource name "{req.name}": use projects/PROJECT_ID.'
            )
        project = m["project"]
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
        return self.policies.get(self.account(req.resource).resource)

    def SetIamPolicy(self, req: iam_policy_pb2.SetIamPolicyRequest) -> Policy:
        acc = self.account(req.resource)
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

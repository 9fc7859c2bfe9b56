"""IAM on the emulator's resources: policies (stored, versioned by etag), the roles they
grant, and the check of who may do what.

Resources are named as Google names them: ``projects/P`` (the project's own policy),
``projects/P/locations/L/queues/Q``, ``projects/P/locations/L/services/S``, and
``serviceAccounts/EMAIL`` for a service account (whatever project path a client used).
A member holds a permission on a resource when a binding on the resource, or on its
project, gives one of the member's identities (itself, ``allUsers``, and for any caller
``allAuthenticatedUsers``) a role that includes it.
"""

from __future__ import annotations

import hashlib

import grpc
from google.iam.v1 import iam_policy_pb2, policy_pb2

from emulator.errors import ApiError, denied, invalid
from emulator.grpc_server import caller
from emulator.store import Store

Policy = policy_pb2.Policy
# Google answers this etag for a resource that never had a policy set.
EMPTY_ETAG = b"ACAB"
_MEMBER_PREFIXES = ("user:", "serviceAccount:", "group:", "domain:", "principal://",
                    "principalSet://", "deleted:")
_SPECIAL_MEMBERS = {"allUsers", "allAuthenticatedUsers"}


_TASKS = ("cloudtasks.tasks.create", "cloudtasks.tasks.get", "cloudtasks.tasks.list",
          "cloudtasks.tasks.delete", "cloudtasks.tasks.run", "cloudtasks.tasks.fullView")
_QUEUES = tuple(f"cloudtasks.queues.{v}" for v in (
    "get", "list", "create", "update", "delete", "pause", "resume", "purge", "getIamPolicy",
    "setIamPolicy"))
_LOCATIONS = ("cloudtasks.locations.get", "cloudtasks.locations.list")
_RUN = tuple(f"run.services.{v}" for v in (
    "get", "list", "create", "update", "delete", "getIamPolicy", "setIamPolicy"))
_SA_TOKENS = ("iam.serviceAccounts.getOpenIdToken", "iam.serviceAccounts.getAccessToken",
              "iam.serviceAccounts.signBlob", "iam.serviceAccounts.signJwt",
              "iam.serviceAccounts.implicitDelegation")
_SA_ADMIN = tuple(f"iam.serviceAccounts.{v}" for v in (
    "create", "delete", "disable", "enable", "get", "getIamPolicy", "list", "setIamPolicy",
    "undelete", "update"))
# Nearly every predefined role also lets its holder see the project.
_PROJECT = ("resourcemanager.projects.get", "resourcemanager.projects.list")
# The predefined roles the emulator knows, with the permissions that matter here, as Google
# lists them: cloud.google.com/iam/docs/roles-permissions/cloudtasks for Cloud Tasks (the
# queue admin and the admin roles both hold getIamPolicy and setIamPolicy on queues; the
# enqueuer role holds tasks.fullView too), and the role definitions Google publishes
# through its roles API, as recorded in github.com/iann0036/iam-dataset gcp/roles/*.json,
# for the others (e.g. iam.serviceAccountAdmin.json, resourcemanager.projectIamAdmin.json,
# browser.json, viewer.json).
ROLES: dict[str, frozenset[str]] = {
    "roles/cloudtasks.enqueuer": frozenset({"cloudtasks.tasks.create",
                                            "cloudtasks.tasks.fullView", *_PROJECT}),
    "roles/cloudtasks.taskRunner": frozenset({"cloudtasks.tasks.run",
                                              "cloudtasks.tasks.fullView", *_PROJECT}),
    "roles/cloudtasks.viewer": frozenset({
        "cloudtasks.queues.get", "cloudtasks.queues.list", "cloudtasks.tasks.get",
        "cloudtasks.tasks.list", "cloudtasks.tasks.fullView", *_LOCATIONS, *_PROJECT}),
    "roles/cloudtasks.taskDeleter": frozenset({"cloudtasks.tasks.delete", *_PROJECT}),
    "roles/cloudtasks.queueAdmin": frozenset((*_QUEUES, *_LOCATIONS, *_PROJECT)),
    # Everything on queues and tasks but their IAM policies (same page as above).
    "roles/cloudtasks.editor": frozenset((
        *(q for q in _QUEUES if not q.endswith("IamPolicy")), *_TASKS, *_LOCATIONS,
        *_PROJECT)),
    "roles/cloudtasks.admin": frozenset((*_QUEUES, *_TASKS, *_LOCATIONS, *_PROJECT)),
    "roles/iam.serviceAccountUser": frozenset({"iam.serviceAccounts.actAs",
                                               "iam.serviceAccounts.get",
                                               "iam.serviceAccounts.list", *_PROJECT}),
    "roles/iam.serviceAccountTokenCreator": frozenset(_SA_TOKENS),
    # ID tokens only (gcp/roles/iam.serviceAccountOpenIdTokenCreator.json): what the probe of
    # `enqueuer diagnose --probe` needs on the caller account.
    "roles/iam.serviceAccountOpenIdTokenCreator": frozenset({
        "iam.serviceAccounts.getOpenIdToken"}),
    # Reads an account and who may use it (gcp/roles/iam.serviceAccountViewer.json; its
    # key-metadata permissions are left out: the emulator serves no keys).
    "roles/iam.serviceAccountViewer": frozenset({"iam.serviceAccounts.get",
                                                 "iam.serviceAccounts.list",
                                                 "iam.serviceAccounts.getIamPolicy",
                                                 *_PROJECT}),
    # What Google grants the Cloud Tasks service agent on the project: minting the tasks'
    # tokens (cloud.google.com/iam/docs/roles-permissions/cloudtasks).
    "roles/cloudtasks.serviceAgent": frozenset({"iam.serviceAccounts.getAccessToken",
                                                "iam.serviceAccounts.getOpenIdToken",
                                                "logging.logEntries.create"}),
    "roles/iam.serviceAccountAdmin": frozenset((*_SA_ADMIN, *_PROJECT)),
    "roles/resourcemanager.projectIamAdmin": frozenset({
        "resourcemanager.projects.get", "resourcemanager.projects.getIamPolicy",
        "resourcemanager.projects.setIamPolicy"}),
    "roles/browser": frozenset({"resourcemanager.projects.getIamPolicy", *_PROJECT}),
    # Only the part of Viewer that reaches what the emulator serves.
    "roles/viewer": frozenset({
        "cloudtasks.queues.get", "cloudtasks.queues.list", "cloudtasks.tasks.get",
        "cloudtasks.tasks.list", "cloudtasks.tasks.fullView", *_LOCATIONS,
        "iam.serviceAccounts.get", "iam.serviceAccounts.list",
        "iam.serviceAccounts.getIamPolicy", "resourcemanager.projects.getIamPolicy",
        "run.services.get", "run.services.list", "run.services.getIamPolicy",
        "logging.logEntries.list", *_PROJECT}),
    # Cloud Logging (cloud.google.com/iam/docs/roles-permissions/logging): who may read and
    # write log entries; privateLogViewer and admin also read private (Data Access) logs.
    "roles/logging.viewer": frozenset({"logging.logEntries.list", *_PROJECT}),
    "roles/logging.privateLogViewer": frozenset({
        "logging.logEntries.list", "logging.privateLogEntries.list", *_PROJECT}),
    "roles/logging.logWriter": frozenset({"logging.logEntries.create",
                                          "logging.logEntries.route"}),
    "roles/logging.admin": frozenset({
        "logging.logEntries.create", "logging.logEntries.list", "logging.logEntries.route",
        "logging.privateLogEntries.list", *_PROJECT}),
    "roles/run.invoker": frozenset({"run.routes.invoke"}),
    "roles/run.viewer": frozenset({"run.services.get", "run.services.list",
                                   "run.services.getIamPolicy", *_PROJECT}),
    "roles/run.admin": frozenset((*_RUN, "run.routes.invoke", *_PROJECT)),
}
# Every permission the emulator knows of (TestIamPermissions on a project accepts these).
KNOWN_PERMISSIONS = frozenset().union(*ROLES.values())
OWNER_ROLES = frozenset({"roles/owner", "roles/editor"})  # (nearly) every permission


def service_account_resource(name: str) -> str:
    """``projects/-/serviceAccounts/E``, ``projects/P/serviceAccounts/E`` or ``E``: one key."""
    # Google treats account emails without regard to case.
    return f"serviceAccounts/{name.rsplit('/', 1)[-1].lower()}"


def _etag(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()[:8]


def _grants(role: str, permission: str) -> bool:
    if role == "roles/owner":
        return True
    if role == "roles/editor":
        # Editor may change resources but not who may: it holds no setIamPolicy permission
        # (github.com/GoogleCloudPlatform/gcp-service-broker/issues/400, a maintainer
        # diffing `gcloud iam roles describe` of roles/editor and roles/owner).
        return not permission.endswith(".setIamPolicy")
    return permission in ROLES.get(role, ())


class PolicyStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, resource: str) -> Policy:
        body = self.store.get_policy(resource)
        if body is None:
            return Policy(version=1, etag=EMPTY_ETAG)
        policy = Policy.FromString(body)
        policy.etag = _etag(body)
        return policy

    def set(self, resource: str, request: iam_policy_pb2.SetIamPolicyRequest) -> Policy:
        policy = Policy()
        policy.CopyFrom(request.policy)
        current = self.get(resource)
        if policy.etag and policy.etag != current.etag:
            raise ApiError(
                grpc.StatusCode.ABORTED,
                "There were concurrent policy changes. Please retry the whole "
                "read-modify-write with exponential backoff.",
            )
        for binding in policy.bindings:
            if not binding.role.startswith("roles/"):
                raise invalid(
                    f'Role "{binding.role}" is not valid: a role is named "roles/NAME", '
                    'for example "roles/cloudtasks.enqueuer".'
                )
            for member in binding.members:
                if member not in _SPECIAL_MEMBERS and not member.startswith(_MEMBER_PREFIXES):
                    raise invalid(
                        f'Invalid member "{member}" in the policy: a member is "allUsers", '
                        '"allAuthenticatedUsers" or "TYPE:ID", for example '
                        '"serviceAccount:caller@PROJECT.iam.gserviceaccount.com".'
                    )
        policy.etag = b""
        policy.version = policy.version or 1
        body = policy.SerializeToString()
        self.store.set_policy(resource, body)
        policy.etag = _etag(body)
        return policy

    def replace(self, resource: str, bindings: dict[str, list[str]]) -> None:
        """Set a policy from configuration: role -> members."""
        policy = Policy(version=1)
        for role, members in bindings.items():
            policy.bindings.add(role=role, members=members)
        self.store.set_policy(resource, policy.SerializeToString())

    @staticmethod
    def test(
        request: iam_policy_pb2.TestIamPermissionsRequest, valid: frozenset[str]
    ) -> iam_policy_pb2.TestIamPermissionsResponse:
        for permission in request.permissions:
            if "*" in permission:
                raise invalid(
                    f"Permissions with wildcards (such as '*' or 'storage.*') are not allowed "
                    f"in TestIamPermissions: {permission}."
                )
            if permission not in valid:
                raise invalid(f"Permission {permission} is not valid for this resource.")
        return iam_policy_pb2.TestIamPermissionsResponse(permissions=list(request.permissions))


class Authorizer:
    """Who may do what, from the stored policies; with ``enforce`` off, everyone may."""

    def __init__(self, policies: PolicyStore, project: str, enforce: bool,
                 default_principal: str) -> None:
        self.policies = policies
        self.project = project
        self.enforce = enforce
        self.default_principal = default_principal

    def holds(self, member: str, permission: str, resource: str) -> bool:
        """Whether ``member`` has ``permission`` on ``resource`` (policy checked always)."""
        identities = {member, "allUsers"}
        if member not in ("allUsers", ""):
            identities.add("allAuthenticatedUsers")
        # The project's bindings reach what is in the project; a resource named under
        # another project (a log list of projects/OTHER) has only its own.
        parts = resource.split("/")
        foreign = parts[0] == "projects" and len(parts) > 1 and parts[1] != self.project
        for res in (resource,) if foreign else (resource, f"projects/{self.project}"):
            for binding in self.policies.get(res).bindings:
                if identities.isdisjoint(binding.members):
                    continue
                if _grants(binding.role, permission):
                    return True
        return False

    def principal(self) -> str:
        """Who makes the API call being served."""
        return caller(self.default_principal)

    def allows(self, member: str, permission: str, resource: str) -> bool:
        """Where Google checks IAM on an API call: only when enforcement is on."""
        return not self.enforce or self.holds(member, permission, resource)

    def require(self, member: str, permission: str, resource: str, shown: str) -> None:
        """Raise Cloud Tasks' PERMISSION_DENIED unless ``member`` may; ``shown`` is the
        resource as Google's message names it."""
        if not self.allows(member, permission, resource):
            raise denied(tasks_denied(permission, shown))

    def check(self, permission: str, resource: str, refusal: str) -> None:
        """Raise PERMISSION_DENIED with ``refusal`` (the serving API's own wording) unless the
        caller of the API call being served may."""
        if not self.allows(self.principal(), permission, resource):
            raise denied(refusal)


# How each API words a refusal, word for word.
def tasks_denied(permission: str, resource: str) -> str:
    """Cloud Tasks (recorded answers: github.com/googleapis/repo-automation-bots/issues/5598,
    github.com/TEAMMATES/teammates/issues/10974)."""
    return (f'The principal (user or service account) lacks IAM permission "{permission}" '
            f'for the resource "{resource}" (or the resource may not exist).')


def iam_denied(permission: str, kind: str, resource: str) -> str:
    """IAM Admin (iam.googleapis.com): ``kind`` is "service account" or "project", as in
    "Permission iam.serviceAccounts.setIamPolicy is required to perform this operation on
    service account projects/P/serviceAccounts/E." (github.com/opstrace/opstrace/issues/142,
    GoogleCloudPlatform/deploymentmanager-samples/issues/94) and "... on project
    projects/P." (github.com/hashicorp/vault-plugin-secrets-gcp/issues/12)."""
    return f"Permission {permission} is required to perform this operation on {kind} {resource}."


def resource_manager_denied(permission: str, name: str) -> str:
    """Resource Manager v3 over gRPC: "Permission 'resourcemanager.projects.setIamPolicy'
    denied on resource '//cloudresourcemanager.googleapis.com/projects/P' (or it may not
    exist)." (a recorded answer to ResourceManager::V3::Projects::Client#set_iam_policy in
    github.com/shubhangi-google/google-cloud-ruby google-cloud-storage/samples/
    storage_create_bucket_with_ip_filter.rb; the same form for resourcemanager.projects.get
    in github.com/CrowdStrike/falcon-integration-gateway/pull/98)."""
    return (f"Permission '{permission}' denied on resource "
            f"'//cloudresourcemanager.googleapis.com/{name}' (or it may not exist).")

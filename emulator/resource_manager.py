"""Resource Manager v3 (``google.cloud.resourcemanager.v3.Projects``): the emulator's project
and its IAM policy, as the official ``resourcemanager_v3.ProjectsClient`` reads, writes and
tests them.

Served: GetProject, GetIamPolicy, SetIamPolicy, TestIamPermissions. Every other method of
the service answers UNIMPLEMENTED.

The project is the configuration's ``project``, named ``projects/PROJECT_ID`` or, by its
number, ``projects/PROJECT_NUMBER``: the configuration's ``project_number``, or a stable
12-digit number derived from the ID, which GetProject answers in ``name`` as Google does.
The number names the project's service agents (the Cloud Tasks service agent is
``service-PROJECT_NUMBER@gcp-sa-cloudtasks.iam.gserviceaccount.com``), which is why a
configuration may fix it. Its policy is the one ``[iam] bindings`` fills
at start and that grants project-wide roles everywhere in the emulator, so a binding set
here takes effect at once on Cloud Tasks, Cloud Run and IAM.

IAM, when ``[iam] enforce = true``: GetProject needs ``resourcemanager.projects.get``,
GetIamPolicy ``resourcemanager.projects.getIamPolicy`` and SetIamPolicy
``resourcemanager.projects.setIamPolicy``; a refusal names the permission in Resource
Manager's words (``iam.resource_manager_denied``). TestIamPermissions needs nothing and
answers the permissions the caller holds (all that are valid when IAM is not enforced).
Any other project answers PERMISSION_DENIED whoever asks, as Google answers for a project
that does not exist or that the caller cannot see ("Permission is denied if the policy or
the resource do not exist": the v3 reference of projects.getIamPolicy).

A project's policy follows Google's rules for one: ``allUsers`` and
``allAuthenticatedUsers`` cannot be members (the v3 reference of projects.setIamPolicy);
Google refuses them with INVALID_ARGUMENT "Request contains an invalid argument."
(github.com/hashicorp/terraform-provider-google/pull/859).

Where the emulator differs from Google, on purpose: the project has no parent
(organization or folder), no labels and no lifecycle (it is always ACTIVE); the owner-role
invitation rules of SetIamPolicy are not applied; conditions are stored but not evaluated,
and ``options.requested_policy_version`` is ignored.
"""

from __future__ import annotations

import hashlib
import re

from google.cloud import resourcemanager_v3
from google.iam.v1 import iam_policy_pb2

from emulator.clock import now_us, to_timestamp
from emulator.config import EmulatorConfig
from emulator.errors import denied, invalid
from emulator.grpc_server import GrpcRouter
from emulator.iam import (
    KNOWN_PERMISSIONS,
    Authorizer,
    Policy,
    PolicyStore,
    resource_manager_denied,
)
from emulator.store import Store

RESOURCE_MANAGER_V3 = "google.cloud.resourcemanager.v3.Projects"
Project = resourcemanager_v3.Project.pb()
GetProjectRequest = resourcemanager_v3.GetProjectRequest.pb()
ACTIVE = resourcemanager_v3.Project.State.ACTIVE.value
_NAME = re.compile(r"^projects/(?P<id>[^/]+)$")
_PUBLIC = ("allUsers", "allAuthenticatedUsers")
# Google's answer to a policy it will not take on a project, word for word.
INVALID_ARGUMENT = "Request contains an invalid argument."
# What TestIamPermissions accepts on a project: what the emulator's roles grant there, less
# what only an organization or folder can be tested for (creating and listing projects:
# github.com/googleapis/google-cloud-java/issues/722), plus the project's own methods.
PROJECT_PERMISSIONS = (KNOWN_PERMISSIONS - {"resourcemanager.projects.create",
                                            "resourcemanager.projects.list"}) | frozenset(
    f"resourcemanager.projects.{v}" for v in (
        "get", "getIamPolicy", "setIamPolicy", "update", "delete", "undelete", "move"))


def project_number(project_id: str) -> str:
    """A stable 12-digit project number, shaped like Google's, derived from the ID."""
    digest = int.from_bytes(hashlib.sha256(project_id.encode()).digest()[:8], "big")
    return str(10**11 + digest % (9 * 10**11))


class ResourceManager:
    def __init__(self, config: EmulatorConfig, authorizer: Authorizer, store: Store) -> None:
        self.project_id = config.project
        self.number = config.project_number or project_number(config.project)
        self.authorizer = authorizer
        self.policies: PolicyStore = authorizer.policies
        self.resource = f"projects/{config.project}"  # the project's key in the policy store
        # When the emulator first served the project: its create_time, kept with the state.
        key = "resource_manager:create_us"
        seen = store.get_meta(key)
        if seen is None:
            seen = str(now_us()).encode()
            store.set_meta(key, seen)
        self.created_us = int(seen)

    def register(self, router: GrpcRouter) -> None:
        """Serve google.cloud.resourcemanager.v3.Projects on the emulator's gRPC port."""
        router.add_all(RESOURCE_MANAGER_V3, self, {
            "GetProject": GetProjectRequest,
            "GetIamPolicy": iam_policy_pb2.GetIamPolicyRequest,
            "SetIamPolicy": iam_policy_pb2.SetIamPolicyRequest,
            "TestIamPermissions": iam_policy_pb2.TestIamPermissionsRequest,
        })

    def _is_ours(self, name: str) -> bool:
        m = _NAME.match(name)
        if not m:
            raise invalid(
                f'Invalid resource name "{name}": a project is named projects/PROJECT_ID or '
                "projects/PROJECT_NUMBER, for example "
                f'"projects/{self.project_id}".'
            )
        return m["id"] in (self.project_id, self.number)

    def _require(self, permission: str, name: str) -> None:
        """Unknown projects are refused like projects the caller may not see: Google says
        nothing about whether they exist."""
        if not self._is_ours(name):
            raise denied(resource_manager_denied(permission, name))
        self.authorizer.check(permission, self.resource, resource_manager_denied(permission, name))

    def GetProject(self, req: GetProjectRequest) -> Project:
        self._require("resourcemanager.projects.get", req.name)
        project = Project(name=f"projects/{self.number}", project_id=self.project_id,
                          state=ACTIVE, display_name=self.project_id)
        project.create_time.CopyFrom(to_timestamp(self.created_us))
        project.update_time.CopyFrom(to_timestamp(self.created_us))
        return project

    def GetIamPolicy(self, req: iam_policy_pb2.GetIamPolicyRequest) -> Policy:
        self._require("resourcemanager.projects.getIamPolicy", req.resource)
        return self.policies.get(self.resource)

    def SetIamPolicy(self, req: iam_policy_pb2.SetIamPolicyRequest) -> Policy:
        self._require("resourcemanager.projects.setIamPolicy", req.resource)
        if any(m in _PUBLIC for b in req.policy.bindings for m in b.members):
            raise invalid(INVALID_ARGUMENT)
        return self.policies.set(self.resource, req)

    def TestIamPermissions(
        self, req: iam_policy_pb2.TestIamPermissionsRequest
    ) -> iam_policy_pb2.TestIamPermissionsResponse:
        """The requested permissions the caller holds on the project (every valid one when
        IAM is not enforced). A project that is not the emulator's holds none for anyone:
        an empty answer, as Google's TestIamPermissions gives for a resource it cannot show."""
        ours = self._is_ours(req.resource)
        self.policies.test(req, PROJECT_PERMISSIONS)  # refuses invalid permissions
        if not ours:
            return iam_policy_pb2.TestIamPermissionsResponse()
        wanted = list(dict.fromkeys(req.permissions))
        if self.authorizer.enforce:
            member = self.authorizer.principal()
            wanted = [p for p in wanted if self.authorizer.holds(member, p, self.resource)]
        return iam_policy_pb2.TestIamPermissionsResponse(permissions=wanted)

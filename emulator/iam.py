"""IAM policies on the emulator's resources: stored, versioned by etag, testable.

Enforcement (who may do what) arrives with the local Cloud Run and IAM; until then the
caller is treated as the project's owner, so TestIamPermissions grants every valid
permission it is asked about.
"""

from __future__ import annotations

import hashlib

import grpc
from google.iam.v1 import iam_policy_pb2, policy_pb2

from emulator.errors import ApiError, invalid
from emulator.store import Store

Policy = policy_pb2.Policy
# Google answers this etag for a resource that never had a policy set.
EMPTY_ETAG = b"ACAB"
_MEMBER_PREFIXES = ("user:", "serviceAccount:", "group:", "domain:", "principal://",
                    "principalSet://", "deleted:")
_SPECIAL_MEMBERS = {"allUsers", "allAuthenticatedUsers"}


def _etag(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()[:8]


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

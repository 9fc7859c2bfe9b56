"""IAM policies as Enqueuer reads and changes them: who holds a permission through which role,
and adding members to a policy without touching anything else in it.

Google's APIs answer ``TestIamPermissions`` only for the caller; to judge another account
(the enqueuer's, while a platform engineer runs ``enqueuer setup``) the policies are read
instead, with the roles below. The tables hold the predefined roles that grant each
permission Enqueuer relies on (https://cloud.google.com/iam/docs/roles-permissions/cloudtasks,
…/run, …/iam); custom roles are not expanded.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.iam.v1 import iam_policy_pb2, policy_pb2

# Basic roles hold every permission here.
_BASIC = frozenset({"roles/owner", "roles/editor"})
GRANTED_BY: dict[str, frozenset[str]] = {
    "cloudtasks.tasks.create": _BASIC | {"roles/cloudtasks.enqueuer", "roles/cloudtasks.editor",
                                         "roles/cloudtasks.admin"},
    "iam.serviceAccounts.actAs": _BASIC | {"roles/iam.serviceAccountUser"},
    "run.routes.invoke": _BASIC | {"roles/run.invoker", "roles/run.servicesInvoker",
                                   "roles/run.admin"},
}
# Policies read with conditions kept: writing back a version-1 read of a conditional
# policy is refused by Google.
POLICY_VERSION = 3


def policy_request(resource: str) -> iam_policy_pb2.GetIamPolicyRequest:
    """GetIamPolicy for ``resource``, asking for conditions to be kept (version 3)."""
    return iam_policy_pb2.GetIamPolicyRequest(
        resource=resource, options={"requested_policy_version": POLICY_VERSION})


def member(email: str) -> str:
    """The IAM member of an account email: ``serviceAccount:`` for service accounts."""
    if ":" in email:
        return email
    kind = "serviceAccount" if email.lower().endswith("gserviceaccount.com") else "user"
    return f"{kind}:{email}"


def roles_of(policy: policy_pb2.Policy, who: str) -> set[str]:
    """The roles ``who`` (a member) holds in the policy, without conditions."""
    who = who.lower()
    return {b.role for b in policy.bindings
            if not b.HasField("condition") and who in {m.lower() for m in b.members}}


def holds(policy: policy_pb2.Policy, who: str, permission: str) -> str | None:
    """The role through which ``who`` holds ``permission`` in the policy, if any."""
    granting = GRANTED_BY[permission]
    found = sorted(roles_of(policy, who) & granting)
    return found[0] if found else None


def holders(policy: policy_pb2.Policy, permission: str) -> dict[str, str]:
    """Every member (lower-cased) holding ``permission``, with the role that grants it."""
    granting = GRANTED_BY[permission]
    return {m.lower(): b.role for b in policy.bindings
            if b.role in granting and not b.HasField("condition") for m in b.members}


def add_members(policy: policy_pb2.Policy, role: str, members: Iterable[str]) -> list[str]:
    """Add ``members`` to the unconditional binding of ``role``; the members added.

    Nothing else in the policy changes: other bindings, conditions and the etag stay, so
    that writing it back is a read-modify-write that Google refuses if the policy changed.
    """
    binding = next((b for b in policy.bindings
                    if b.role == role and not b.HasField("condition")), None)
    if binding is None:
        binding = policy.bindings.add(role=role)
    present = {m.lower() for m in binding.members}
    added = []
    for m in members:
        if m.lower() not in present:
            binding.members.append(m)
            present.add(m.lower())
            added.append(m)
    if not binding.members:
        policy.bindings.remove(binding)
    return added

"""Who acts in tests that are not about access: the local stack's admin, who may do all."""

from __future__ import annotations

from enqueuer_core.access import AccessPolicy, Acting, local_policy
from enqueuer_core.config import LOCAL_ADMIN


def as_admin(policy: AccessPolicy | None = None) -> Acting:
    return Acting(LOCAL_ADMIN, policy or local_policy(), "cli")

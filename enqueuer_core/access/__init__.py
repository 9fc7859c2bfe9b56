"""Who may act, and the record of what they did: roles, the one decision, audit lines."""

from enqueuer_core.access.acting import Acting, Via
from enqueuer_core.access.policy import (
    ALL_USERS,
    AccessPolicy,
    Action,
    Role,
    check_member,
    load_access,
    local_policy,
    member_for_email,
)

__all__ = ["ALL_USERS", "AccessPolicy", "Acting", "Action", "Role", "Via", "check_member",
           "load_access", "local_policy", "member_for_email"]

"""Who is acting, through which door: what every change in ``enqueuer_core`` takes.

The API makes an ``Acting`` from the caller's verified token, the dashboard from its logged-in
user, the CLI from the identity it calls Google as. The library's changes run inside
``acting.doing(...)``, which asks the access config (``AccessPolicy.decide``) and leaves one
audit line whatever happens.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from enqueuer_core.access import audit
from enqueuer_core.access.policy import AccessPolicy, Action, Role
from enqueuer_core.errors import EnqueuerError, Forbidden

Via = Literal["api", "dashboard", "cli"]


@dataclass(frozen=True)
class Acting:
    principal: str  # an IAM member: user:..., serviceAccount:..., or allUsers (no login)
    policy: AccessPolicy
    via: Via
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    trace: str | None = None  # Cloud Logging's trace of the request, when one came with it

    @property
    def role(self) -> Role | None:
        return self.policy.role_of(self.principal)

    def check(self, action: Action, worker: str | None = None) -> Role | None:
        """``Forbidden`` unless the principal may do ``action``; for reads (no audit line)."""
        return self.policy.decide(self.principal, action, worker)

    def why_not(self, action: Action, worker: str | None = None) -> str | None:
        """Why the principal may not do ``action`` (for a disabled button), or None."""
        try:
            self.check(action, worker)
        except Forbidden as e:
            return e.message
        return None

    @contextmanager
    def doing(self, action: Action, target: str, worker: str | None = None,
              **details: Any) -> Iterator[dict[str, Any]]:
        """Decide, run the block, and write the audit line: ``ok``, ``refused`` or ``failed``.

        The block may add details (the task it created) to the dict it is given.
        """
        details = {"worker": worker, **details}

        def line(outcome: str, code: str | None = None) -> None:
            audit.write(audit.audit_line(
                principal=self.principal, role=role.label if role else None, via=self.via,
                action=action.value, target=target, outcome=outcome,
                request_id=self.request_id, error_code=code, trace=self.trace, **details),
                sys.stderr if self.via == "cli" else sys.stdout)

        # The decision names the role that allowed it; a refusal looks it up for its line.
        try:
            role = self.policy.decide(self.principal, action, worker)
        except Forbidden as e:
            role = self.role
            line("refused", e.code)
            raise
        try:
            yield details
        except EnqueuerError as e:
            line("failed", e.code)
            raise
        except BaseException:
            line("failed", "internal")
            raise
        line("ok")

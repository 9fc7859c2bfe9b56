"""Which checks confirm a cause: what a link to Diagnostics (``?check=...``) points at.

The Queues page explains a failed attempt (``enqueuer_core.explain``) with a cause (its
``Explanation.check``) and links to Diagnostics with it; Diagnostics then highlights the
checks that would confirm or rule out that cause. A check's own id links to that check.
"""

from __future__ import annotations

from enqueuer_core.diagnose.checks import CHECKS

# A cause (explain.py's ``check``) and the checks that confirm it, in display order. A
# queue-level http_target (queue_target) can override the URL, the audience and the
# account of every task, so it is a suspect for each of the door's refusals and a 404.
CAUSES: dict[str, tuple[str, ...]] = {
    "audience": ("audience", "audience_accepted", "queue_target"),
    "url": ("url_scheme", "service", "queue_target"),
    "deadline": ("deadline", "deadline_vs_timeout"),
    "invoker": ("invoker", "queue_target"),
    "capacity": ("capacity",),  # a 429: more requests in flight than the service takes
    "queue_target": ("queue_target",),
}


def known_checks() -> list[str]:
    """Every check id, in display order."""
    return [c for c, _ in CHECKS]


def focused_checks(param: str | None) -> tuple[str, ...]:
    """The checks a link's ``check`` names: a cause's, or one check; () when none is known.

    Only checks that exist are named (a cause may list one a deployment does not run).
    """
    if not param:
        return ()
    known = set(known_checks())
    wanted = CAUSES.get(param, (param,))
    return tuple(c for c in wanted if c in known)

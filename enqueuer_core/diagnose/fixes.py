"""The Fix of a failing check: the part of ``enqueuer setup``'s plan that repairs it.

A check that fails because Google lacks what this config needs (a binding, a queue, an
account) is repaired by setup's own changes, so the Fix is never new logic: ``fix_for`` makes
setup's plan for the check's worker and keeps only the changes that repair that check;
``apply_fix`` applies them through ``setup.apply_plan`` (admins only, one audit line naming
the check and the worker). What setup cannot change (an audience, a URL, a deadline, a
paused queue, a service to deploy) has no Fix: its result keeps its command.

| check | the changes kept |
|---|---|
| ``invoker``, ``probe`` answered 403, ``queue_failures`` of an invoker problem | the worker's service's ``roles/run.invoker`` for ``CALLER_SA`` |
| ``probe`` that could not mint | ``DASHBOARD_SA``'s ``roles/iam.serviceAccountOpenIdTokenCreator`` on ``CALLER_SA`` |
| ``act_as`` | the caller account (when missing) and the act-as grants on it |
| ``create_tasks`` | the enqueuer's grants on the worker's queue |
| ``queue`` | the queue's creation (a paused queue is not setup's to resume) |
| ``service_agent`` | the Cloud Tasks service agent's ``roles/iam.serviceAccountTokenCreator`` on ``CALLER_SA`` |
"""  # noqa: E501

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from enqueuer_core.access import Acting
from enqueuer_core.config import Settings
from enqueuer_core.diagnose.result import CheckResult
from enqueuer_core.setup import SetupClients, SetupPlan, apply_plan, make_plan
from enqueuer_core.setup.desired import (
    ACT_AS_ROLE,
    INVOKER_ROLE,
    OPENID_TOKEN_ROLE,
    TOKEN_CREATOR_ROLE,
    AccountWant,
    Grant,
    QueueWant,
)
from enqueuer_core.setup.plan import Change

Picks = Callable[[Settings, Change], bool]
# The probe's words for Cloud Run's refusal of the caller account (enqueuer_core.probe).
_DOOR_403 = re.compile(r"\banswered 403\b")
# The statuses apply_plan acts on (``unknown``: the plan could not read it; apply tries).
_TO_APPLY = ("create", "update", "add", "unknown")


def _grant(scope: str, *roles: str) -> Picks:
    def picks(s: Settings, ch: Change) -> bool:
        return (isinstance(ch.item, Grant) and ch.item.scope == scope
                and ch.item.role in roles)
    return picks


def _act_as(s: Settings, ch: Change) -> bool:
    if isinstance(ch.item, AccountWant):
        return ch.item.email.lower() == (s.caller_sa or "").lower()
    return _grant("service_account", ACT_AS_ROLE)(s, ch)


def _service_agent(s: Settings, ch: Change) -> bool:
    return (isinstance(ch.item, Grant) and ch.item.role == TOKEN_CREATOR_ROLE
            and ch.item.member.lower().endswith("@gcp-sa-cloudtasks.iam.gserviceaccount.com"))


def _queue(s: Settings, ch: Change) -> bool:
    # Creating a missing queue only: setup's update of its rate limits repairs nothing here.
    return isinstance(ch.item, QueueWant) and ch.status == "create"


_invoker = _grant("run_service", INVOKER_ROLE)
_BY_CHECK: dict[str, Picks] = {
    "invoker": _invoker,
    "act_as": _act_as,
    "create_tasks": _grant("queue", "roles/cloudtasks.enqueuer", "roles/cloudtasks.editor"),
    "queue": _queue,
    "service_agent": _service_agent,
}
FIXABLE: frozenset[str] = frozenset({*_BY_CHECK, "probe", "queue_failures"})


def _picks(result: CheckResult) -> Picks | None:
    """What repairs this result, read from its evidence where the check has several causes."""
    if result.check in _BY_CHECK:
        return _BY_CHECK[result.check]
    evidence = result.evidence
    if result.check == "probe":
        if _DOOR_403.search(evidence):
            return _invoker  # the door refused the caller account: its invoker binding
        if "may not mint ID tokens" in evidence or "getOpenIdToken" in evidence:
            return _grant("service_account", OPENID_TOKEN_ROLE)  # could not mint as it
    if result.check == "queue_failures" and "invoker problem" in evidence:
        return _invoker
    return None


@dataclass(frozen=True)
class FixPlan:
    """A failing check and the changes of setup's plan that repair it (each with its
    ``what`` and ``gcloud``), to show before applying."""

    result: CheckResult
    plan: SetupPlan


def fix_for(settings: Settings, result: CheckResult,
            clients: SetupClients | None = None) -> FixPlan | None:
    """The Fix of ``result``, or None when setup has nothing that repairs it (a check it
    cannot repair, one that passes, or a plan that already holds what the check needs).

    Reads Google as ``clients`` (default: ``SetupClients.build``, the platform engineer; on
    the emulator its ``EMULATOR_OPERATOR``); changes nothing.
    """
    picks = _picks(result)
    if result.status == "pass" or picks is None:
        return None
    c = clients or SetupClients.build(settings)
    plan = make_plan(settings, c, [result.worker])
    changes = [ch for ch in plan.changes if ch.status in _TO_APPLY
               and isinstance(ch.item, AccountWant | QueueWant | Grant) and picks(settings, ch)]
    if not changes:
        return None
    return FixPlan(result, SetupPlan(plan.principal, plan.project, [result.worker], changes))


def apply_fix(fix: FixPlan, clients: SetupClients, acting: Acting) -> list[Change]:
    """Apply the Fix through ``setup.apply_plan``: only an admin may (``Forbidden`` before any
    change), and its audit line says which check of which worker it fixed. The changes
    applied; ``SetupRefused`` names the permission Google refused."""
    return apply_plan(fix.plan, clients, acting, fixing=(fix.result.check, fix.result.worker))

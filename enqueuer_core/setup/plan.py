"""The plan: the desired state against what Google holds now, item by item.

Each item is ``kept`` (already so), ``create`` (an account or a queue), ``update`` (a queue's
configuration differs from the workers file), ``add`` (a binding), ``missing`` (what setup
cannot make: a worker's Cloud Run service) or ``unknown`` (Google refused to show it: the
detail names the permission; or the Cloud Tasks service agent's grant while the project's
number, its name, is unreadable: setup cannot make that one). The reads run concurrently;
nothing here changes anything.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from google.cloud import tasks_v2

from enqueuer_core import clients, cloud_run, iam_policies
from enqueuer_core.calls import Got, call
from enqueuer_core.config import Settings
from enqueuer_core.setup.desired import (
    TOKEN_CREATOR_ROLE,
    AccountWant,
    AgentUnknown,
    DesiredState,
    Grant,
    QueueWant,
    ServiceMissing,
    desired_state,
)
from enqueuer_core.workers import load_registry

Status = Literal["kept", "create", "update", "add", "missing", "unknown"]
Kind = Literal["account", "queue", "binding", "service"]
CALL_TIMEOUT_S = 15.0
# `enqueuer setup` exit codes besides 0 (nothing to change).
CHANGES = 10
T = TypeVar("T")


@dataclass
class SetupClients:
    """The Google clients setup reads and writes with, all acting as ``principal``."""

    tasks: Any
    run: Any
    iam: Any
    projects: Any
    principal: str

    @classmethod
    def build(cls, settings: Settings) -> SetupClients:
        """As the platform engineer: their Application Default Credentials on Google, the
        ``EMULATOR_OPERATOR`` member on the emulator (the dev stack's operator)."""
        acting = settings.emulator_operator if settings.on_emulator else None
        return cls(clients.tasks_client(settings, acting), clients.run_client(settings, acting),
                   clients.iam_client(settings, acting),
                   clients.projects_client(settings, acting),
                   clients.acting_principal(settings, acting))


@dataclass(frozen=True)
class Change:
    status: Status
    kind: Kind
    what: str
    gcloud: str
    detail: str = ""
    item: AccountWant | QueueWant | Grant | ServiceMissing | AgentUnknown | None = field(
        default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "kind": self.kind, "what": self.what,
                               "gcloud": self.gcloud, "detail": self.detail}
        if isinstance(self.item, Grant):
            out |= {"resource": self.item.resource, "role": self.item.role,
                    "member": self.item.member}
        elif isinstance(self.item, QueueWant):
            out |= {"resource": self.item.path}
        elif isinstance(self.item, AccountWant):
            out |= {"resource": self.item.email}
        elif isinstance(self.item, AgentUnknown):
            out |= {"resource": self.item.resource, "role": TOKEN_CREATOR_ROLE}
        return out


@dataclass
class SetupPlan:
    principal: str
    project: str
    workers: list[str]
    changes: list[Change]

    def by_status(self, *statuses: Status) -> list[Change]:
        return [c for c in self.changes if c.status in statuses]

    @property
    def to_change(self) -> list[Change]:
        """What differs from the desired state (``missing`` and ``unknown`` included)."""
        return [c for c in self.changes if c.status != "kept"]

    @property
    def exit_code(self) -> int:
        """0 when Google holds everything already, ``CHANGES`` (10) otherwise."""
        return CHANGES if self.to_change else 0

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.changes:
            out[c.status] = out.get(c.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"principal": self.principal, "project": self.project, "workers": self.workers,
                "to_change": len(self.to_change), "counts": self.counts(),
                "changes": [c.to_dict() for c in self.changes]}


def policy_client(c: SetupClients, grant: Grant) -> Any:
    """The client whose ``get/set_iam_policy`` own the grant's resource."""
    return {"queue": c.tasks, "service_account": c.iam, "run_service": c.run,
            "project": c.projects}[grant.scope]


def make_plan(settings: Settings, c: SetupClients,
              workers: list[str] | None = None) -> SetupPlan:
    """Read Google and compare it with what this config needs (``workers``: only those)."""
    registry = load_registry(settings)
    for name in workers or []:
        registry.get(name)  # UnknownService, naming the valid ones
    location = f"projects/{settings.project_id}/locations/{settings.tasks_region}"
    with ThreadPoolExecutor(max_workers=16, thread_name_prefix="setup") as pool:
        listing = pool.submit(call, "the Cloud Run Admin API",
                              lambda: cloud_run.list_services(c.run, location, CALL_TIMEOUT_S))
        numbered = pool.submit(project_number, c.projects, settings.project_id or "")
        listed, number = listing.result(), numbered.result()
        found: dict[str, str | None] = {}
        for spec in registry:
            svc = cloud_run.service_for(listed.value or [], spec.url)
            found[spec.name] = svc.name if svc is not None else None
        state = desired_state(settings, registry, found, workers, number.value)
        accounts = {a: pool.submit(call, "the IAM API", lambda a=a: c.iam.get_service_account(
            name=f"projects/-/serviceAccounts/{a.email}", retry=None,
            timeout=CALL_TIMEOUT_S)) for a in state.accounts}
        queues = {q: pool.submit(call, "Cloud Tasks", lambda q=q: c.tasks.get_queue(
            name=q.path, retry=None, timeout=CALL_TIMEOUT_S)) for q in state.queues}
        resources = {g.resource: g for g in state.grants}
        policies = {r: pool.submit(call, g.api, lambda g=g: policy_client(c, g).get_iam_policy(
            request=iam_policies.policy_request(g.resource), retry=None, timeout=CALL_TIMEOUT_S))
            for r, g in resources.items()}
        changes = _compare(state, listed,
                           {a: f.result() for a, f in accounts.items()},
                           {q: f.result() for q, f in queues.items()},
                           {r: f.result() for r, f in policies.items()}, number)
    return SetupPlan(c.principal, settings.project_id or "", state.workers, changes)


def project_number(projects: Any, project_id: str, timeout: float = CALL_TIMEOUT_S) -> Got:
    """The project's number (``value``, a string of digits), from Resource Manager's
    GetProject (``projects/NUMBER``); it needs ``resourcemanager.projects.get``."""
    def get() -> str:
        return projects.get_project(name=f"projects/{project_id}", retry=None,
                                    timeout=timeout).name.rsplit("/", 1)[-1]
    return call("the Resource Manager API", get)


def _compare(state: DesiredState, listed: Got, accounts: dict[AccountWant, Got],
             queues: dict[QueueWant, Got], policies: dict[str, Got],
             number: Got) -> list[Change]:
    out: list[Change] = []
    for a, got in accounts.items():
        if got.error:
            out.append(Change("unknown", "account", a.what, a.gcloud(), got.error, a))
        else:
            out.append(Change("create" if got.missing is not None else "kept", "account", a.what,
                              a.gcloud(), "", a))
    for q, got in queues.items():
        if got.error:
            out.append(Change("unknown", "queue", q.what, q.gcloud(), got.error, q))
        elif got.missing is not None:
            out.append(Change("create", "queue", q.what, q.gcloud(), "", q))
        else:
            differs = queue_differences(q, got.value)
            if differs:
                detail = "; ".join(f"{k}: {old} -> {new}" for k, (old, new) in differs.items())
                out.append(Change("update", "queue", q.what,
                                  q.gcloud("update", set(differs)), detail, q))
            else:
                out.append(Change("kept", "queue", q.what, q.gcloud(), "", q))
    for g in state.grants:
        got = policies[g.resource]
        if got.error:
            out.append(Change("unknown", "binding", g.what, g.gcloud(), got.error, g))
        elif got.missing is not None or g.role not in iam_policies.roles_of(got.value, g.member):
            # A resource still to create has no policy yet: its bindings are to add.
            out.append(Change("add", "binding", g.what, g.gcloud(), "", g))
        else:
            out.append(Change("kept", "binding", g.what, g.gcloud(), "", g))
    if state.agent_unknown is not None:
        agent = state.agent_unknown
        why = number.error or number.missing or "the project has no number"
        out.append(Change("unknown", "binding", agent.what, agent.gcloud(),
                          f"the project's number, which names the service agent, could not be "
                          f"read: {why}", agent))
    for m in state.missing_services:
        if listed.error:
            out.append(Change("unknown", "service", f"the Cloud Run service of {m.worker}",
                              m.gcloud(), listed.error, m))
        else:
            out.append(Change("missing", "service", m.what, m.gcloud(), "", m))
    return out


def _seconds(d: Any) -> float:
    return d.seconds + d.nanos / 1e9


def queue_differences(want: QueueWant, queue: tasks_v2.Queue) -> dict[str, tuple[Any, Any]]:
    """The configured fields whose value on Google differs: path -> (now, wanted)."""
    pb = tasks_v2.Queue.pb(queue)
    now = {
        "rate_limits.max_dispatches_per_second": pb.rate_limits.max_dispatches_per_second,
        "rate_limits.max_concurrent_dispatches": pb.rate_limits.max_concurrent_dispatches,
        "retry_config.max_attempts": pb.retry_config.max_attempts,
        "retry_config.min_backoff_s": _seconds(pb.retry_config.min_backoff),
        "retry_config.max_backoff_s": _seconds(pb.retry_config.max_backoff),
        "retry_config.max_doublings": pb.retry_config.max_doublings,
        "retry_config.max_retry_duration_s": _seconds(pb.retry_config.max_retry_duration),
    }
    return {k: (now[k], v) for k, v in want.settings().items()
            if not math.isclose(float(now[k]), float(v), rel_tol=1e-9, abs_tol=1e-6)}

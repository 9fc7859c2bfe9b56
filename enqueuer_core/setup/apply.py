"""Making Google match the plan, through its APIs, as the platform engineer running it.

In order: the accounts, the queues, then each resource's policy once (all of its missing
bindings together). A policy change is a read-modify-write carrying the policy's etag, so a
concurrent change makes Google answer ABORTED; the whole read-modify-write is then redone
(with backoff), and the other change is kept. Bindings are only ever added: nothing that
someone else granted is removed. A refusal stops at once with what was done so far.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core import retry as gretry
from google.cloud import tasks_v2
from google.protobuf import duration_pb2, field_mask_pb2

from enqueuer_core import iam_policies
from enqueuer_core.access import Acting, Action
from enqueuer_core.errors import EnqueuerError, PermissionDenied, permissions_named
from enqueuer_core.setup.desired import AccountWant, Grant, QueueWant
from enqueuer_core.setup.plan import CALL_TIMEOUT_S, Change, SetupClients, SetupPlan, policy_client

# The role a platform engineer needs for what setup does, by permission prefix.
_ROLE_FOR = {
    "cloudtasks.": "roles/cloudtasks.admin",
    "iam.serviceAccounts.": "roles/iam.serviceAccountAdmin",
    "run.": "roles/run.admin",
    "resourcemanager.projects.": "roles/resourcemanager.projectIamAdmin",
}
# Redo a read-modify-write that lost a race (ABORTED: the etag changed meanwhile).
CONFLICT_RETRY = gretry.Retry(predicate=gretry.if_exception_type(gexc.Aborted),
                              initial=0.1, maximum=2.0, multiplier=2.0, timeout=60.0)


class SetupRefused(PermissionDenied):
    """Google refused one of setup's changes; ``done`` lists what was applied before."""

    def __init__(self, message: str, done: list[Change], refused: list[Change]) -> None:
        super().__init__(message)
        self.done = done
        self.refused = refused

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "done": [c.to_dict() for c in self.done],
                "refused": [c.to_dict() for c in self.refused]}


@dataclass
class _Step:
    changes: list[Change]
    run: Callable[[], None]
    action: str = field(default="")


def apply_plan(plan: SetupPlan, c: SetupClients, acting: Acting,
               fixing: tuple[str, str] | None = None) -> list[Change]:
    """Apply every change setup can make; the changes applied, in order.

    Only an admin of Enqueuer's access config may (``Forbidden`` otherwise, before any
    change); one audit line records what was applied, and with ``fixing`` (check, worker)
    that it was the Fix of that failing check. ``missing`` items (a worker's Cloud Run
    service) are left: they are not setup's to make, nor is the service agent's grant while
    its name is unknown. ``SetupRefused`` stops at the first refusal, naming the permission
    and the role.
    """
    done: list[Change] = []
    check, worker = fixing or (None, None)
    with acting.doing(Action.SETUP, f"projects/{plan.project}", worker,
                      planned=len(plan.to_change), fix=check) as record:
        try:
            for step in _steps(plan, c):
                try:
                    step.run()
                except gexc.PermissionDenied as e:
                    raise _refused(plan, step, e.message, done) from None
                except gexc.GoogleAPICallError as e:
                    raise EnqueuerError(
                        f"{step.action} failed: {e.code.name if e.code else 'error'}: "
                        f"{e.message}. " + _so_far(done)) from None
                done.extend(step.changes)
        finally:
            record["applied"] = [f"{ch.status} {ch.what}" for ch in done]
    return done


def _steps(plan: SetupPlan, c: SetupClients) -> list[_Step]:
    pending = [ch for ch in plan.changes if ch.status in ("create", "update", "add", "unknown")]
    steps: list[_Step] = []
    for ch in pending:
        if isinstance(ch.item, AccountWant) and ch.item.account_id is not None:
            steps.append(_Step([ch], _creating_account(c, ch.item),
                               f"Creating the service account {ch.item.email}"))
        elif isinstance(ch.item, QueueWant):
            verb = "Updating" if ch.status == "update" else "Creating"
            steps.append(_Step([ch], _making_queue(c, ch.item, ch.status == "update"),
                               f"{verb} the queue {ch.item.queue_id}"))
    by_resource: dict[str, list[Change]] = {}
    for ch in pending:
        if isinstance(ch.item, Grant):
            by_resource.setdefault(ch.item.resource, []).append(ch)
    for resource, changes in by_resource.items():
        grants = [ch.item for ch in changes if isinstance(ch.item, Grant)]
        steps.append(_Step(changes, _granting(c, grants),
                           f"Changing the IAM policy of {resource}"))
    return steps


def _creating_account(c: SetupClients, want: AccountWant) -> Callable[[], None]:
    def run() -> None:
        # Made meanwhile, or there already but not readable: either way it exists.
        with contextlib.suppress(gexc.AlreadyExists):
            c.iam.create_service_account(request={
                "name": f"projects/{want.project}", "account_id": want.account_id,
                "service_account": {"display_name": want.display_name,
                                    "description": f"Enqueuer: {want.purpose}"}},
                timeout=CALL_TIMEOUT_S)
    return run


def _queue_message(want: QueueWant) -> tuple[tasks_v2.Queue, list[str]]:
    """The queue with the configured fields set, and their field-mask paths."""
    pb = tasks_v2.Queue.pb(tasks_v2.Queue(name=want.path))
    paths = []
    for path, value in want.settings().items():
        group, name = path.split(".")
        target = getattr(pb, group)
        if name.endswith("_s"):
            name = name.removesuffix("_s")
            seconds = float(value)
            getattr(target, name).CopyFrom(duration_pb2.Duration(
                seconds=int(seconds), nanos=round((seconds % 1) * 1e9)))
        else:
            setattr(target, name, value)
        paths.append(f"{group}.{name}")
    return tasks_v2.Queue.wrap(pb), paths


def _making_queue(c: SetupClients, want: QueueWant, update: bool) -> Callable[[], None]:
    queue, paths = _queue_message(want)
    parent = want.path.rsplit("/queues/", 1)[0]

    def run() -> None:
        if not update:
            try:
                c.tasks.create_queue(parent=parent, queue=queue, timeout=CALL_TIMEOUT_S)
                return
            except gexc.AlreadyExists:
                if not paths:
                    return
        c.tasks.update_queue(queue=queue, update_mask=field_mask_pb2.FieldMask(paths=paths),
                             timeout=CALL_TIMEOUT_S)
    return run


def _granting(c: SetupClients, grants: list[Grant]) -> Callable[[], None]:
    client = policy_client(c, grants[0])
    resource = grants[0].resource

    def read_modify_write() -> None:
        policy = client.get_iam_policy(request=iam_policies.policy_request(resource),
                                       timeout=CALL_TIMEOUT_S)
        added = [m for g in grants
                 for m in iam_policies.add_members(policy, g.role, [g.member])]
        if added:
            client.set_iam_policy(request={"resource": resource, "policy": policy},
                                  timeout=CALL_TIMEOUT_S)
    return lambda: CONFLICT_RETRY(read_modify_write)()


def _so_far(done: list[Change]) -> str:
    if not done:
        return "Nothing was changed."
    return "Done so far: " + "; ".join(f"{ch.status} {ch.what}" for ch in done) + "."


def _refused(plan: SetupPlan, step: _Step, message: str, done: list[Change]) -> SetupRefused:
    named = permissions_named(message)
    permission = named[0] if named else None
    role = next((r for prefix, r in _ROLE_FOR.items()
                 if permission and permission.startswith(prefix)), None)
    need = f"the permission {permission}" if permission else "a permission"
    grant = (f" Grant {plan.principal} {role} (or a role with {permission}), or have someone "
             "who holds it run `enqueuer setup --apply`." if role else "")
    return SetupRefused(
        f"{step.action}: Google refused {plan.principal} {need} ({message}).{grant} "
        + _so_far(done) + f" Not done: {len(plan.to_change) - len(done)} change(s); "
        "`enqueuer setup` lists them.", done, step.changes)

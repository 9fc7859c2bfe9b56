"""Replay: a dead job enqueued again, as a new task with a key derived from the old one.

What to send comes from the task's enqueue audit line in Cloud Logging (its worker, key and,
with ``AUDIT_PAYLOADS=full``, its payload). The new key is the old one with ``-r1`` (a
replay of ``report-1-r1`` is ``report-1-r2``): the same dead task replayed twice asks for
the same task name, which Cloud Tasks refuses (409); and past Cloud Tasks' memory of names
the audit line of the first replay refuses it too. The new task's audit line names the old
one (``replay_of``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
from pydantic import ValidationError

from enqueuer_core.access import Acting, Action
from enqueuer_core.build import EnqueueRequest
from enqueuer_core.enqueue import Enqueuer, EnqueueResult
from enqueuer_core.errors import DuplicateTask, InvalidRequest
from enqueuer_core.history.queries import (
    enqueue_line_filter,
    list_page,
    parts_of,
    project_of,
    task_attempts,
    worker_of,
)
from enqueuer_core.history.records import ActionRecord, action_record
from enqueuer_core.task_names import MAX_KEY_CHARS, task_id_for_key
from enqueuer_core.workers import Registry, WorkerSpec

_REPLAYED = re.compile(r"^(?P<base>.+)-r(?P<n>[1-9][0-9]{0,5})$", re.DOTALL)
_HASH_CHARS = 16
EDIT_HINT = ("use edit and replay (`enqueuer replay TASK --edit`, or Edit and replay on the "
             "dashboard's Dead letters page) with the payload from your records")


@dataclass(frozen=True)
class ReplaySource:
    task: str
    worker: str | None
    payload: Any | None
    idempotency_key: str | None
    new_key: str  # the derived key for the replay
    why_not: str | None  # why it cannot be replayed as is
    new_task: str | None = None  # the replay's task name, when the worker is known


def replay_key(key: str) -> str:
    """The key of a replay of the task enqueued with ``key``: ``report-1`` → ``report-1-r1``
    → ``report-1-r2``. Deterministic, and within the 500 characters a key may have (a
    longer one keeps its start and a hash of the rest)."""
    m = _REPLAYED.match(key)
    base, n = (m["base"], int(m["n"]) + 1) if m else (key, 1)
    suffix = f"-r{n}"
    if len(base) + len(suffix) > MAX_KEY_CHARS:
        digest = hashlib.sha256(base.encode("utf-8")).hexdigest()[:_HASH_CHARS]
        base = f"{base[:MAX_KEY_CHARS - len(suffix) - _HASH_CHARS - 1]}~{digest}"
    return base + suffix


def _enqueue_line(client: LoggingServiceV2Client, task_name: str) -> ActionRecord | None:
    entries, _ = list_page(client, project_of(task_name), enqueue_line_filter(task_name),
                           newest_first=True, page_size=1)
    return action_record(entries[0]) if entries else None


def _worker(client: LoggingServiceV2Client, task_name: str, line: ActionRecord | None,
            registry: Registry) -> WorkerSpec | None:
    if line and line.worker in registry.workers:
        return registry.workers[line.worker]
    queue = task_name.split("/tasks/", 1)[0]
    # No enqueue line naming a known worker: the URL Cloud Tasks last called, else the queue.
    targets = [a.target for a in task_attempts(client, task_name) if a.target]
    return worker_of(registry, queue, targets[-1] if targets else None)


def _why_not(task_name: str, line: ActionRecord | None, worker: WorkerSpec | None) -> str | None:
    if line is None:
        return ("its enqueue is not on record in Cloud Logging: it was not created through "
                "Enqueuer's API or dashboard (the CLI writes its audit lines to its stderr "
                "only), its audit line has not reached Cloud Logging, or it is older than the "
                f"logs keep. To run the job again, {EDIT_HINT}.")
    shipped = line.payload or {}
    if "content" not in shipped:
        omitted = shipped.get("content_omitted")
        reason = (f"the payload was too large to keep in the audit line ({omitted})" if omitted
                  else "the enqueue line keeps only the payload's size and hash: it was "
                  "enqueued with AUDIT_PAYLOADS=hash (the default)")
        return (f"{reason}. Set AUDIT_PAYLOADS=full on the API and the dashboard so that "
                f"later jobs can be replayed; for this one, {EDIT_HINT}.")
    if worker is None:
        return ("its worker is unknown here: its queue has no single worker "
                "in this enqueuer's registry. Add the worker to the workers file "
                "(WORKERS_FILE), or enqueue the job again from the Enqueue page.")
    return None


def replay_source(client: LoggingServiceV2Client, task_name: str,
                  registry: Registry) -> ReplaySource:
    """What a replay of ``task_name`` would send, and why it cannot when it cannot."""
    line = _enqueue_line(client, task_name)
    worker = _worker(client, task_name, line, registry)
    key = line.idempotency_key if line else None
    new_key = replay_key(key or task_name.rsplit("/", 1)[-1])
    new_task = None
    if worker is not None:
        parts = parts_of(task_name)
        new_task = (f"projects/{parts['projects']}/locations/{parts.get('locations')}/queues/"
                    f"{worker.queue}/tasks/{task_id_for_key(new_key)}")
    payload = (line.payload or {}).get("content") if line else None
    return ReplaySource(task=task_name, worker=worker.name if worker else None,
                        payload=payload, idempotency_key=key, new_key=new_key,
                        why_not=_why_not(task_name, line, worker), new_task=new_task)


def replay(enqueuer: Enqueuer, client: LoggingServiceV2Client, task_name: str,
           acting: Acting, payload: Any | None = None) -> EnqueueResult:
    """Enqueue ``task_name``'s job again, as ``acting``: its payload from the audit line, or
    ``payload`` (edit and replay). ``DuplicateTask`` when it was replayed already (naming the
    replay); ``InvalidRequest`` with ``why_not`` when it cannot be replayed."""
    source = replay_source(client, task_name, enqueuer.registry)
    if source.worker is None or (payload is None and source.payload is None):
        raise InvalidRequest(f"Task {task_name} cannot be replayed as it is: {source.why_not}")
    worker = enqueuer.registry.get(source.worker)
    new_task = (f"{enqueuer.settings.queue_path(worker.queue)}/tasks/"
                f"{task_id_for_key(source.new_key)}")
    try:
        request = EnqueueRequest(service=worker.name,
                                 payload=source.payload if payload is None else payload,
                                 idempotency_key=source.new_key)
    except ValidationError as e:
        raise InvalidRequest(f"The replay of {task_name} is not a valid job: "
                             + "; ".join(err["msg"] for err in e.errors())) from None
    earlier = _enqueue_line(client, new_task)
    if earlier is not None:
        # Cloud Tasks forgets a name an hour or so after its task ran; the logs do not.
        with acting.doing(Action.ENQUEUE, enqueuer.settings.queue_path(worker.queue),
                          worker=worker.name, idempotency_key=source.new_key,
                          replay_of=task_name, task=new_task):
            raise DuplicateTask(_replayed_already(task_name, new_task, source.new_key,
                                                  earlier))
    try:
        return enqueuer.enqueue(request, acting, replay_of=task_name)
    except DuplicateTask:
        raise DuplicateTask(_replayed_already(task_name, new_task, source.new_key, None)
                            ) from None


def _replayed_already(task_name: str, new_task: str, new_key: str,
                      earlier: ActionRecord | None) -> str:
    by = (f" by {earlier.principal} at {earlier.time:%Y-%m-%d %H:%M:%SZ}" if earlier else "")
    return (f"Task {task_name} was replayed already{by}: the replay is {new_task} (key "
            f"{new_key}). Replaying it again would run the job twice. To run it once more, "
            f"replay that replay (its key would be {replay_key(new_key)}), or enqueue it "
            "with a new key.")

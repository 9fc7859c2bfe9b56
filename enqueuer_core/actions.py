"""What an operator does to a queue or its tasks: pause, resume, purge, run now, delete.

Every call goes through the official client and ``translate_google_errors``; queue actions
answer with the queue as it is afterwards, task actions with the task or what became of it.
None of them is retried automatically: each changes something, and the operator sees the
answer. Each takes who is acting: the access config decides, and an audit line records it.
"""

from __future__ import annotations

import contextlib

from google.cloud import tasks_v2

from enqueuer_core.access import Acting, Action
from enqueuer_core.clients import principal
from enqueuer_core.errors import EnqueuerError, Forbidden, translate_google_errors
from enqueuer_core.inspect import QueueSnapshot, TaskSnapshot, queue_snapshot, task_call

CALL_TIMEOUT_S = 10.0


def pause_queue(client: tasks_v2.CloudTasksClient, queue_path: str,
                acting: Acting) -> QueueSnapshot:
    """Stop dispatching from the queue (tasks stay, and can still be added)."""
    with acting.doing(Action.PAUSE, queue_path), \
            translate_google_errors(queue=queue_path, principal=principal(client)):
        client.pause_queue(name=queue_path, retry=None, timeout=CALL_TIMEOUT_S)
    return queue_snapshot(client, queue_path)


def resume_queue(client: tasks_v2.CloudTasksClient, queue_path: str,
                acting: Acting) -> QueueSnapshot:
    """Dispatch from the queue again."""
    with acting.doing(Action.RESUME, queue_path), \
            translate_google_errors(queue=queue_path, principal=principal(client)):
        client.resume_queue(name=queue_path, retry=None, timeout=CALL_TIMEOUT_S)
    return queue_snapshot(client, queue_path)


def purge_queue(client: tasks_v2.CloudTasksClient, queue_path: str,
                acting: Acting) -> QueueSnapshot:
    """Delete every task of the queue. Their names stay taken for a while (Cloud Tasks
    keeps tombstones), so the same idempotency keys are refused as duplicates meanwhile."""
    with acting.doing(Action.PURGE, queue_path), \
            translate_google_errors(queue=queue_path, principal=principal(client)):
        client.purge_queue(name=queue_path, retry=None, timeout=CALL_TIMEOUT_S)
    return queue_snapshot(client, queue_path)


def run_task(client: tasks_v2.CloudTasksClient, task_name: str,
             acting: Acting) -> TaskSnapshot:
    """Dispatch the task now, whatever its schedule or backoff (RunTask), even from a
    paused queue; ``TaskNotFound`` when it ran or was deleted already."""
    with acting.doing(Action.RUN, task_name), task_call(client, task_name):
        task = client.run_task(name=task_name, retry=None, timeout=CALL_TIMEOUT_S)
    return TaskSnapshot.from_task(task)


def delete_tasks(client: tasks_v2.CloudTasksClient, task_names: list[str],
                 acting: Acting) -> dict[str, str | None]:
    """Delete each task: name -> None when deleted, else why not (one failure stops
    nothing else; ``Forbidden``, before any, stops all)."""
    names = list(dict.fromkeys(task_names))
    if acting.why_not(Action.DELETE):
        for name in names:  # one refused line per task asked for, then the refusal
            with contextlib.suppress(Forbidden), acting.doing(Action.DELETE, name):
                pass
        acting.check(Action.DELETE)
    out: dict[str, str | None] = {}
    for name in names:
        try:
            with acting.doing(Action.DELETE, name), task_call(client, name):
                client.delete_task(name=name, retry=None, timeout=CALL_TIMEOUT_S)
        except EnqueuerError as e:
            out[name] = e.message
        else:
            out[name] = None
    return out

"""Which task a job is, from what an operator has at hand: its full name, its task ID, or
the idempotency key it was enqueued with.

A key is enough because Enqueuer names every task from its key (``task_names``), so the
task's name, and with it its history, follows from the key and the queue without asking
anyone; even once Cloud Tasks has forgotten the task.
"""

from __future__ import annotations

import re

from enqueuer_core.task_names import task_id_for_key

# What Enqueuer names tasks (32 hex digits of the key's hash, then the key) and what Cloud
# Tasks names the tasks it names itself (a long number).
_ENQUEUER_ID = re.compile(r"^[0-9a-f]{32}(-[A-Za-z0-9_-]*)?$")
_GENERATED_ID = re.compile(r"^[0-9]{15,}$")


def task_for(ref: str, queue_path: str) -> str:
    """The full task name ``ref`` designates in the queue ``queue_path``.

    ``ref`` is a full task name (kept as it is, whatever queue it names), a task ID as
    Enqueuer or Cloud Tasks makes them, or else an idempotency key.
    """
    ref = ref.strip()
    if ref.startswith("projects/") and "/tasks/" in ref:
        return ref
    if _ENQUEUER_ID.match(ref) or _GENERATED_ID.match(ref):
        return f"{queue_path}/tasks/{ref}"
    return f"{queue_path}/tasks/{task_id_for_key(ref)}"

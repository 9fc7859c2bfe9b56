"""Bulk actions on a queue: select the tasks that match a filter, count them, then run or
delete them all, paced to Cloud Tasks' quotas, with progress, and one audit line.

``select_tasks`` scans the queue (ListTasks, page by page, up to a cap) and answers the
names that match: failing (the last attempt got an error), a text in the task's name, key
or payload, a payload field (``input_doc_id=abc``). A filter on payloads reads the FULL
view, which needs ``cloudtasks.tasks.fullView``. ``run_all`` and ``delete_all`` then act on
that selection, batch by batch:

- **RunTask** is limited to 60 requests a minute ("Force run task requests: 60 requests per
  minute... this API is meant for manual debugging",
  https://cloud.google.com/tasks/docs/quotas): runs are paced to at most 60 in any minute,
  one pace per project shared by everyone acting in this process.
- **DeleteTask** counts against the API's 6,000,000 requests a minute (same page); what
  binds is the queue: Google asks to keep operations on a cold queue under 500 a second
  and to grow them by at most 50% every 5 minutes (the "500/50/5" pattern,
  https://cloud.google.com/tasks/docs/manage-cloud-task-scaling). Deletes are paced to 100
  a second per queue, well under it.
- A call refused for the quota (RESOURCE_EXHAUSTED) or while Cloud Tasks is briefly
  unavailable (UNAVAILABLE) is retried with ``google.api_core.retry``, backing off
  exponentially. A RunTask retried after an answer was lost may dispatch twice: Cloud Tasks
  delivers at least once anyway, and workers take a task twice safely (X-Idempotency-Key).

A task that fails (gone already: it ran, or another client deleted it) is listed with why,
and the others go on; a refusal by Google's IAM, or Cloud Tasks out of reach after the
retries, is the same answer for every task: it stops the action. The whole action is one
change on record: one audit line (``Action.RUN`` or ``Action.DELETE`` on the queue, with
``count``, ``done``, ``failed`` and the filter), never one per task. Refused by the access
config (a viewer), nothing is done.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from google.api_core import exceptions as gexc
from google.api_core import retry
from google.cloud import tasks_v2

from enqueuer_core.access import Acting, Action
from enqueuer_core.errors import EnqueuerError, PermissionDenied, Unavailable
from enqueuer_core.inspect import PAGE_SIZE, TaskSnapshot, task_call
from enqueuer_core.payload_search import (
    FieldMatch,
    ScanProgress,
    body_of,
    parse_expression,
    task_pages,
)

SELECT_CAP = 10_000  # tasks examined at most by one selection
BATCH_SIZE = 50  # calls between two progress reports at most
CONCURRENCY = 4  # calls in flight at once
CALL_TIMEOUT_S = 10.0
# RESOURCE_EXHAUSTED (the quota) and UNAVAILABLE are worth waiting for; 2 minutes at most.
QUOTA_RETRY = retry.Retry(
    initial=1.0, maximum=30.0, multiplier=2.0, timeout=120.0,
    predicate=retry.if_exception_type(gexc.ResourceExhausted, gexc.ServiceUnavailable))


class Pace:
    """At most ``calls`` calls in any ``per_s`` seconds (a sliding window), across threads."""

    def __init__(self, calls: int, per_s: float,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if calls < 1 or per_s <= 0:
            raise ValueError("a pace needs at least one call per a positive time")
        self.calls, self.per_s = calls, per_s
        self._clock, self._sleep = clock, sleep
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Wait until one more call keeps within the pace, and count it."""
        with self._lock:  # callers queue here, in turn
            while True:
                now = self._clock()
                while self._times and self._times[0] <= now - self.per_s:
                    self._times.popleft()
                if len(self._times) < self.calls:
                    self._times.append(now)
                    return
                self._sleep(self._times[0] + self.per_s - now)

    def __repr__(self) -> str:
        return f"Pace({self.calls} per {self.per_s:g} s)"


RUN_QUOTA = (60, 60.0)  # RunTask: 60 a minute per project
DELETE_PACE = (100, 1.0)  # DeleteTask: 100 a second per queue (500/50/5 allows 500)
_paces: dict[tuple[str, str], Pace] = {}
_paces_lock = threading.Lock()


def shared_pace(action: Literal["run", "delete"], queue_path: str) -> Pace:
    """The process's pace for ``action``: per project for runs (the quota is the
    project's), per queue for deletes."""
    scope = queue_path.split("/locations/")[0] if action == "run" else queue_path
    calls, per_s = RUN_QUOTA if action == "run" else DELETE_PACE
    with _paces_lock:
        return _paces.setdefault((action, scope), Pace(calls, per_s))


def expected_seconds(action: Literal["run", "delete"], count: int) -> float:
    """About how long ``count`` calls take at the default pace (a fresh one)."""
    calls, per_s = RUN_QUOTA if action == "run" else DELETE_PACE
    return max(0, (count - 1) // calls) * per_s


# -- selection ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskFilter:
    """Which tasks: every filter given must match."""

    failing: bool = False  # the last attempt got an error
    text: str = ""  # a part of the task ID, the idempotency key or the payload's text
    field: str = ""  # FIELD=VALUE on the payload (payload_search's expressions)

    @property
    def reads_payloads(self) -> bool:
        """Whether the filter needs the tasks' bodies (the FULL view)."""
        return bool(self.text.strip() or self.field.strip())

    def describe(self) -> str:
        parts = (["failing"] if self.failing else []) + (
            [f"text {self.text.strip()!r}"] if self.text.strip() else []) + (
            [self.field.strip()] if self.field.strip() else [])
        return ", ".join(parts) or "every task"

    def matcher(self) -> Callable[[TaskSnapshot, tasks_v2.Task], bool]:
        """The test each task must pass; ``InvalidRequest`` for a bad field expression."""
        field_match: FieldMatch | None = (parse_expression(self.field)
                                          if self.field.strip() else None)
        needle = self.text.strip().casefold()

        def keep(snapshot: TaskSnapshot, task: tasks_v2.Task) -> bool:
            if self.failing and not snapshot.failing:
                return False
            if needle:
                body = tasks_v2.Task.pb(task).http_request.body.decode("utf-8", "replace")
                if not any(needle in s.casefold() for s in (
                        snapshot.task_id, snapshot.idempotency_key or "", body)):
                    return False
            return field_match is None or field_match.matches(body_of(task))

        return keep


@dataclass(frozen=True)
class Selection:
    """The tasks of ``queue`` a filter matched, counted before anything is done to them."""

    queue: str
    filter: TaskFilter
    names: list[str]
    scanned: int
    capped: bool  # the scan stopped at its cap: tasks past it were not examined

    @property
    def count(self) -> int:
        return len(self.names)


def select_tasks(client: tasks_v2.CloudTasksClient, queue_path: str, task_filter: TaskFilter,
                 cap: int = SELECT_CAP, page_size: int = PAGE_SIZE,
                 progress: Callable[[ScanProgress], None] | None = None) -> Selection:
    """The names of the queue's tasks that match, examining at most ``cap`` tasks."""
    keep = task_filter.matcher()  # a bad expression is refused before any call
    view = (tasks_v2.Task.View.FULL if task_filter.reads_payloads
            else tasks_v2.Task.View.BASIC)
    names: list[str] = []
    seen = 0
    capped = False
    for pages, (tasks, more) in enumerate(task_pages(client, queue_path, page_size, view), 1):
        taken = tasks[:cap - seen]
        names += [t.name for t in taken if keep(TaskSnapshot.from_task(t), t)]
        seen += len(taken)
        capped = len(taken) < len(tasks) or (seen >= cap and more)
        done = capped or not more
        if progress:
            progress(ScanProgress(pages, seen, len(names), capped=capped, done=done))
        if done:
            break
    return Selection(queue_path, task_filter, names, seen, capped)


# -- run all, delete all --------------------------------------------------------------------


@dataclass(frozen=True)
class BulkProgress:
    handled: int  # done or failed so far
    total: int
    failed: int


@dataclass
class BulkResult:
    action: Literal["run", "delete"]
    queue: str
    total: int
    done: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (task, why)


def run_all(client: tasks_v2.CloudTasksClient, selection: Selection, acting: Acting,
            progress: Callable[[BulkProgress], None] | None = None,
            pace: Pace | None = None, batch_size: int = BATCH_SIZE) -> BulkResult:
    """Dispatch every selected task now (RunTask), paced to the RunTask quota."""

    def run(name: str) -> None:
        client.run_task(name=name, retry=QUOTA_RETRY, timeout=CALL_TIMEOUT_S)

    return _bulk("run", Action.RUN, run, selection, acting, progress,
                 pace or shared_pace("run", selection.queue), batch_size, client)


def delete_all(client: tasks_v2.CloudTasksClient, selection: Selection, acting: Acting,
               progress: Callable[[BulkProgress], None] | None = None,
               pace: Pace | None = None, batch_size: int = BATCH_SIZE) -> BulkResult:
    """Delete every selected task (DeleteTask), paced per queue. Their names stay taken for
    about an hour (Cloud Tasks' tombstones)."""

    def delete(name: str) -> None:
        client.delete_task(name=name, retry=QUOTA_RETRY, timeout=CALL_TIMEOUT_S)

    return _bulk("delete", Action.DELETE, delete, selection, acting, progress,
                 pace or shared_pace("delete", selection.queue), batch_size, client)


def _batches(names: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(names), size):
        yield names[start:start + size]


def _bulk(kind: Literal["run", "delete"], action: Action, call: Callable[[str], None],
          selection: Selection, acting: Acting,
          progress: Callable[[BulkProgress], None] | None, pace: Pace, batch_size: int,
          client: tasks_v2.CloudTasksClient) -> BulkResult:
    names = list(dict.fromkeys(selection.names))
    result = BulkResult(kind, selection.queue, len(names))

    def one(name: str) -> EnqueuerError | None:
        pace.acquire()
        try:
            with task_call(client, name):
                call(name)
        except EnqueuerError as e:
            return e
        return None

    # The decision, then one line for the whole action: refused, ok, or failed (why).
    with acting.doing(action, selection.queue, count=len(names), bulk=True,
                      filter=selection.filter.describe()) as record, \
            ThreadPoolExecutor(CONCURRENCY, thread_name_prefix=f"bulk-{kind}") as pool:
        for batch in _batches(names, batch_size):
            stop: EnqueuerError | None = None
            # Results in the caller's thread, in order: progress is reported from here.
            for name, error in zip(batch, pool.map(one, batch), strict=True):
                if error is None:
                    result.done.append(name)
                elif isinstance(error, PermissionDenied | Unavailable):
                    stop = stop or error
                else:
                    result.failures.append((name, error.message))
                if progress:
                    progress(BulkProgress(len(result.done) + len(result.failures),
                                          len(names), len(result.failures)))
            record.update(done=len(result.done), failed=len(result.failures))
            if stop is not None:  # the same answer for every task left: stop here
                raise stop
    return result

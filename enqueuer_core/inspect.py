"""Read-only snapshots of queues and tasks, for the CLI and the dashboard.

Nothing here changes a queue. Every Google call runs inside ``translate_google_errors``,
and nothing loads a queue whole: task lists stop at ``limit`` and task counts at
``COUNT_CAP`` (shown as ``10000+``), however long the queue is.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core import retry
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.pagers import ListTasksPager
from google.protobuf import timestamp_pb2
from google.rpc import code_pb2

from enqueuer_core.clients import principal
from enqueuer_core.config import Settings
from enqueuer_core.errors import (
    PermissionDenied,
    QueueNotFound,
    TaskNotFound,
    translate_google_errors,
)
from enqueuer_core.workers import Registry, load_registry

CALL_TIMEOUT_S = 5.0  # one read
# Reads are safe to retry, but an operator waiting on an unreachable Cloud Tasks should
# hear so within seconds, not after the default 20 s of retries.
READ_RETRY = retry.Retry(initial=0.1, maximum=1.0, multiplier=2.0, timeout=3.0,
                         predicate=retry.if_exception_type(gexc.ServiceUnavailable))
COUNT_CAP = 10_000  # tasks counted per queue at most; beyond, the count reads "10000+"
PAGE_SIZE = 1000  # Cloud Tasks' largest ListTasks page
DEFAULT_TASK_LIMIT = 100
SCAN_CAP = 10_000  # tasks examined at most when filtering (``failing_only``)
MISSING, FORBIDDEN = "MISSING", "FORBIDDEN"
IDEMPOTENCY_HEADER = "x-idempotency-key"
_HTTP_CODE = re.compile(r"HTTP status code (\d{3})")


def _time(ts: timestamp_pb2.Timestamp, present: bool = True) -> dt.datetime | None:
    if not present or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return ts.ToDatetime(tzinfo=dt.UTC)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(frozen=True)
class QueueSnapshot:
    """One queue as Cloud Tasks describes it, with the workers that send to it.

    ``state`` is RUNNING, PAUSED or DISABLED, or ``MISSING`` (no such queue: ``error``
    says how to create it) or ``FORBIDDEN`` (not allowed to read it: ``error`` says why).
    ``tasks_count`` is None when not counted; ``tasks_count_more`` means "at least that".
    """

    name: str
    queue_id: str
    state: str
    workers: list[str] = field(default_factory=list)
    rate: float | None = None  # max dispatches per second
    max_concurrent: int | None = None
    max_attempts: int | None = None  # -1: unlimited
    min_backoff_s: float | None = None
    max_backoff_s: float | None = None
    tasks_count: int | None = None
    tasks_count_more: bool = False
    error: str | None = None

    @property
    def tasks_count_text(self) -> str:
        if self.tasks_count is None:
            return "-"
        return f"{self.tasks_count}+" if self.tasks_count_more else str(self.tasks_count)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TaskSnapshot:
    """One task: when it runs, what its attempts got, and the key it was enqueued with."""

    name: str
    task_id: str
    idempotency_key: str | None
    url: str | None
    schedule_time: dt.datetime | None
    create_time: dt.datetime | None
    dispatch_count: int
    response_count: int
    last_response_code: str | None  # "500" (HTTP) or a gRPC code name: "DEADLINE_EXCEEDED"
    last_response_message: str | None
    last_attempt_time: dt.datetime | None

    @property
    def failing(self) -> bool:
        """The last attempt got an answer, and it was not a success."""
        return self.last_response_code is not None and self.last_response_code not in (
            "OK", *(str(c) for c in range(200, 300)))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("schedule_time", "create_time", "last_attempt_time"):
            out[key] = _iso(out[key])
        out["failing"] = self.failing
        return out

    @classmethod
    def from_task(cls, task: tasks_v2.Task) -> TaskSnapshot:
        pb = tasks_v2.Task.pb(task)
        http = pb.http_request if pb.HasField("http_request") else None
        key = None
        if http is not None:
            key = next((v for k, v in http.headers.items() if k.lower() == IDEMPOTENCY_HEADER),
                       None)
        code = message = attempt_time = None
        if pb.HasField("last_attempt"):
            attempt = pb.last_attempt
            attempt_time = _time(attempt.dispatch_time, attempt.HasField("dispatch_time"))
            if attempt.HasField("response_time") or attempt.HasField("response_status"):
                status = attempt.response_status
                message = status.message or None
                found = _HTTP_CODE.search(status.message)
                code = found.group(1) if found else _code_name(status.code)
        return cls(
            name=pb.name, task_id=pb.name.rsplit("/", 1)[-1], idempotency_key=key,
            url=http.url if http is not None else None,
            schedule_time=_time(pb.schedule_time, pb.HasField("schedule_time")),
            create_time=_time(pb.create_time, pb.HasField("create_time")),
            dispatch_count=pb.dispatch_count, response_count=pb.response_count,
            last_response_code=code, last_response_message=message,
            last_attempt_time=attempt_time,
        )


@dataclass(frozen=True)
class TaskListing:
    """Some tasks of a queue; ``more`` when the queue holds others not listed or not examined."""

    queue: str
    tasks: list[TaskSnapshot]
    more: bool
    scanned: int

    def to_dict(self) -> dict[str, Any]:
        return {"queue": self.queue, "tasks": [t.to_dict() for t in self.tasks],
                "more": self.more, "scanned": self.scanned}


def _code_name(code: int) -> str:
    try:
        return code_pb2.Code.Name(code)
    except ValueError:
        return str(code)


def _pages(client: tasks_v2.CloudTasksClient, queue_path: str,
           page_size: int) -> Iterator[ListTasksPager]:
    """ListTasks pages, each fetched only when the caller asks for it."""
    token = ""
    while True:
        # The pager answers for its first page (``.tasks``, ``.next_page_token``); it is
        # never iterated, so it fetches nothing more on its own.
        page = client.list_tasks(
            request=tasks_v2.ListTasksRequest(parent=queue_path, page_size=page_size,
                                              page_token=token),
            retry=READ_RETRY, timeout=CALL_TIMEOUT_S,
        )
        yield page
        token = page.next_page_token
        if not token:
            return


def list_tasks(
    client: tasks_v2.CloudTasksClient, queue_path: str, failing_only: bool = False,
    page_size: int = PAGE_SIZE, limit: int = DEFAULT_TASK_LIMIT, scan_cap: int = SCAN_CAP,
) -> TaskListing:
    """Up to ``limit`` tasks of the queue (BASIC view: headers, no body), in queue order.

    ``failing_only`` keeps the tasks whose last attempt failed, examining at most
    ``scan_cap`` tasks to find them.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    tasks: list[TaskSnapshot] = []
    scanned = 0
    cap = scan_cap if failing_only else limit
    size = min(page_size, PAGE_SIZE) if failing_only else min(page_size, limit, PAGE_SIZE)

    def listing(more: bool) -> TaskListing:
        return TaskListing(queue=queue_path, tasks=tasks, more=more, scanned=scanned)

    with translate_google_errors(queue=queue_path, principal=principal(client)):
        for page in _pages(client, queue_path, size):
            for task in page.tasks:
                if len(tasks) >= limit or scanned >= cap:
                    return listing(more=True)
                scanned += 1
                snapshot = TaskSnapshot.from_task(task)
                if not failing_only or snapshot.failing:
                    tasks.append(snapshot)
            if (len(tasks) >= limit or scanned >= cap) and page.next_page_token:
                return listing(more=True)
    return listing(more=False)


def count_tasks(client: tasks_v2.CloudTasksClient, queue_path: str,
                cap: int = COUNT_CAP) -> tuple[int, bool]:
    """How many tasks the queue holds, counting at most ``cap``: ``(count, more)``."""
    count = 0
    with translate_google_errors(queue=queue_path, principal=principal(client)):
        for page in _pages(client, queue_path, PAGE_SIZE):
            count += len(page.tasks)
            if count >= cap:
                return cap, count > cap or bool(page.next_page_token)
    return count, False


def queue_snapshot(client: tasks_v2.CloudTasksClient, queue_path: str,
                   workers: list[str] | None = None, count_cap: int = COUNT_CAP) -> QueueSnapshot:
    """The queue, or a MISSING / FORBIDDEN snapshot saying why it cannot be shown."""
    queue_id = queue_path.rsplit("/", 1)[-1]
    base = {"name": queue_path, "queue_id": queue_id, "workers": list(workers or [])}
    try:
        with translate_google_errors(queue=queue_path, principal=principal(client)):
            queue = client.get_queue(name=queue_path, retry=READ_RETRY,
                                     timeout=CALL_TIMEOUT_S)
    except QueueNotFound as e:
        return QueueSnapshot(state=MISSING, error=e.message, **base)
    except PermissionDenied as e:
        return QueueSnapshot(state=FORBIDDEN, error=e.message, **base)
    pb = tasks_v2.Queue.pb(queue)
    retry = pb.retry_config
    count, more, error = None, False, None
    if count_cap > 0:
        try:
            count, more = count_tasks(client, queue_path, count_cap)
        except PermissionDenied as e:  # may read the queue but not list its tasks
            error = e.message
    return QueueSnapshot(
        state=tasks_v2.Queue.State(pb.state).name,
        rate=pb.rate_limits.max_dispatches_per_second,
        max_concurrent=pb.rate_limits.max_concurrent_dispatches,
        max_attempts=retry.max_attempts,
        min_backoff_s=retry.min_backoff.ToTimedelta().total_seconds(),
        max_backoff_s=retry.max_backoff.ToTimedelta().total_seconds(),
        tasks_count=count, tasks_count_more=more, error=error, **base,
    )


def list_queues(client: tasks_v2.CloudTasksClient, settings: Settings,
                registry: Registry | None = None,
                count_cap: int = COUNT_CAP) -> list[QueueSnapshot]:
    """The queues the registry's workers send to, each read with GetQueue (one per queue).

    ``count_cap=0`` skips counting tasks (one GetQueue per queue and nothing more).
    """
    registry = registry or load_registry(settings)
    by_queue: dict[str, list[str]] = {}
    for worker in registry:
        by_queue.setdefault(worker.queue, []).append(worker.name)
    return [queue_snapshot(client, settings.queue_path(queue_id), names, count_cap)
            for queue_id, names in by_queue.items()]


def resolve_queue(name: str, settings: Settings, registry: Registry | None = None) -> str:
    """A full queue name from a full name, a queue ID, or a worker name (its queue)."""
    if name.startswith("projects/"):
        return name
    registry = registry or load_registry(settings)
    worker = registry.workers.get(name)
    return settings.queue_path(worker.queue if worker else name)


# -- pages, filters and one task in full, for the dashboard -------------------------------

DEFAULT_PAGE_SIZE = 50


def queue_of_task(task_name: str) -> str:
    """The full queue name a full task name belongs to."""
    return task_name.split("/tasks/", 1)[0]


@contextmanager
def task_call(client: tasks_v2.CloudTasksClient, task_name: str) -> Iterator[None]:
    """Run a call about one existing task: ``TaskNotFound`` when it is gone, and every
    other Google error translated as usual."""
    queue = queue_of_task(task_name)
    with translate_google_errors(queue=queue, principal=principal(client)):
        try:
            yield
        except gexc.NotFound as e:
            if "Queue does not exist" in e.message:
                raise
            raise TaskNotFound(
                f"The task {task_name} does not exist: it may have run or been deleted "
                f"already. ({e.message})"
            ) from None


@dataclass(frozen=True)
class TaskPage:
    """One page of a queue's tasks; ``next_page_token`` fetches the next (None: the last)."""

    tasks: list[TaskSnapshot]
    next_page_token: str | None


def task_page(client: tasks_v2.CloudTasksClient, queue_path: str,
              page_token: str | None = None, page_size: int = DEFAULT_PAGE_SIZE) -> TaskPage:
    """One ListTasks call: up to ``page_size`` tasks, from ``page_token`` (Cloud Tasks')."""
    if not 1 <= page_size <= PAGE_SIZE:
        raise ValueError(f"page_size must be from 1 to {PAGE_SIZE}")
    with translate_google_errors(queue=queue_path, principal=principal(client)):
        page = client.list_tasks(
            request=tasks_v2.ListTasksRequest(parent=queue_path, page_size=page_size,
                                              page_token=page_token or ""),
            retry=READ_RETRY, timeout=CALL_TIMEOUT_S,
        )
        # ``page.tasks`` is this page only: the pager is never iterated, so it fetches
        # nothing more.
        tasks = [TaskSnapshot.from_task(t) for t in page.tasks]
    return TaskPage(tasks=tasks, next_page_token=page.next_page_token or None)


def filter_tasks(tasks: Iterable[TaskSnapshot], failing: bool = False, future: bool = False,
                 text: str = "", now: dt.datetime | None = None) -> list[TaskSnapshot]:
    """The tasks that match every filter given.

    ``failing``: the last attempt failed. ``future``: scheduled after ``now``. ``text``: a
    case-insensitive part of the task ID or the idempotency key.
    """
    now = now or dt.datetime.now(dt.UTC)
    needle = text.strip().casefold()

    def keep(t: TaskSnapshot) -> bool:
        if failing and not t.failing:
            return False
        if future and not (t.schedule_time is not None and t.schedule_time > now):
            return False
        return not needle or needle in t.task_id.casefold() or needle in (
            t.idempotency_key or "").casefold()

    return [t for t in tasks if keep(t)]


@dataclass(frozen=True)
class TaskDetail:
    """One task in full: its snapshot, the payload it carries, and its attempts."""

    snapshot: TaskSnapshot
    payload: Any  # the JSON-decoded body; the text when not JSON; None without a body
    headers: dict[str, str]
    first_attempt_time: dt.datetime | None  # dispatch time of the first attempt
    # schedule_time, dispatch_time, response_time, code, message (None when unknown)
    last_attempt: dict[str, Any]


def _payload(body: bytes) -> Any:
    if not body:
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("latin-1")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _attempt(attempt: tasks_v2.Attempt, present: bool) -> dict[str, dt.datetime | None]:
    pb = tasks_v2.Attempt.pb(attempt)
    return {f: _time(getattr(pb, f), present and pb.HasField(f))
            for f in ("schedule_time", "dispatch_time", "response_time")}


def task_detail(client: tasks_v2.CloudTasksClient, task_name: str) -> TaskDetail:
    """The task read with the FULL view (body included); ``TaskNotFound`` when it is gone."""
    with task_call(client, task_name):
        task = client.get_task(
            request=tasks_v2.GetTaskRequest(name=task_name,
                                            response_view=tasks_v2.Task.View.FULL),
            retry=READ_RETRY, timeout=CALL_TIMEOUT_S,
        )
    pb = tasks_v2.Task.pb(task)
    snapshot = TaskSnapshot.from_task(task)
    http = pb.http_request
    first = _attempt(task.first_attempt, pb.HasField("first_attempt"))
    last: dict[str, Any] = _attempt(task.last_attempt, pb.HasField("last_attempt"))
    last.update(code=snapshot.last_response_code, message=snapshot.last_response_message)
    return TaskDetail(
        snapshot=snapshot, payload=_payload(http.body), headers=dict(http.headers),
        first_attempt_time=first["dispatch_time"], last_attempt=last,
    )

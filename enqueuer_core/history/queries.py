"""The history's questions to Cloud Logging: one ``ListLogEntries`` call per page.

The filters are the issue-11 plan's Contract B, written exactly so (the emulator indexes
those shapes, and Google answers them from indexed fields: ``logName``, ``resource.labels``,
``severity``, ``timestamp``; https://cloud.google.com/logging/docs/view/logging-query-language
#indexed-fields). Each page is the first page of the client's pager: the pager would go on
to ask for every further page if it were iterated.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TypeVar

from google.api_core import exceptions as gexc
from google.api_core import retry as retries
from google.cloud import tasks_v2
from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
from google.cloud.logging_v2.types import ListLogEntriesRequest, LogEntry

from enqueuer_core.access.audit import LOG_LABEL
from enqueuer_core.access.policy import member_for_email
from enqueuer_core.clients import principal
from enqueuer_core.errors import InvalidRequest, translate_google_errors
from enqueuer_core.explain import explain_failure
from enqueuer_core.history.records import (
    ActionRecord,
    AttemptRecord,
    DeadLetter,
    MinuteCount,
    Page,
    action_record,
    attempt_record,
    dead_letter,
    payload_of,
)
from enqueuer_core.history.times import rfc3339, utc
from enqueuer_core.workers import Registry, WorkerSpec

R = TypeVar("R")

# The log Cloud Tasks writes task operations to, its ID URL-encoded as logName keeps it
# (https://cloud.google.com/tasks/docs/logging).
TASK_LOG_ID = "cloudtasks.googleapis.com%2Ftask_operations_log"
LIST_PERMISSION = "logging.logEntries.list"
MAX_PAGE_SIZE = 1000  # ListLogEntries refuses more (its reference: page_size)
CALL_TIMEOUT_S = 10.0
# A read may be retried safely; a short one, so that a stack that is down says so quickly.
_RETRY = retries.Retry(initial=0.2, maximum=2.0, multiplier=2.0, timeout=CALL_TIMEOUT_S,
                       predicate=retries.if_exception_type(gexc.ServiceUnavailable))
# How much a task's own history may hold before it is cut (unlimited retries of a task
# that fails every few seconds for days): pages of MAX_PAGE_SIZE.
MAX_ATTEMPT_PAGES = 10
MAX_MINUTE_PAGES = 50


def task_log_name(project: str) -> str:
    return f"projects/{project}/logs/{TASK_LOG_ID}"


def quote(value: str) -> str:
    """A string literal of the Logging query language."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parts_of(name: str) -> dict[str, str]:
    """``projects/P/locations/L/queues/Q[/tasks/T]`` as {"projects": P, ...}."""
    bits = name.split("/")
    return dict(zip(bits[::2], bits[1::2], strict=False))


def project_of(name: str) -> str:
    project = parts_of(name).get("projects")
    if not project:
        raise InvalidRequest(f"{name!r} is not a full name: expected projects/PROJECT/"
                             "locations/LOCATION/queues/QUEUE[/tasks/TASK]")
    return project


# -- the filters (pure) -------------------------------------------------------------------

def attempts_filter(task_name: str) -> str:
    return (f"logName={quote(task_log_name(project_of(task_name)))} "
            f"AND jsonPayload.task={quote(task_name)}")


def dead_letters_filter(queue_path: str, since: dt.datetime,
                        until: dt.datetime | None = None) -> str:
    parts = parts_of(queue_path)
    if not parts.get("queues") or not parts.get("locations"):
        raise InvalidRequest(f"{queue_path!r} is not a full queue name: expected "
                             "projects/PROJECT/locations/LOCATION/queues/QUEUE")
    text = (f"logName={quote(task_log_name(parts['projects']))} "
            f"AND resource.labels.queue_id={quote(parts['queues'])} "
            f"AND resource.labels.location={quote(parts['locations'])} "
            "AND severity>=ERROR AND jsonPayload.attemptResponseLog:* "
            "AND NOT jsonPayload.attemptResponseLog.retryTime:* "
            f"AND timestamp>={quote(rfc3339(since))}")
    if until is not None:
        text += f" AND timestamp<={quote(rfc3339(until))}"
    return text


def _who(who: str) -> str:
    # A bare email is the member the access module makes of it (an account's email ends in
    # gserviceaccount.com): one principal, which the audit lines' principal index serves.
    member = who if ":" in who else member_for_email(who)
    return f"jsonPayload.audit.principal={quote(member)}"


def queue_id(queue: str) -> str:
    """The queue's ID, from a full queue name or an ID."""
    return parts_of(queue).get("queues") or queue


def actions_filter(who: str | None = None, action: str | None = None,
                   queue: str | None = None, outcome: str | None = None,
                   since: dt.datetime | None = None) -> str:
    terms = [f"labels.log={quote(LOG_LABEL)}"]
    if who:
        terms.append(_who(who))
    if action:
        terms.append(f"jsonPayload.audit.action={quote(action)}")
    if queue:
        terms.append(f"jsonPayload.audit.target:{quote('queues/' + queue_id(queue))}")
    if outcome:
        terms.append(f"jsonPayload.audit.outcome={quote(outcome)}")
    if since is not None:
        terms.append(f"timestamp>={quote(rfc3339(since))}")
    return " AND ".join(terms)


def minutes_filter(project: str, since: dt.datetime, queue_path: str | None = None) -> str:
    text = (f"logName={quote(task_log_name(project))} AND jsonPayload.attemptResponseLog:* "
            f"AND timestamp>={quote(rfc3339(since))}")
    if queue_path:
        text += f" AND resource.labels.queue_id={quote(queue_id(queue_path))}"
    return text


def enqueue_line_filter(task_name: str) -> str:
    return (f"labels.log={quote(LOG_LABEL)} AND jsonPayload.audit.action=\"enqueue\" "
            f"AND jsonPayload.audit.task={quote(task_name)} "
            "AND jsonPayload.audit.outcome=\"ok\"")


# -- the calls ----------------------------------------------------------------------------

def list_page(client: LoggingServiceV2Client, project: str, filter_: str, *,
              newest_first: bool, page_size: int, page_token: str = "",
              ) -> tuple[list[LogEntry], str]:
    """One ``ListLogEntries`` call: the entries of one page, and the next page's token."""
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidRequest(f"page_size must be 1 to {MAX_PAGE_SIZE}, not {page_size}")
    request = ListLogEntriesRequest(
        resource_names=[f"projects/{project}"], filter=filter_,
        order_by="timestamp desc" if newest_first else "timestamp asc",
        page_size=page_size, page_token=page_token)
    with translate_google_errors(queue=f"projects/{project}", principal=principal(client),
                                 api="Cloud Logging", needs=LIST_PERMISSION):
        pager = client.list_log_entries(request=request, retry=_RETRY,
                                        timeout=CALL_TIMEOUT_S)
        first = next(iter(pager.pages))  # this page only: iterating would fetch them all
    return list(first.entries), first.next_page_token


def _pages(client: LoggingServiceV2Client, project: str, filter_: str,
           max_pages: int) -> Iterable[LogEntry]:
    """Oldest first, page after page, at most ``max_pages`` calls."""
    token = ""
    for _ in range(max_pages):
        entries, token = list_page(client, project, filter_, newest_first=False,
                                   page_size=MAX_PAGE_SIZE, page_token=token)
        yield from entries
        if not token:
            return


def _keep(entries: Iterable[LogEntry], read: Callable[[LogEntry], R | None]) -> list[R]:
    return [r for r in map(read, entries) if r is not None]


def task_attempts(client: LoggingServiceV2Client, task_name: str) -> list[AttemptRecord]:
    """Everything Cloud Tasks logged about one task, oldest first: its creation, each
    dispatch and each response. Empty when the queue's log sampling is off."""
    return _keep(_pages(client, project_of(task_name), attempts_filter(task_name),
                        MAX_ATTEMPT_PAGES), attempt_record)


def cause_of(status: str, worker: WorkerSpec | None = None, caller: str | None = None) -> str:
    """The likely cause of a final failure, with its fix (``explain_failure``'s words)."""
    if status == "UNAVAILABLE":
        # The log keeps only the code: a worker's own 503 and no answer at all both read
        # UNAVAILABLE (https://cloud.google.com/tasks/docs/reference/rpc/google.rpc#code).
        down = explain_failure("UNAVAILABLE", None, worker, caller, final=True)
        busy = explain_failure("503", None, worker, caller, final=True)
        assert down and busy
        return (f"{down.headline}, or it answered 503 (UNAVAILABLE). {down.detail} "
                f"Fix: {down.fix} If it did answer 503: {busy.fix}")
    found = explain_failure(status, None, worker, caller, final=True)
    if found is None:
        return "The last attempt succeeded."
    return f"{found.headline}. {found.detail} Fix: {found.fix}"


def worker_of(registry: Registry | None, queue_path: str,
              target: str | None) -> WorkerSpec | None:
    """The worker a task went to: by its URL (``POST https://…``), else its queue's only
    worker."""
    if registry is None:
        return None
    url = target.split(" ", 1)[-1] if target else None
    by_url = [w for w in registry if url and w.url == url]
    if by_url:
        return by_url[0]
    by_queue = [w for w in registry if w.queue == queue_id(queue_path)]
    return by_queue[0] if len(by_queue) == 1 else None


def dead_letters(client: LoggingServiceV2Client, queue_path: str, since: dt.datetime,
                 until: dt.datetime | None = None, page_size: int = 50,
                 page_token: str = "", *, registry: Registry | None = None,
                 caller: str | None = None) -> Page[DeadLetter]:
    """The queue's tasks that failed for good between ``since`` and ``until``, newest first.

    ``registry`` and ``caller`` (``CALLER_SA``) make each cause's fix name the worker and
    the account.
    """
    entries, token = list_page(client, project_of(queue_path),
                               dead_letters_filter(queue_path, since, until),
                               newest_first=True, page_size=page_size, page_token=page_token)

    def read(entry: LogEntry) -> DeadLetter | None:
        body = payload_of(entry).get("attemptResponseLog") or {}
        status = str(body.get("status") or "OK")
        worker = worker_of(registry, queue_path, body.get("targetAddress"))
        return dead_letter(entry, cause_of(status, worker, caller))

    return Page(_keep(entries, read), token)


def actions(client: LoggingServiceV2Client, project: str, who: str | None = None,
            action: str | None = None, queue: str | None = None, outcome: str | None = None,
            since: dt.datetime | None = None, page_size: int = 50,
            page_token: str = "") -> Page[ActionRecord]:
    """Enqueuer's audit lines, newest first: who did what, when, with what outcome.

    ``who`` is a member (``user:ana@example.com``) or a bare email (a user or a service
    account); ``queue`` a queue ID or full name.
    """
    entries, token = list_page(client, project,
                               actions_filter(who, action, queue, outcome, since),
                               newest_first=True, page_size=page_size, page_token=page_token)
    records = _keep(entries, action_record)
    if queue:
        # ``:`` matches a substring: "queues/q1" is in ".../queues/q10" too.
        wanted = queue_id(queue)
        records = [r for r in records if parts_of(r.target).get("queues") == wanted]
    return Page(records, token)


def attempts_per_minute(client: LoggingServiceV2Client, project: str, since: dt.datetime,
                        queue_path: str | None = None) -> list[MinuteCount]:
    """Attempt responses per minute and status since ``since``, oldest minute first."""
    counts: Counter[tuple[dt.datetime, str]] = Counter()
    for entry in _pages(client, project, minutes_filter(project, since, queue_path),
                        MAX_MINUTE_PAGES):
        record = attempt_record(entry)
        if record is not None and record.event == "response":
            minute = utc(record.time).replace(second=0, microsecond=0)
            counts[(minute, record.status or "OK")] += 1
    return [MinuteCount(minute, status, n) for (minute, status), n in sorted(counts.items())]


def log_sampling(queue: tasks_v2.Queue) -> float:
    """The share of the queue's task operations Cloud Tasks logs: 0.0 when logging is off."""
    return float(queue.stackdriver_logging_config.sampling_ratio or 0.0)


def sampling_fix(queue_path: str) -> str:
    """The gcloud command that logs every task operation of the queue
    (https://cloud.google.com/sdk/gcloud/reference/tasks/queues/update)."""
    parts = parts_of(queue_path)
    return (f"gcloud tasks queues update {parts.get('queues', queue_path)} "
            f"--location={parts.get('locations', 'LOCATION')} --log-sampling-ratio=1.0 "
            f"--project={parts.get('projects', 'PROJECT')}")

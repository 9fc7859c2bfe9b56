"""What the history holds, and how each record is read from a Cloud Logging ``LogEntry``.

Two kinds of entries (see the issue-11 plan, Contract C):

- Cloud Tasks' task-operation log: ``jsonPayload`` is a ``TaskActivityLog`` with the task's
  name and one of ``taskCreationLog``, ``attemptDispatchLog``, ``attemptResponseLog``
  (https://cloud.google.com/tasks/docs/logging); counts are strings (int64 in JSON),
  ``maxAttempts`` a number, ``attemptDuration`` a protobuf Duration (``"0.125s"``).
- Enqueuer's audit lines as Cloud Run ships them: ``jsonPayload.audit`` and
  ``jsonPayload.message`` (``enqueuer_core.access.audit``).

Nothing here does I/O.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from google.cloud.logging_v2.types import LogEntry
from google.protobuf import json_format

T = TypeVar("T")
Event = Literal["created", "dispatched", "response"]
_EVENTS: dict[str, Event] = {"taskCreationLog": "created", "attemptDispatchLog": "dispatched",
                             "attemptResponseLog": "response"}


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; ``next_page_token`` asks for the next ("" on the last)."""

    items: list[T]
    next_page_token: str


@dataclass(frozen=True)
class AttemptRecord:
    time: dt.datetime  # the entry's timestamp (UTC)
    event: Event
    status: str | None  # gRPC code name of a response, else None
    duration_s: float | None
    dispatch_count: int | None
    response_count: int | None
    schedule_time: dt.datetime | None
    retry_time: dt.datetime | None
    target: str | None  # "POST https://…"
    final: bool  # a failed response with no retry: the task is gone for good

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)


@dataclass(frozen=True)
class DeadLetter:
    """A task that failed for good: its last attempt's answer, and what probably caused it."""

    task: str
    queue: str  # full names
    time: dt.datetime
    status: str
    dispatch_count: int
    response_count: int
    max_attempts: int | None
    target: str | None
    cause: str  # the likely cause, in words, with the fix

    @property
    def task_id(self) -> str:
        return self.task.rsplit("/", 1)[-1]

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)


@dataclass(frozen=True)
class ActionRecord:
    """One audit line: who did what to which target, when, and how it ended."""

    time: dt.datetime
    principal: str
    role: str | None
    via: str
    action: str
    target: str
    outcome: str  # ok | refused | failed
    error_code: str | None
    message: str
    worker: str | None
    task: str | None
    idempotency_key: str | None
    count: int | None
    replay_of: str | None
    payload: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)


@dataclass(frozen=True)
class MinuteCount:
    minute: dt.datetime
    status: str
    count: int

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)


def _as_dict(record: object) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in record.__dataclass_fields__:  # type: ignore[attr-defined]
        value = getattr(record, name)
        out[name] = value.isoformat() if isinstance(value, dt.datetime) else value
    return out


# -- reading entries ----------------------------------------------------------------------

def payload_of(entry: LogEntry) -> dict[str, Any]:
    """The entry's ``jsonPayload`` as plain Python (numbers come back as floats)."""
    pb = LogEntry.pb(entry)
    if not pb.HasField("json_payload"):
        return {}
    return json_format.MessageToDict(pb.json_payload)


def entry_time(entry: LogEntry) -> dt.datetime:
    pb = LogEntry.pb(entry)
    if pb.HasField("timestamp"):
        return pb.timestamp.ToDatetime(tzinfo=dt.UTC)
    return pb.receive_timestamp.ToDatetime(tzinfo=dt.UTC)


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(float(value)) if isinstance(value, float) else int(value)
    except (TypeError, ValueError):
        return None


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value).astimezone(dt.UTC)
    except ValueError:
        return None


def _duration(value: Any) -> float | None:
    """A protobuf Duration in JSON (``"0.125s"``) in seconds."""
    if isinstance(value, str) and value.endswith("s"):
        try:
            return float(value[:-1])
        except ValueError:
            return None
    return float(value) if isinstance(value, int | float) else None


def _activity(payload: dict[str, Any]) -> tuple[Event, dict[str, Any]] | None:
    for key, event in _EVENTS.items():
        body = payload.get(key)
        if isinstance(body, dict):
            return event, body
    return None


def attempt_record(entry: LogEntry) -> AttemptRecord | None:
    """One step of a task's life from a task-operation log entry; None for another entry."""
    found = _activity(payload_of(entry))
    if found is None:
        return None
    event, body = found
    status = body.get("status") if event == "response" else None
    if event == "response" and not status:
        status = "OK"  # google.rpc.Code OK is the default value: JSON may leave it out
    retry_time = _time(body.get("retryTime"))
    return AttemptRecord(
        time=entry_time(entry), event=event, status=status,
        duration_s=_duration(body.get("attemptDuration")),
        dispatch_count=_int(body.get("dispatchCount")),
        response_count=_int(body.get("responseCount")),
        schedule_time=_time(body.get("scheduleTime")), retry_time=retry_time,
        target=body.get("targetAddress") or None,
        # A final failure is a response that is not OK with no retry planned (Contract C).
        final=event == "response" and status != "OK" and retry_time is None,
    )


def dead_letter(entry: LogEntry, cause: str) -> DeadLetter | None:
    """A dead letter from a final attempt response; None for any other entry."""
    payload = payload_of(entry)
    body = payload.get("attemptResponseLog")
    task = payload.get("task")
    if not isinstance(body, dict) or not isinstance(task, str):
        return None
    return DeadLetter(
        task=task, queue=task.split("/tasks/", 1)[0], time=entry_time(entry),
        status=body.get("status") or "OK",
        dispatch_count=_int(body.get("dispatchCount")) or 0,
        response_count=_int(body.get("responseCount")) or 0,
        max_attempts=_int(body.get("maxAttempts")),
        target=body.get("targetAddress") or None, cause=cause,
    )


def action_record(entry: LogEntry) -> ActionRecord | None:
    """One of Enqueuer's audit lines; None for an entry without ``jsonPayload.audit``."""
    payload = payload_of(entry)
    audit = payload.get("audit")
    if not isinstance(audit, dict):
        return None

    def text(name: str) -> str | None:
        value = audit.get(name)
        return None if value is None else str(value)

    shipped = audit.get("payload")
    return ActionRecord(
        time=entry_time(entry), principal=text("principal") or "unknown",
        role=text("role"), via=text("via") or "unknown", action=text("action") or "unknown",
        target=text("target") or "", outcome=text("outcome") or "unknown",
        error_code=text("error_code"), message=str(payload.get("message") or ""),
        worker=text("worker"), task=text("task"), idempotency_key=text("idempotency_key"),
        count=_int(audit.get("count")), replay_of=text("replay_of"),
        payload=_ints(shipped) if isinstance(shipped, dict) else None,
    )


def _ints(value: Any) -> Any:
    """JSON numbers come back from a protobuf Struct as floats; whole ones were integers
    in the payload the worker got (``{"n": 1}``, not ``{"n": 1.0}``)."""
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value

"""What CreateTask checks and fills in on a new task, as Cloud Tasks does, before storing it.

Pure: no store, no IAM (``tasks_service.CloudTasksService.CreateTask`` asks those), so the
order of Google's refusals stays in one readable place: the target, the schedule, the
dispatch deadline; then, once the caller may act as the token's account, the fields Cloud
Tasks owns and the size of what it would store.
"""

from __future__ import annotations

import datetime as dt
import secrets
from zoneinfo import ZoneInfo

import grpc
from google.cloud import tasks_v2

from emulator.clock import US, duration, from_timestamp, seconds, to_timestamp
from emulator.dispatcher import USER_AGENT
from emulator.errors import ApiError, invalid
from emulator.store import Task

FULL = tasks_v2.Task.View.FULL.value
MAX_TASK_BYTES = 1_048_569  # measured against Cloud Tasks: larger stored tasks are refused
MAX_SCHEDULE_AHEAD_S = 720 * 3600
MIN_DEADLINE_S, MAX_DEADLINE_S, DEFAULT_DEADLINE_S = 15, 1800, 600
# Cloud Tasks words a too-distant schedule in its own (Pacific) time.
_PACIFIC = ZoneInfo("America/Los_Angeles")
# Output-only fields: whatever a caller sets in them is dropped.
_OUTPUT_ONLY = ("create_time", "dispatch_count", "response_count", "first_attempt",
                "last_attempt", "view")


def check(task: Task, now: int) -> None:
    """Refuse what Cloud Tasks refuses (``ApiError``); default the schedule and deadline."""
    _check_target(task)
    _check_schedule(task, now)
    _check_deadline(task)


def complete(task: Task, queue_name: str, now: int) -> None:
    """The fields Cloud Tasks sets on a task it accepts; refuses one too large to store."""
    for field in _OUTPUT_ONLY:
        task.ClearField(field)
    if not task.name:
        task.name = f"{queue_name}/tasks/{_generated_id()}"
    task.create_time.seconds = now // US  # Cloud Tasks keeps whole seconds here
    headers = task.http_request.headers
    for key in [k for k in headers if k.lower() == "user-agent"]:
        del headers[key]
    headers["User-Agent"] = USER_AGENT
    task.view = FULL
    if task.ByteSize() > MAX_TASK_BYTES:
        raise invalid("Task size too large")


def _check_target(task: Task) -> None:
    if task.HasField("app_engine_http_request"):
        raise ApiError(
            grpc.StatusCode.UNIMPLEMENTED,
            "App Engine tasks are not supported by the emulator: use an http_request.",
        )
    url = task.http_request.url
    if not url:
        raise invalid("HttpRequest.url is required.")
    if not url.startswith(("http://", "https://")):
        raise invalid("HttpTarget.url must start with 'http://' or 'https://'.")


def _check_schedule(task: Task, now: int) -> None:
    if not task.HasField("schedule_time") or from_timestamp(task.schedule_time) < now:
        task.schedule_time.CopyFrom(to_timestamp(now))
        return
    # Cloud Tasks keeps microseconds.
    task.schedule_time.CopyFrom(to_timestamp(from_timestamp(task.schedule_time)))
    if from_timestamp(task.schedule_time) - now > MAX_SCHEDULE_AHEAD_S * US:
        when = dt.datetime.fromtimestamp(task.schedule_time.seconds, _PACIFIC)
        raise invalid(
            f"The Task.scheduleTime, {when.isoformat()}, is too far in the future. "
            "Schedule time must be no more than 720h in the future."
        )


def _check_deadline(task: Task) -> None:
    if not task.HasField("dispatch_deadline"):
        task.dispatch_deadline.CopyFrom(duration(DEFAULT_DEADLINE_S))
        return
    if not MIN_DEADLINE_S <= seconds(task.dispatch_deadline) <= MAX_DEADLINE_S:
        raise invalid("Task.dispatchDeadline must be between [15s, 30m].")


def _generated_id() -> str:
    # Cloud Tasks names unnamed tasks with a long random number.
    return str(secrets.randbelow(9 * 10**18) + 10**18)

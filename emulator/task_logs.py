"""Cloud Tasks' task-operation log entries, built as Google writes them (pure: no I/O).

When a queue's ``stackdriver_logging_config.sampling_ratio`` is above 0, Cloud Tasks writes
"task operations" (CreateTask) and "attempt operations" (AttemptDispatch, AttemptResponse)
to Cloud Logging (https://cloud.google.com/tasks/docs/monitor, "Use Cloud Logging with
queues"); the ratio is "the fraction of operations to write ... 0.0 is the default and means
that no operations are logged" (StackdriverLoggingConfig in google/cloud/tasks/v2/queue.proto).

The entry's shape, from an attemptResponseLog entry recorded from Google (logName
``projects/P/logs/cloudtasks.googleapis.com%2Ftask_operations_log``, resource
``cloud_tasks_queue`` with four labels, severity ERROR for the failed attempt):

    jsonPayload: {
      "@type": "type.googleapis.com/google.cloud.tasks.logging.v1.TaskActivityLog",
      "task": "projects/P/locations/L/queues/Q/tasks/061918363491882526",
      "attemptResponseLog": {
        "attemptDuration": "0.001250s", "dispatchCount": "1", "maxAttempts": 0,
        "responseCount": "0", "retryTime": "2025-09-05T20:39:23.111491Z",
        "scheduleTime": "2025-09-05T20:38:23.096373Z", "status": "UNKNOWN",
        "targetAddress": "POST http://localhost:8000/api/internal/tasks/email",
        "targetType": "HTTP"}}

so counts are int64 (JSON strings), maxAttempts an int32 (a number), times RFC 3339 with
microseconds, durations protobuf's "<seconds>s", the status a google.rpc code name and the
target "METHOD URL". One payload key per operation: ``taskCreationLog``,
``attemptDispatchLog``, ``attemptResponseLog`` (the three keys that scripts reading this
log from Google dispatch on; a recorded deployment trace shows taskCreationLog "OK", then
attemptDispatchLog, then attemptResponseLog "OK" for one task). The
resource labels are ``project_id``, ``location``, ``queue_id`` and ``target_type`` (the
``cloud_tasks_queue`` monitored resource, https://cloud.google.com/monitoring/api/resources).

Known gaps: the TaskActivityLog proto is not public, so the fields of taskCreationLog and
attemptDispatchLog are the ones their response counterpart shows (scheduleTime,
targetAddress, targetType, plus status on creation and dispatchCount on dispatch); Google's
``dispatchReason`` on attemptDispatchLog is not written, its values being unrecorded.
DeleteTask is not logged.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

from google.cloud import tasks_v2

from emulator.log_store import (
    ERROR,
    INFO,
    SEVERITY_NAMES,
    LogRow,
    duration_json,
    insert_id,
    rfc3339,
)
from emulator.names import parse_queue
from emulator.store import Queue, Task

TASK_LOG_ID = "cloudtasks.googleapis.com%2Ftask_operations_log"
ACTIVITY_TYPE = "type.googleapis.com/google.cloud.tasks.logging.v1.TaskActivityLog"
TARGET_TYPE = "HTTP"  # the emulator dispatches HTTP targets only
_METHODS = {m.value: m.name for m in tasks_v2.HttpMethod if m.value}
_COMPACT = (",", ":")
# One encoder for every entry: json.dumps with arguments builds a new encoder per call.
_encode = json.JSONEncoder(separators=_COMPACT).encode


def task_log_name(project: str) -> str:
    return f"projects/{project}/logs/{TASK_LOG_ID}"


@dataclass(frozen=True)
class QueueLog:
    """What every entry of one queue shares, prepared once per queue configuration."""

    ratio: float
    log_name: str
    common: str  # the logName and resource members of the entry's JSON

    @staticmethod
    def of(queue: Queue) -> QueueLog:
        name = parse_queue(queue.name)
        log_name = task_log_name(name.project)
        resource = {"type": "cloud_tasks_queue", "labels": {
            "project_id": name.project, "location": name.location,
            "queue_id": name.queue_id, "target_type": TARGET_TYPE}}
        common = (f'"logName":{json.dumps(log_name)},'
                  f'"resource":{json.dumps(resource, separators=_COMPACT)}')
        return QueueLog(queue.stackdriver_logging_config.sampling_ratio, log_name, common)

    def sampled(self, task_name: str) -> bool:
        """Whether this task's operations are logged: per task, so that a sampled task has
        all of its entries; a hash rather than a coin so that every writer agrees."""
        if self.ratio <= 0:
            return False
        if self.ratio >= 1:
            return True
        return zlib.crc32(task_name.encode()) / 2**32 < self.ratio


def target_address(task: Task) -> str:
    http = task.http_request
    return f"{_METHODS.get(http.http_method, 'POST')} {http.url}"


def _entry(log: QueueLog, ts_us: int, severity: int, task: str, kind: str,
           body: dict[str, object]) -> LogRow:
    ts = rfc3339(ts_us)
    # The JSON text is built here rather than through a proto: this runs for every
    # dispatch, and the dispatch rate with logging on must stay near the rate without.
    text = (f'{{"insertId":"{insert_id()}","jsonPayload":{{"@type":"{ACTIVITY_TYPE}",'
            f'"task":{_encode(task)},"{kind}":{_encode(body)}}},'
            f'{log.common},"timestamp":"{ts}","receiveTimestamp":"{ts}",'
            f'"severity":"{SEVERITY_NAMES[severity]}"}}')
    return log.log_name, ts_us, severity, text


def creation(log: QueueLog, task: Task, now_us: int) -> LogRow:
    """CreateTask accepted the task."""
    return _entry(log, now_us, INFO, task.name, "taskCreationLog", {
        "scheduleTime": rfc3339(task.schedule_time.ToMicroseconds()),
        "status": "OK",
        "targetAddress": target_address(task),
        "targetType": TARGET_TYPE,
    })


def created(queue: Queue, task: Task, now_us: int) -> list[LogRow]:
    """The entries CreateTask writes: a taskCreationLog when the queue samples the task."""
    if queue.stackdriver_logging_config.sampling_ratio <= 0:
        return []  # the common case, decided before any work
    log = QueueLog.of(queue)
    return [creation(log, task, now_us)] if log.sampled(task.name) else []


def dispatch(log: QueueLog, task: Task, now_us: int) -> LogRow:
    """An attempt is sent (``task`` already counts it in dispatch_count)."""
    return _entry(log, now_us, INFO, task.name, "attemptDispatchLog", {
        "dispatchCount": str(task.dispatch_count),
        "scheduleTime": rfc3339(task.last_attempt.schedule_time.ToMicroseconds()),
        "targetAddress": target_address(task),
        "targetType": TARGET_TYPE,
    })


def response(log: QueueLog, task: Task, now_us: int, status: str, retry_us: int | None,
             max_attempts: int) -> LogRow:
    """An attempt ended with ``status`` (a google.rpc code name). ``retry_us``: when the
    next attempt is due; None when there is none (success, or the task failed for good:
    a final failure is a non-OK response without retryTime)."""
    dispatched = task.last_attempt.dispatch_time.ToMicroseconds()
    body: dict[str, object] = {
        "attemptDuration": duration_json(max(0, now_us - dispatched)),
        "dispatchCount": str(task.dispatch_count),
        "maxAttempts": max_attempts,
        "responseCount": str(task.response_count),
    }
    if retry_us is not None:
        body["retryTime"] = rfc3339(retry_us)
    body.update({
        "scheduleTime": rfc3339(task.last_attempt.schedule_time.ToMicroseconds()),
        "status": status,
        "targetAddress": target_address(task),
        "targetType": TARGET_TYPE,
    })
    return _entry(log, now_us, INFO if status == "OK" else ERROR, task.name,
                  "attemptResponseLog", body)

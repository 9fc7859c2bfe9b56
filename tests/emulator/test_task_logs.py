"""Cloud Tasks' task-operation logs, written by the emulator as Google writes them, read back
with the official LoggingServiceV2Client: field by field for a success, a retried failure and
a final failure; nothing when the queue's sampling ratio is 0."""

from __future__ import annotations

import datetime as dt
import re

import grpc
import pytest
from google.cloud import tasks_v2
from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
from google.cloud.logging_v2.services.logging_service_v2.transports import (
    LoggingServiceV2GrpcTransport,
)
from google.cloud.logging_v2.types import LogEntry
from google.logging.type import log_severity_pb2

from tests.emulator.harness import (
    LOCATION,
    PROJECT,
    fast_retry,
    http_task,
    queue_name,
    start_emulator,
    wait_until,
)

TASK_LOG = f"projects/{PROJECT}/logs/cloudtasks.googleapis.com%2Ftask_operations_log"
ACTIVITY = "type.googleapis.com/google.cloud.tasks.logging.v1.TaskActivityLog"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3}|\.\d{6})?Z$")
DURATION = re.compile(r"^\d+(\.\d{3}|\.\d{6})?s$")
INFO, ERROR = log_severity_pb2.INFO, log_severity_pb2.ERROR


@pytest.fixture(scope="module")
def logs(emulator) -> LoggingServiceV2Client:
    channel = grpc.insecure_channel(emulator.target)
    return LoggingServiceV2Client(transport=LoggingServiceV2GrpcTransport(channel=channel))


@pytest.fixture
def logged_queue(make_queue):
    def make(**retry: object) -> str:
        return make_queue(retry_config=fast_retry(**retry),
                          stackdriver_logging_config={"sampling_ratio": 1.0})
    return make


def entries_of(logs: LoggingServiceV2Client, task: str, count: int) -> list[LogEntry]:
    """The task's entries, oldest first, once there are ``count`` of them."""
    def read() -> list[LogEntry] | None:
        got = list(logs.list_log_entries(request={
            "resource_names": [f"projects/{PROJECT}"],
            "filter": f'logName="{TASK_LOG}" AND jsonPayload.task="{task}"'}))
        assert len(got) <= count, [dict(e.json_payload) for e in got]
        return got if len(got) == count else None
    if count == 0:
        return read() or []
    return wait_until(read, timeout=15, what=f"{count} log entries of {task}")


def body(entry: LogEntry, kind: str) -> dict[str, object]:
    """The entry's one operation log, checking what every entry of the log has."""
    assert entry.log_name == TASK_LOG
    assert entry.resource.type == "cloud_tasks_queue"
    payload = dict(entry.json_payload)
    assert set(payload) == {"@type", "task", kind}
    assert payload["@type"] == ACTIVITY
    assert entry.insert_id and entry.receive_timestamp == entry.timestamp
    return dict(payload[kind])


def ts(text: object) -> dt.datetime:
    assert isinstance(text, str) and RFC3339.match(text), text
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_success_logs_creation_dispatch_and_response(client, logs, logged_queue, receiver):
    q = logged_queue(max_attempts=3)
    url = receiver.url + "/ok"
    task = client.create_task(parent=q, task=http_task(url)).name
    receiver.at("/ok")
    created, dispatched, responded = entries_of(logs, task, 3)
    for e in (created, dispatched, responded):
        assert dict(e.resource.labels) == {"project_id": PROJECT, "location": LOCATION,
                                           "queue_id": q.rsplit("/", 1)[1],
                                           "target_type": "HTTP"}
        assert e.json_payload["task"] == task
        assert e.severity == INFO
    assert created.timestamp <= dispatched.timestamp <= responded.timestamp

    c = body(created, "taskCreationLog")
    assert c == {"scheduleTime": c["scheduleTime"], "status": "OK",
                 "targetAddress": f"POST {url}", "targetType": "HTTP"}
    schedule = ts(c["scheduleTime"])
    assert abs(schedule - created.timestamp) < dt.timedelta(seconds=1)

    d = body(dispatched, "attemptDispatchLog")
    assert d == {"dispatchCount": "1", "scheduleTime": c["scheduleTime"],
                 "targetAddress": f"POST {url}", "targetType": "HTTP"}

    r = body(responded, "attemptResponseLog")
    assert DURATION.match(r.pop("attemptDuration"))
    assert r == {"dispatchCount": "1", "maxAttempts": 3, "responseCount": "1",
                 "scheduleTime": c["scheduleTime"], "status": "OK",
                 "targetAddress": f"POST {url}", "targetType": "HTTP"}  # no retryTime


def test_retried_then_final_failure(client, logs, logged_queue, receiver):
    q = logged_queue(max_attempts=3)
    receiver.respond("/fails", [503, 404, 500])
    url = receiver.url + "/fails"
    task = client.create_task(parent=q, task=http_task(url)).name
    receiver.at("/fails", 3)
    got = entries_of(logs, task, 7)
    kinds = [next(k for k in e.json_payload if k.endswith("Log")) for e in got]
    assert kinds == ["taskCreationLog"] + ["attemptDispatchLog", "attemptResponseLog"] * 3
    dispatches = [body(e, "attemptDispatchLog") for e in got[1::2]]
    responses = [body(e, "attemptResponseLog") for e in got[2::2]]
    assert [e.severity for e in got] == [INFO, INFO, ERROR, INFO, ERROR, INFO, ERROR]
    assert [r["status"] for r in responses] == ["UNAVAILABLE", "NOT_FOUND", "INTERNAL"]
    assert [r["dispatchCount"] for r in responses] == ["1", "2", "3"]
    assert [r["responseCount"] for r in responses] == ["1", "2", "3"]
    assert [d["dispatchCount"] for d in dispatches] == ["1", "2", "3"]
    assert {r["maxAttempts"] for r in responses} == {3}
    assert {r["targetAddress"] for r in responses} == {f"POST {url}"}
    for r in responses:
        assert DURATION.match(str(r["attemptDuration"]))
    # A retried failure says when the next attempt is due: that attempt's scheduleTime.
    for failed, nxt in zip(responses[:2], dispatches[1:], strict=True):
        assert failed["retryTime"] == nxt["scheduleTime"]
        assert ts(failed["retryTime"]) > ts(failed["scheduleTime"])
    # The final failure: not OK, and no retryTime.
    assert "retryTime" not in responses[2]


def test_connection_failure_has_no_response(client, logs, logged_queue):
    q = logged_queue(max_attempts=1)
    task = client.create_task(parent=q, task=http_task("http://127.0.0.1:9/closed")).name
    *_, responded = entries_of(logs, task, 3)
    r = body(responded, "attemptResponseLog")
    assert r["status"] == "UNAVAILABLE" and r["responseCount"] == "0"
    assert "retryTime" not in r and responded.severity == ERROR


def test_run_task_logs_its_dispatch(client, logs, make_queue, receiver):
    q = make_queue(paused=True, stackdriver_logging_config={"sampling_ratio": 1.0})
    task = client.create_task(parent=q, task=http_task(receiver.url + "/run")).name
    client.run_task(name=task)
    receiver.at("/run")
    _, dispatched, responded = entries_of(logs, task, 3)
    assert body(dispatched, "attemptDispatchLog")["dispatchCount"] == "1"
    assert body(responded, "attemptResponseLog")["status"] == "OK"


def test_nothing_is_written_when_sampling_is_0(client, logs, make_queue, receiver):
    q = make_queue()  # Google's default: stackdriver_logging_config.sampling_ratio 0
    assert client.get_queue(name=q).stackdriver_logging_config.sampling_ratio == 0
    receiver.respond("/quiet", [500])
    task = client.create_task(parent=q, task=http_task(receiver.url + "/quiet")).name
    receiver.at("/quiet", 2)
    wait_until(lambda: not list(client.list_tasks(parent=q)), what="task done")
    # A logged task made afterwards shows that the writes before it have landed.
    marker_q = make_queue(stackdriver_logging_config={"sampling_ratio": 1.0})
    marker = client.create_task(parent=marker_q, task=http_task(receiver.url + "/m")).name
    entries_of(logs, marker, 3)
    assert entries_of(logs, task, 0) == []


def test_a_ratio_between_0_and_1_samples_per_task(client, logs, make_queue, receiver):
    q = make_queue(paused=True, stackdriver_logging_config={"sampling_ratio": 0.5})
    names = [client.create_task(parent=q, task=http_task(receiver.url + "/half")).name
             for _ in range(40)]
    got = list(logs.list_log_entries(request={
        "resource_names": [f"projects/{PROJECT}"], "page_size": 1000,
        "filter": f'logName="{TASK_LOG}" AND resource.labels.queue_id="{q.rsplit("/", 1)[1]}"'}))
    logged = {e.json_payload["task"] for e in got}
    assert 5 <= len(logged) <= 35 and logged <= set(names)


def test_log_sampling_ratio_in_the_configuration(tmp_path, receiver):
    em = start_emulator(tmp_path, '[[queues]]\nname = "from-file"\nlog_sampling_ratio = 1.0\n')
    try:
        client = em.client()
        q = queue_name("from-file")
        assert client.get_queue(name=q).stackdriver_logging_config.sampling_ratio == 1.0
        channel = grpc.insecure_channel(em.target)
        logs = LoggingServiceV2Client(transport=LoggingServiceV2GrpcTransport(channel=channel))
        task = client.create_task(parent=q, task=http_task(receiver.url + "/f")).name
        kinds = [next(iter(k for k in e.json_payload if k.endswith("Log")))
                 for e in entries_of(logs, task, 3)]
        assert kinds == ["taskCreationLog", "attemptDispatchLog", "attemptResponseLog"]
    finally:
        assert em.stop() == 0, "".join(em.stderr)


def test_the_queue_shows_its_sampling_ratio(client, make_queue):
    q = make_queue(stackdriver_logging_config={"sampling_ratio": 0.25})
    assert client.get_queue(name=q).stackdriver_logging_config.sampling_ratio == 0.25
    queue = tasks_v2.Queue(name=q, stackdriver_logging_config={"sampling_ratio": 1.0})
    updated = client.update_queue(queue=queue, update_mask={
        "paths": ["stackdriver_logging_config.sampling_ratio"]})
    assert updated.stackdriver_logging_config.sampling_ratio == 1.0


def test_a_ratio_above_1_in_the_configuration_is_refused(tmp_path):
    with pytest.raises(RuntimeError, match=r"queues\.0\.log_sampling_ratio: .*less than or "
                                           r"equal to 1"):
        start_emulator(tmp_path, '[[queues]]\nname = "q"\nlog_sampling_ratio = 2\n')

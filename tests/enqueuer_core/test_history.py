"""enqueuer_core.history: records read from Logging entries, the filters, replay keys, and
(through the real emulator) a task's attempts, dead letters, activity and replay."""

from __future__ import annotations

import datetime as dt

import pytest
from google.cloud import tasks_v2
from google.cloud.logging_v2.types import LogEntry

from enqueuer_core import history
from enqueuer_core.errors import InvalidRequest
from enqueuer_core.history import queries, records

P, L = "test-project", "us-central1"
QUEUE = f"projects/{P}/locations/{L}/queues/queue-brain"
TASK = f"{QUEUE}/tasks/abc-report-1"
TASK_LOG = f"projects/{P}/logs/cloudtasks.googleapis.com%2Ftask_operations_log"
T0 = dt.datetime(2026, 12, 1, 10, 0, 0, tzinfo=dt.UTC)
ACTIVITY = "type.googleapis.com/google.cloud.tasks.logging.v1.TaskActivityLog"


def task_entry(kind: str, body: dict, severity: int = 200, at: dt.datetime = T0) -> LogEntry:
    """A task-operation log entry in the shape Contract C gives (Google's)."""
    return LogEntry(
        log_name=TASK_LOG, severity=severity, timestamp=at,
        resource={"type": "cloud_tasks_queue", "labels": {
            "project_id": P, "location": L, "queue_id": "queue-brain", "target_type": "HTTP"}},
        json_payload={"@type": ACTIVITY, "task": TASK, kind: body})


def audit_entry(at: dt.datetime = T0, **audit: object) -> LogEntry:
    fields = {"principal": "user:ana@example.com", "role": "operator", "via": "dashboard",
              "action": "enqueue", "target": QUEUE, "outcome": "ok", "error_code": None,
              "request_id": "r1", **audit}
    return LogEntry(
        log_name=f"projects/{P}/logs/run.googleapis.com%2Fstdout", severity=300, timestamp=at,
        labels={"log": "enqueuer-audit", "action": str(fields["action"]),
                "outcome": str(fields["outcome"])},
        json_payload={"message": "enqueue brain by user:ana@example.com: ok",
                      "audit": fields})


# -- records from entries ---------------------------------------------------------------------

def test_a_retried_failure_and_a_final_one_read_as_attempts() -> None:
    retried = records.attempt_record(task_entry("attemptResponseLog", {
        "attemptDuration": "0.125s", "dispatchCount": "1", "responseCount": "1",
        "maxAttempts": 2, "retryTime": "2026-12-01T10:00:01.5Z",
        "scheduleTime": "2026-12-01T10:00:00Z", "status": "UNAVAILABLE",
        "targetAddress": "POST http://127.0.0.1:8081/process", "targetType": "HTTP"}, 500))
    assert retried is not None
    assert (retried.event, retried.status, retried.duration_s) == ("response", "UNAVAILABLE",
                                                                   0.125)
    assert (retried.dispatch_count, retried.response_count) == (1, 1)
    assert retried.retry_time == dt.datetime(2026, 12, 1, 10, 0, 1, 500000, tzinfo=dt.UTC)
    assert retried.target == "POST http://127.0.0.1:8081/process"
    assert retried.time == T0 and not retried.final

    final = records.attempt_record(task_entry("attemptResponseLog", {
        "dispatchCount": "2", "responseCount": "2", "maxAttempts": 2, "status": "NOT_FOUND"},
        500))
    assert final is not None and final.final and final.retry_time is None

    created = records.attempt_record(task_entry("taskCreationLog", {}))
    dispatched = records.attempt_record(task_entry("attemptDispatchLog", {
        "dispatchCount": "1", "scheduleTime": "2026-12-01T10:00:00Z"}))
    assert created and created.event == "created" and created.status is None
    assert dispatched and dispatched.event == "dispatched" and not dispatched.final
    # Protobuf's JSON leaves out a default value: a response without a status was OK.
    ok = records.attempt_record(task_entry("attemptResponseLog", {"dispatchCount": "1"}))
    assert ok and ok.status == "OK" and not ok.final


def test_a_final_failure_reads_as_a_dead_letter_with_its_cause() -> None:
    entry = task_entry("attemptResponseLog", {
        "dispatchCount": "2", "responseCount": "2", "maxAttempts": 2, "status": "NOT_FOUND",
        "targetAddress": "POST http://127.0.0.1:8081/process"}, 500)
    dead = records.dead_letter(entry, history.cause_of("NOT_FOUND"))
    assert dead is not None
    assert (dead.task, dead.queue, dead.task_id) == (TASK, QUEUE, "abc-report-1")
    assert (dead.status, dead.dispatch_count, dead.max_attempts) == ("NOT_FOUND", 2, 2)
    assert "404" in dead.cause and "URL_" in dead.cause  # the likely cause and its fix
    assert dead.to_dict()["time"] == "2026-12-01T10:00:00+00:00"


def test_unavailable_names_both_causes_it_may_have() -> None:
    cause = history.cause_of("UNAVAILABLE")
    assert "cannot be reached" in cause and "503" in cause and "Fix:" in cause
    assert "refused the token" in history.cause_of("UNAUTHENTICATED")


def test_an_audit_line_reads_as_an_action() -> None:
    entry = audit_entry(worker="brain", idempotency_key="report-1", task=TASK,
                        payload={"bytes": 9, "sha256": "ab", "content": {"n": 1, "x": 1.5}},
                        replay_of=f"{QUEUE}/tasks/old")
    action = records.action_record(entry)
    assert action is not None
    assert (action.principal, action.role, action.via, action.action, action.outcome) == (
        "user:ana@example.com", "operator", "dashboard", "enqueue", "ok")
    assert action.message == "enqueue brain by user:ana@example.com: ok"
    assert (action.worker, action.task, action.idempotency_key) == ("brain", TASK, "report-1")
    assert action.replay_of == f"{QUEUE}/tasks/old" and action.error_code is None
    # Whole numbers come back as the integers the worker got, not 1.0.
    assert action.payload == {"bytes": 9, "sha256": "ab", "content": {"n": 1, "x": 1.5}}
    assert records.action_record(task_entry("taskCreationLog", {})) is None


# -- the filters, exactly as Contract B writes them --------------------------------------------

def test_filters_are_contract_b_text() -> None:
    assert queries.attempts_filter(TASK) == (
        f'logName="{TASK_LOG}" AND jsonPayload.task="{TASK}"')
    assert queries.dead_letters_filter(QUEUE, T0) == (
        f'logName="{TASK_LOG}" AND resource.labels.queue_id="queue-brain" AND '
        'resource.labels.location="us-central1" AND severity>=ERROR AND '
        "jsonPayload.attemptResponseLog:* AND NOT jsonPayload.attemptResponseLog.retryTime:* "
        'AND timestamp>="2026-12-01T10:00:00Z"')
    assert queries.dead_letters_filter(QUEUE, T0, T0 + dt.timedelta(hours=1)).endswith(
        ' AND timestamp<="2026-12-01T11:00:00Z"')
    assert queries.actions_filter() == 'labels.log="enqueuer-audit"'
    assert queries.actions_filter(who="user:ana@example.com", action="enqueue",
                                  queue=QUEUE, outcome="ok", since=T0) == (
        'labels.log="enqueuer-audit" AND jsonPayload.audit.principal="user:ana@example.com" '
        'AND jsonPayload.audit.action="enqueue" AND jsonPayload.audit.target:"queues/'
        'queue-brain" AND jsonPayload.audit.outcome="ok" AND '
        'timestamp>="2026-12-01T10:00:00Z"')
    # A bare email: a person or an account.
    assert queries.actions_filter(who="ana@example.com").endswith(
        '(jsonPayload.audit.principal="user:ana@example.com" OR '
        'jsonPayload.audit.principal="serviceAccount:ana@example.com")')
    assert queries.minutes_filter(P, T0, QUEUE) == (
        f'logName="{TASK_LOG}" AND jsonPayload.attemptResponseLog:* AND '
        'timestamp>="2026-12-01T10:00:00Z" AND resource.labels.queue_id="queue-brain"')
    assert queries.enqueue_line_filter(TASK) == (
        'labels.log="enqueuer-audit" AND jsonPayload.audit.action="enqueue" AND '
        f'jsonPayload.audit.task="{TASK}" AND jsonPayload.audit.outcome="ok"')
    # Quotes and backslashes in a value cannot end the string early.
    assert queries.quote('a"b\\c') == '"a\\"b\\\\c"'


def test_a_queue_that_is_not_a_full_name_is_refused_saying_what_is_expected() -> None:
    with pytest.raises(InvalidRequest, match="projects/PROJECT/locations/LOCATION/queues"):
        queries.dead_letters_filter("queue-brain", T0)


def test_log_sampling_and_its_fix() -> None:
    assert history.log_sampling(tasks_v2.Queue()) == 0.0
    on = tasks_v2.Queue(stackdriver_logging_config=tasks_v2.StackdriverLoggingConfig(
        sampling_ratio=1.0))
    assert history.log_sampling(on) == 1.0
    assert history.sampling_fix(QUEUE) == (
        "gcloud tasks queues update queue-brain --location=us-central1 "
        "--log-sampling-ratio=1.0 --project=test-project")


# -- replay keys and --since ----------------------------------------------------------------------

def test_replay_keys_are_derived_deterministically_and_fit() -> None:
    assert history.replay_key("report-1") == "report-1-r1"
    assert history.replay_key("report-1-r1") == "report-1-r2"
    assert history.replay_key("report-1-r9") == "report-1-r10"
    assert history.replay_key("-r1") == "-r1-r1"  # nothing before the suffix: a plain key
    long_key = "k" * 500
    derived = history.replay_key(long_key)
    assert len(derived) == 500 and derived.endswith("-r1")
    assert derived == history.replay_key(long_key)
    assert history.replay_key(derived).endswith("-r2") and len(history.replay_key(derived)) <= 500
    assert history.replay_key("k" * 499 + "x") != derived  # a different key, another replay


def test_since_takes_spans_and_rfc3339_times() -> None:
    now = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
    assert history.parse_since("30m", now) == now - dt.timedelta(minutes=30)
    assert history.parse_since("24h", now) == now - dt.timedelta(hours=24)
    assert history.parse_since("7d", now) == now - dt.timedelta(days=7)
    assert history.parse_since("2026-12-01T00:00:00Z", now) == dt.datetime(
        2026, 12, 1, tzinfo=dt.UTC)
    assert history.parse_since("2026-12-01T01:00:00+01:00", now) == dt.datetime(
        2026, 12, 1, tzinfo=dt.UTC)
    for bad in ("yesterday", "24", "2026-12-01", "2026-12-01T00:00:00", "-3h"):
        with pytest.raises(InvalidRequest, match="30m, 24h, 7d"):
            history.parse_since(bad, now)
    assert history.rfc3339(dt.datetime(2026, 12, 1, 0, 0, 0, 1500, tzinfo=dt.UTC)) == (
        "2026-12-01T00:00:00.001500Z")

"""enqueuer_core.history: records read from Logging entries, the filters, replay keys, and
(through the real emulator) a task's attempts, dead letters, activity and replay."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import uuid
from pathlib import Path

import grpc
import pytest
from google.cloud import tasks_v2
from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
from google.cloud.logging_v2.services.logging_service_v2.transports import (
    LoggingServiceV2GrpcTransport,
)
from google.cloud.logging_v2.types import LogEntry, WriteLogEntriesRequest

from enqueuer_core import history
from enqueuer_core.access import audit
from enqueuer_core.build import EnqueueRequest
from enqueuer_core.clients import logging_client
from enqueuer_core.config import load_settings
from enqueuer_core.enqueue import Enqueuer
from enqueuer_core.errors import DuplicateTask, InvalidRequest, PermissionDenied
from enqueuer_core.history import queries, records
from enqueuer_core.log_shipping import entry_from_line
from tests.acting import as_admin
from tests.emulator.harness import (
    LOCATION,
    PROJECT,
    RunningEmulator,
    fast_retry,
    http_task,
    start_emulator,
    wait_until,
)

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
    # A bare email: the member the access module makes of it, a person or an account.
    assert queries.actions_filter(who="ana@example.com").endswith(
        ' AND jsonPayload.audit.principal="user:ana@example.com"')
    assert queries.actions_filter(who="intake@p.iam.gserviceaccount.com").endswith(
        ' AND jsonPayload.audit.principal="serviceAccount:intake@p.iam.gserviceaccount.com"')
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


# -- through the real emulator ----------------------------------------------------------------

CALLER = f"caller@{PROJECT}.iam.gserviceaccount.com"
LOGGED = tasks_v2.StackdriverLoggingConfig(sampling_ratio=1.0)
BRAIN = {"system_instructions_doc_id": "s", "base_prompt_doc_id": "b", "input_doc_id": "i",
         "output_doc_id": "o"}
_paths = itertools.count()


@pytest.fixture(scope="module")
def logs(emulator: RunningEmulator) -> LoggingServiceV2Client:
    return logging_client(load_settings(cloud_tasks_emulator_host=emulator.target,
                                        project_id=PROJECT, tasks_region=LOCATION,
                                        caller_sa=CALLER))


def fresh_path() -> str:
    return f"/h{next(_paths)}-{os.getpid()}"


def ship(logs: LoggingServiceV2Client, lines: list[str], project: str = PROJECT) -> None:
    """The audit lines into Logging, as the dev stack ships the API's stdout (Cloud Run's
    rule: enqueuer_core.log_shipping)."""
    entries = [entry_from_line(line, project=project, location=LOCATION,
                               service="enqueuer-api", revision="enqueuer-api-00001")
               for line in lines]
    logs.write_log_entries(request=WriteLogEntriesRequest(entries=entries))


def audit_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("{") and '"audit"' in line]


def test_a_tasks_attempts_from_real_dispatches(client, make_queue, worker, logs) -> None:
    queue = make_queue(stackdriver_logging_config=LOGGED)
    path = fresh_path()
    worker.respond(path, [500])  # fails once, then succeeds
    task = client.create_task(parent=queue, task=http_task(worker.url + path))
    worker.at(path, 2)
    attempts = wait_until(lambda: (a := history.task_attempts(logs, task.name))
                          and a[-1].status == "OK" and a, what="the second response logged")
    assert [(a.event, a.status) for a in attempts] == [
        ("created", None), ("dispatched", None), ("response", "INTERNAL"),
        ("dispatched", None), ("response", "OK")]
    failed, ok = attempts[2], attempts[4]
    assert failed.retry_time is not None and not failed.final and failed.dispatch_count == 1
    assert ok.dispatch_count == 2 and ok.response_count == 2 and not ok.final
    assert ok.duration_s is not None and 0 < ok.duration_s < 5
    assert ok.target == f"POST {worker.url}{path}"
    assert [a.time for a in attempts] == sorted(a.time for a in attempts)
    # A queue that logs nothing has no history, and says how to turn it on.
    quiet = make_queue()
    silent = client.create_task(parent=quiet, task=http_task(worker.url + fresh_path()))
    assert history.task_attempts(logs, silent.name) == []
    assert history.log_sampling(client.get_queue(name=quiet)) == 0.0
    assert history.log_sampling(client.get_queue(name=queue)) == 1.0


class Counting(grpc.UnaryUnaryClientInterceptor):
    def __init__(self) -> None:
        self.calls = 0

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        self.calls += 1
        return continuation(details, request)


def test_dead_letters_newest_first_paged_with_their_cause(emulator, client, make_queue,
                                                          worker, logs) -> None:
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    queue = make_queue(stackdriver_logging_config=LOGGED, retry_config=fast_retry(
        max_attempts=2))
    dead, alive = fresh_path(), fresh_path()
    worker.respond(dead, [404] * 6)
    names = [client.create_task(parent=queue, task=http_task(worker.url + dead)).name
             for _ in range(3)]
    client.create_task(parent=queue, task=http_task(worker.url + alive))
    worker.at(dead, 6)
    worker.at(alive, 1)
    wait_until(lambda: len(history.dead_letters(logs, queue, start).items) == 3,
               what="three dead letters logged")
    counting = Counting()
    calls = LoggingServiceV2Client(transport=LoggingServiceV2GrpcTransport(
        channel=grpc.intercept_channel(grpc.insecure_channel(emulator.target), counting)))
    first = history.dead_letters(calls, queue, start, page_size=2)
    assert counting.calls == 1  # one ListLogEntries call per page, though more pages exist
    second = history.dead_letters(logs, queue, start, page_size=2,
                                  page_token=first.next_page_token)
    assert len(first.items) == 2 and first.next_page_token and len(second.items) == 1
    found = first.items + second.items
    assert second.next_page_token == ""
    assert sorted(d.task for d in found) == sorted(names)  # the job that succeeded is not one
    assert [d.time for d in found] == sorted((d.time for d in found), reverse=True)
    one = found[0]
    assert (one.status, one.dispatch_count, one.max_attempts, one.queue) == (
        "NOT_FOUND", 2, 2, queue)
    assert "404" in one.cause and "URL_" in one.cause
    # Outside the window: none.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    assert history.dead_letters(logs, queue, later).items == []
    assert history.dead_letters(logs, queue, start - dt.timedelta(hours=1),
                                until=start).items == []


def test_activity_from_audit_lines_filtered_and_paged(logs) -> None:
    project = f"hist-{uuid.uuid4().hex[:10]}"
    q1, q10 = (f"projects/{project}/locations/{LOCATION}/queues/{q}" for q in ("q1", "q10"))
    now = dt.datetime.now(dt.UTC)

    def line(minutes_ago: int, principal: str, action: str, target: str, outcome: str = "ok",
             **details: object) -> str:
        entry = audit.audit_line(principal=principal, role="operator", via="dashboard",
                                 action=action, target=target, outcome=outcome,
                                 request_id=uuid.uuid4().hex,
                                 now=now - dt.timedelta(minutes=minutes_ago), **details)
        return json.dumps(entry)

    ship(logs, [
        line(50, "user:ana@example.com", "enqueue", q1, worker="brain", idempotency_key="k1",
             task=f"{q1}/tasks/t1"),
        line(40, "user:bob@example.com", "pause", q10),
        line(30, "user:ana@example.com", "delete", f"{q1}/tasks/t2"),
        line(20, "serviceAccount:intake@p.iam.gserviceaccount.com", "enqueue", q10,
             worker="brain"),
        line(10, "user:bob@example.com", "purge", q1, "refused", error_code="forbidden"),
    ], project)
    everything = history.actions(logs, project)
    assert [a.action for a in everything.items] == ["purge", "enqueue", "delete", "pause",
                                                    "enqueue"]  # newest first
    newest = everything.items[0]
    assert (newest.principal, newest.outcome, newest.error_code, newest.role, newest.via) == (
        "user:bob@example.com", "refused", "forbidden", "operator", "dashboard")
    assert newest.message == "purge " + q1 + " by user:bob@example.com: refused (forbidden)"
    oldest = everything.items[-1]
    assert (oldest.worker, oldest.idempotency_key, oldest.task) == ("brain", "k1",
                                                                   f"{q1}/tasks/t1")

    def actions(**filters: object) -> list[tuple[str, str]]:
        return [(a.principal.split(":")[1].split("@")[0], a.action)
                for a in history.actions(logs, project, **filters).items]

    assert actions(who="user:ana@example.com") == [("ana", "delete"), ("ana", "enqueue")]
    assert actions(who="intake@p.iam.gserviceaccount.com") == [("intake", "enqueue")]
    assert actions(action="enqueue") == [("intake", "enqueue"), ("ana", "enqueue")]
    # q1, its task included, and not q10 although "queues/q1" is in its name.
    assert actions(queue=q1) == [("bob", "purge"), ("ana", "delete"), ("ana", "enqueue")]
    assert actions(queue="q10") == [("intake", "enqueue"), ("bob", "pause")]
    assert actions(outcome="refused") == [("bob", "purge")]
    assert actions(since=now - dt.timedelta(minutes=25)) == [("bob", "purge"),
                                                             ("intake", "enqueue")]
    first = history.actions(logs, project, page_size=3)
    rest = history.actions(logs, project, page_size=3, page_token=first.next_page_token)
    assert len(first.items) == 3 and first.next_page_token
    assert [a.time for a in first.items + rest.items] == [a.time for a in everything.items]
    assert rest.next_page_token == ""


def test_a_refused_read_names_the_permission_and_the_role(tmp_path: Path) -> None:
    em = start_emulator(tmp_path, '[iam]\nenforce = true\n\n[[iam.bindings]]\n'
                        'role = "roles/logging.viewer"\nmembers = ["user:viewer@example.com"]\n')
    try:
        settings = load_settings(cloud_tasks_emulator_host=em.target, project_id=PROJECT,
                                 tasks_region=LOCATION, caller_sa=CALLER)
        with pytest.raises(PermissionDenied) as refused:
            history.task_attempts(logging_client(settings), TASK)
        message = refused.value.message
        assert "logging.logEntries.list" in message and "roles/logging.viewer" in message
        assert (f"gcloud projects add-iam-policy-binding {PROJECT} " in message
                and "--role=roles/logging.viewer" in message)
        assert refused.value.http_status == 403 and refused.value.exit_code == 4
        # With the role, the same read answers.
        viewer = logging_client(settings, acting_as="user:viewer@example.com")
        assert history.actions(viewer, PROJECT).items == []
    finally:
        assert em.stop() == 0, "".join(em.stderr)


@pytest.fixture
def replaying(emulator, client, make_queue, worker, logs):
    """An Enqueuer whose brain worker is the receiver, on a logged queue that gives up after
    two attempts, keeping payloads in its audit lines (AUDIT_PAYLOADS=full)."""
    queue = make_queue(stackdriver_logging_config=LOGGED,
                       retry_config=fast_retry(max_attempts=2))
    path = fresh_path()
    settings = load_settings(
        cloud_tasks_emulator_host=emulator.target, project_id=PROJECT, tasks_region=LOCATION,
        caller_sa=CALLER, url_brain=worker.url + path, queue_brain=queue.rsplit("/", 1)[1],
        audit_payloads="full")
    return Enqueuer(settings, client=client), path, queue


def test_replay_of_a_dead_job_reaches_the_worker_with_the_new_key(
        replaying, worker, logs, capsys) -> None:
    enqueuer, path, queue = replaying
    worker.respond(path, [503, 503])  # dies; its replay then succeeds
    job = EnqueueRequest(service="brain", payload=BRAIN, idempotency_key="report-1")
    dead = enqueuer.enqueue(job, as_admin())
    ship(logs, audit_lines(capsys.readouterr().err))
    worker.at(path, 2)
    wait_until(lambda: history.dead_letters(logs, queue, T0).items, what="the dead letter")

    source = history.replay_source(logs, dead.task, enqueuer.registry)
    assert (source.worker, source.payload, source.idempotency_key, source.new_key,
            source.why_not) == ("brain", BRAIN, "report-1", "report-1-r1", None)
    result = history.replay(enqueuer, logs, dead.task, as_admin())
    assert result.idempotency_key == "report-1-r1" and result.task == source.new_task
    got = worker.at(path, 3)[-1]
    assert json.loads(got.body) == BRAIN
    assert got.header("X-Idempotency-Key") == "report-1-r1"
    assert got.header("X-CloudTasks-TaskName") == result.task.rsplit("/", 1)[1]
    [line] = audit_lines(capsys.readouterr().err)
    assert json.loads(line)["audit"]["replay_of"] == dead.task  # linked to the dead task

    # Twice: refused as a duplicate naming the first replay, and no second job.
    with pytest.raises(DuplicateTask) as twice:
        history.replay(enqueuer, logs, dead.task, as_admin())
    assert result.task in twice.value.message and "report-1-r1" in twice.value.message
    assert twice.value.http_status == 409
    # Past Cloud Tasks' memory of names, the first replay's audit line refuses it too.
    ship(logs, [line])
    with pytest.raises(DuplicateTask, match=r"replayed already by user:"):
        history.replay(enqueuer, logs, dead.task, as_admin())
    # A replay of the replay takes the next key.
    assert history.replay_source(logs, result.task, enqueuer.registry).new_key == (
        "report-1-r2")


def test_without_the_payload_on_record_replay_says_why_and_edit_and_replay_works(
        replaying, worker, logs, capsys) -> None:
    enqueuer, _, queue = replaying
    hashing = Enqueuer(enqueuer.settings.model_copy(update={"audit_payloads": "hash"}),
                       client=enqueuer.client)
    job = EnqueueRequest(service="brain", payload=BRAIN, idempotency_key="hashed-1")
    task = hashing.enqueue(job, as_admin()).task
    ship(logs, audit_lines(capsys.readouterr().err))
    source = history.replay_source(logs, task, enqueuer.registry)
    assert source.payload is None and source.worker == "brain"
    assert "AUDIT_PAYLOADS=full" in (source.why_not or "")
    assert "edit and replay" in (source.why_not or "")
    with pytest.raises(InvalidRequest, match="AUDIT_PAYLOADS=full"):
        history.replay(enqueuer, logs, task, as_admin())
    edited = {**BRAIN, "input_doc_id": "fixed"}
    result = history.replay(enqueuer, logs, task, as_admin(), payload=edited)
    got = worker.wait_for(lambda rs: any(r.header("X-Idempotency-Key") == "hashed-1-r1"
                                         for r in rs))
    assert json.loads(next(r for r in got if r.header("X-Idempotency-Key") == "hashed-1-r1"
                           ).body) == edited
    assert result.idempotency_key == "hashed-1-r1"
    # A task nobody enqueued through Enqueuer: nothing on record to replay from.
    unknown = history.replay_source(logs, f"{queue}/tasks/nobody", enqueuer.registry)
    assert "enqueue is not on record" in (unknown.why_not or "") and unknown.new_key == "nobody-r1"

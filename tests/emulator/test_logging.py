"""Cloud Logging v2 in the emulator, through the official LoggingServiceV2Client over an
insecure channel: writing with the request's defaults, listing in both orders over pages,
retention, Google's INVALID_ARGUMENT and PERMISSION_DENIED, and the filter shapes Enqueuer's
history queries use."""

from __future__ import annotations

import datetime as dt
import itertools
import sqlite3
from collections.abc import Iterator

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
from google.cloud.logging_v2.services.logging_service_v2.transports import (
    LoggingServiceV2GrpcTransport,
)
from google.cloud.logging_v2.types import LogEntry, WriteLogEntriesPartialErrors
from google.logging.type import log_severity_pb2
from google.rpc import status_pb2

from tests.emulator.harness import RunningEmulator, start_emulator, wait_until

_ids = itertools.count()
NOW = dt.datetime.now(dt.UTC)
GLOBAL = {"type": "global"}


def logging_client(em: RunningEmulator) -> LoggingServiceV2Client:
    channel = grpc.insecure_channel(em.target)
    return LoggingServiceV2Client(transport=LoggingServiceV2GrpcTransport(channel=channel))


@pytest.fixture(scope="module")
def logs(emulator: RunningEmulator) -> LoggingServiceV2Client:
    return logging_client(emulator)


@pytest.fixture
def project() -> str:
    """A project of the test's own, so that no other test's entries are listed."""
    return f"logs-{next(_ids)}"


def pages(logs: LoggingServiceV2Client, project: str, **kw: object):
    """The official pager over ListLogEntries (page_size and page_token go in the request)."""
    return logs.list_log_entries(request={"resource_names": [f"projects/{project}"], **kw})


def listed(logs: LoggingServiceV2Client, project: str, **kw: object) -> list[LogEntry]:
    return list(pages(logs, project, **kw))


def at(seconds: float) -> dt.datetime:
    return NOW + dt.timedelta(seconds=seconds)


def test_write_applies_the_requests_defaults_and_lists_back(logs, project):
    log = f"projects/{project}/logs/worker"
    before = dt.datetime.now(dt.UTC)
    logs.write_log_entries(
        log_name=log, resource={"type": "cloud_run_revision",
                                "labels": {"service_name": "brain"}},
        labels={"env": "local", "log": "default"},
        entries=[
            LogEntry(json_payload={"message": "started", "audit": {"task": "t1", "n": 3},
                                   "@type": "type.googleapis.com/x.Y"},
                     severity=log_severity_pb2.WARNING),
            LogEntry(text_payload="second", labels={"log": "own"},
                     log_name=f"projects/{project}/logs/other%2Fname",
                     resource=GLOBAL, insert_id="mine", timestamp=at(-60)),
        ])
    first, second = listed(logs, project, order_by="timestamp desc")
    assert first.log_name == log
    assert first.resource.type == "cloud_run_revision"
    assert dict(first.resource.labels) == {"service_name": "brain"}
    assert dict(first.labels) == {"env": "local", "log": "default"}
    assert first.severity == log_severity_pb2.WARNING
    payload = dict(first.json_payload)
    assert payload["message"] == "started" and payload["@type"] == "type.googleapis.com/x.Y"
    assert dict(payload["audit"]) == {"task": "t1", "n": 3}
    # Time of receipt and a generated insertId when the entry has none.
    assert before <= first.timestamp <= dt.datetime.now(dt.UTC)
    assert first.receive_timestamp == first.timestamp
    assert first.insert_id and first.insert_id.isalnum()
    # An entry's own log name, resource, insertId and timestamp stay; its label wins.
    assert second.log_name == f"projects/{project}/logs/other%2Fname"
    assert second.resource.type == "global" and second.text_payload == "second"
    assert dict(second.labels) == {"env": "local", "log": "own"}
    assert second.insert_id == "mine" and second.timestamp == at(-60)


def test_every_field_comes_back_as_written(logs, project):
    written = LogEntry(
        log_name=f"projects/{project}/logs/full", resource={"type": "global",
                                                             "labels": {"project_id": project}},
        timestamp=at(-5), severity=log_severity_pb2.ERROR, insert_id="full-1",
        labels={"a": "1"}, json_payload={"n": 1.5, "list": [1, "two", None], "ok": True},
        http_request={"request_method": "POST", "request_url": "http://x/y", "status": 503,
                      "response_size": 12, "latency": {"seconds": 1, "nanos": 500}},
        trace=f"projects/{project}/traces/abc", span_id="000000000000004a", trace_sampled=True,
        operation={"id": "op", "producer": "me", "first": True},
        source_location={"file": "app.py", "line": 12, "function": "main"},
        split={"uid": "s", "index": 1, "total_splits": 2})
    logs.write_log_entries(entries=[written])
    (got,) = listed(logs, project)
    assert got.receive_timestamp >= got.timestamp
    got.receive_timestamp = None
    assert got == written


def test_both_orders_over_several_pages_with_the_official_pager(logs, project):
    log = f"projects/{project}/logs/paged"
    # Written out of order; five share one timestamp and keep the order they were sent in.
    times = [at(-i) for i in (7, 3, 11, 1, 9, 5, 2, 10, 4, 8, 6, 12)]
    entries = [LogEntry(text_payload=f"t{t.timestamp():.0f}", timestamp=t) for t in times]
    entries += [LogEntry(text_payload=f"same{i}", timestamp=at(-20)) for i in range(5)]
    logs.write_log_entries(log_name=log, resource=GLOBAL, entries=entries)
    got = [[e.text_payload for e in page.entries] for page in pages(logs, project,
                                                                     page_size=5).pages]
    assert [len(p) for p in got] == [5, 5, 5, 2]
    oldest_first = [x for p in got for x in p]
    assert oldest_first[:5] == [f"same{i}" for i in range(5)]
    expected = [f"t{t.timestamp():.0f}" for t in sorted(times)]
    assert oldest_first[5:] == expected
    newest_first = [e.text_payload for e in listed(logs, project, order_by="timestamp desc",
                                                   page_size=4)]
    assert newest_first == list(reversed(oldest_first))


def test_page_size_default_50_and_at_most_1000(logs, project):
    logs.write_log_entries(log_name=f"projects/{project}/logs/many", resource=GLOBAL,
                           entries=[LogEntry(text_payload=str(i)) for i in range(60)])
    first = next(iter(pages(logs, project).pages))
    assert len(first.entries) == 50 and first.next_page_token
    assert len(listed(logs, project, page_size=1000)) == 60
    for size in (1001, -1):
        with pytest.raises(gexc.InvalidArgument, match="page_size"):
            listed(logs, project, page_size=size)


def test_retention_hides_old_and_far_future_entries(logs, project):
    """30 days kept (Google's _Default bucket); more than 24 h ahead not listed either."""
    ages = {"31 days ago": -31 * 86400, "29 days ago": -29 * 86400, "23 h ahead": 23 * 3600,
            "25 h ahead": 25 * 3600}
    logs.write_log_entries(log_name=f"projects/{project}/logs/aged", resource=GLOBAL, entries=[
        LogEntry(text_payload=name, timestamp=at(s)) for name, s in ages.items()])
    assert [e.text_payload for e in listed(logs, project)] == ["29 days ago", "23 h ahead"]


def test_retention_setting_and_the_janitor(tmp_path):
    """``[logging] retention_days``: what is older is not listed, and the janitor deletes it
    (it runs every second here: a quarter of the 4 s task name reservation)."""
    db = tmp_path / "state.db"
    em = start_emulator(tmp_path, "task_name_reservation_s = 4\n[logging]\nretention_days = 1\n",
                        db=str(db))
    try:
        logs = logging_client(em)
        logs.write_log_entries(log_name="projects/p/logs/l", resource=GLOBAL, entries=[
            LogEntry(text_payload="2 days old", timestamp=at(-2 * 86400)),
            LogEntry(text_payload="fresh")])
        assert [e.text_payload for e in listed(logs, "p")] == ["fresh"]

        def on_disk() -> list[str]:
            with sqlite3.connect(db) as con:
                return [r[0] for r in con.execute("SELECT entry FROM log_entries")]

        wait_until(lambda: len(on_disk()) == 1, timeout=10, what="old entry deleted")
        assert "fresh" in on_disk()[0]
    finally:
        assert em.stop() == 0, "".join(em.stderr)


def test_entries_survive_a_kill_9(tmp_path):
    db = str(tmp_path / "state.db")
    em = start_emulator(tmp_path, db=db)
    try:
        logging_client(em).write_log_entries(
            log_name="projects/p/logs/kept", resource=GLOBAL,
            entries=[LogEntry(text_payload=str(i)) for i in range(3)])
    finally:
        em.kill9()
    em = start_emulator(tmp_path, db=db)
    try:
        assert [e.text_payload for e in listed(logging_client(em), "p")] == ["0", "1", "2"]
    finally:
        assert em.stop() == 0, "".join(em.stderr)


@pytest.mark.parametrize("order_by", ["severity desc", "timestamp up", "insertId"])
def test_bad_order_by(logs, project, order_by):
    with pytest.raises(gexc.InvalidArgument, match=r'"timestamp asc".*"timestamp desc"'):
        listed(logs, project, order_by=order_by)


def test_page_token_from_elsewhere_is_refused(logs, project):
    logs.write_log_entries(log_name=f"projects/{project}/logs/tok", resource=GLOBAL,
                           entries=[LogEntry(text_payload=str(i)) for i in range(3)])
    page = next(iter(pages(logs, project, page_size=1).pages))
    token = page.next_page_token
    assert token
    for kw in ({"page_token": "garbage"}, {"page_token": token, "order_by": "timestamp desc"},
               {"page_token": token, "filter": 'logName:"tok"'}):
        with pytest.raises(gexc.InvalidArgument,
                           match="page_token doesn't match arguments from the request"):
            listed(logs, project, page_size=1, **kw)


@pytest.mark.parametrize(("log_name", "message"), [
    ("projects/{p}/logs/my log", "Log name contains illegal character  "),
    ("projects/{p}/logs/a%2Bb", "Log name contains illegal character +"),
    ("my-log", 'Invalid log name "my-log": a log name is "projects/PROJECT_ID/logs/LOG_ID"'),
    ("", "has no log name: set log_name on the request or on the entry"),
])
def test_bad_log_names_are_refused_and_nothing_is_written(logs, project, log_name, message):
    with pytest.raises(gexc.InvalidArgument) as e:
        logs.write_log_entries(log_name=log_name.format(p=project), resource=GLOBAL,
                               entries=[LogEntry(text_payload="x"), LogEntry(text_payload="y")])
    assert message in e.value.message
    assert listed(logs, project) == []


def test_missing_resource_is_refused(logs, project):
    with pytest.raises(gexc.InvalidArgument, match="has no monitored resource"):
        logs.write_log_entries(log_name=f"projects/{project}/logs/l",
                               entries=[LogEntry(text_payload="x")])


def test_partial_success_writes_the_valid_entries_and_names_the_bad_ones(logs, project):
    good = f"projects/{project}/logs/good"
    with pytest.raises(gexc.InvalidArgument) as e:
        logs.write_log_entries(request={"resource": GLOBAL, "partial_success": True,
                                        "entries": [
            LogEntry(log_name=good, text_payload="kept"),
            LogEntry(log_name=f"projects/{project}/logs/bad name", text_payload="refused"),
            LogEntry(log_name=good, text_payload="kept too")]})
    assert e.value.message == "Log name contains illegal character  "
    status = status_pb2.Status.FromString(
        dict(e.value.response.trailing_metadata())["grpc-status-details-bin"])
    errors = WriteLogEntriesPartialErrors.pb()()
    status.details[0].Unpack(errors)
    assert list(errors.log_entry_errors) == [1]
    assert errors.log_entry_errors[1].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert [x.text_payload for x in listed(logs, project)] == ["kept", "kept too"]


def test_dry_run_writes_nothing(logs, project):
    logs.write_log_entries(request={"log_name": f"projects/{project}/logs/dry",
                                    "resource": GLOBAL, "dry_run": True,
                                    "entries": [LogEntry(text_payload="x")]})
    assert listed(logs, project) == []


def test_other_methods_are_unimplemented(logs, project):
    with pytest.raises(gexc.MethodNotImplemented):
        list(logs.list_logs(parent=f"projects/{project}"))


# -- IAM ----------------------------------------------------------------------------------

WRITER, READER, VIEWER, EDITOR, STRANGER = (
    "serviceAccount:api@iam-project.iam.gserviceaccount.com", "user:reader@example.com",
    "user:viewer@example.com", "user:editor@example.com", "user:stranger@example.com")
IAM_CONFIG = f"""
[iam]
enforce = true
bindings = [
  {{ role = "roles/logging.logWriter", members = ["{WRITER}"] }},
  {{ role = "roles/logging.viewer", members = ["{READER}"] }},
  {{ role = "roles/viewer", members = ["{VIEWER}"] }},
  {{ role = "roles/editor", members = ["{EDITOR}"] }},
]
"""


@pytest.fixture(scope="module")
def enforcing(tmp_path_factory) -> Iterator[LoggingServiceV2Client]:
    em = start_emulator(tmp_path_factory.mktemp("logging-iam"), IAM_CONFIG,
                        project="iam-project")
    yield logging_client(em)
    assert em.stop() == 0, "".join(em.stderr)


def as_(who: str) -> list[tuple[str, str]]:
    return [("x-emulator-principal", who)]


def test_iam_who_may_write(enforcing):
    write = {"log_name": "projects/iam-project/logs/audit", "resource": GLOBAL,
             "entries": [LogEntry(text_payload="x")]}
    for who in (STRANGER, READER, VIEWER):
        with pytest.raises(gexc.PermissionDenied) as e:
            enforcing.write_log_entries(**write, metadata=as_(who))
        assert e.value.message == (
            "Permission 'logging.logEntries.create' denied on resource (or it may not exist).")
    for who in (WRITER, EDITOR):
        enforcing.write_log_entries(**write, metadata=as_(who))
    got = enforcing.list_log_entries(resource_names=["projects/iam-project"],
                                     metadata=as_(READER))
    assert [e.text_payload for e in got] == ["x", "x"]


def test_iam_who_may_list(enforcing):
    request = {"resource_names": ["projects/iam-project"]}
    for who in (STRANGER, WRITER):
        with pytest.raises(gexc.PermissionDenied) as e:
            list(enforcing.list_log_entries(**request, metadata=as_(who)))
        assert e.value.message == (
            "Permission 'logging.logEntries.list' denied on resource (or it may not exist).")
    for who in (READER, VIEWER, EDITOR):
        list(enforcing.list_log_entries(**request, metadata=as_(who)))
    # Every resource named is checked: a readable one does not open another project.
    with pytest.raises(gexc.PermissionDenied):
        list(enforcing.list_log_entries(
            resource_names=["projects/iam-project", "projects/elsewhere"],
            metadata=as_(READER)))


# -- filters: the shapes of enqueuer_core.history's queries (the plan's Contract B) ----------

TASK_LOG_ID = "cloudtasks.googleapis.com%2Ftask_operations_log"
ACTIVITY = "type.googleapis.com/google.cloud.tasks.logging.v1.TaskActivityLog"


def task_entry(project: str, queue: str, task: str, seconds: float, kind: str,
               status: str | None = None, retry: bool = False, location: str = "us-central1"
               ) -> LogEntry:
    body: dict[str, object] = {"dispatchCount": "1", "targetType": "HTTP"}
    if status:
        body["status"] = status
    if retry:
        body["retryTime"] = at(seconds + 10).isoformat().replace("+00:00", "Z")
    failed = kind == "attemptResponseLog" and status != "OK"
    return LogEntry(
        log_name=f"projects/{project}/logs/{TASK_LOG_ID}", timestamp=at(seconds),
        severity=log_severity_pb2.ERROR if failed else log_severity_pb2.INFO,
        resource={"type": "cloud_tasks_queue", "labels": {
            "project_id": project, "location": location, "queue_id": queue,
            "target_type": "HTTP"}},
        json_payload={"@type": ACTIVITY, "task": f"projects/{project}/locations/{location}"
                      f"/queues/{queue}/tasks/{task}", kind: body})


def audit_entry(project: str, seconds: float, **audit: str) -> LogEntry:
    return LogEntry(
        log_name=f"projects/{project}/logs/run.googleapis.com%2Fstdout", timestamp=at(seconds),
        resource={"type": "cloud_run_revision", "labels": {"service_name": "enqueuer-api"}},
        labels={"log": "enqueuer-audit"},
        json_payload={"message": f"{audit.get('action')} {audit.get('outcome')}",
                      "audit": audit})


@pytest.fixture(scope="module")
def history(logs: LoggingServiceV2Client) -> str:
    """A project holding task logs of two queues and a few audit lines."""
    p = f"history-{next(_ids)}"
    t = f"projects/{p}/locations/us-central1/queues/q1/tasks/"
    logs.write_log_entries(entries=[
        task_entry(p, "q1", "a", -300, "taskCreationLog", "OK"),
        task_entry(p, "q1", "a", -299, "attemptDispatchLog"),
        task_entry(p, "q1", "a", -298, "attemptResponseLog", "UNAVAILABLE", retry=True),
        task_entry(p, "q1", "a", -288, "attemptDispatchLog"),
        task_entry(p, "q1", "a", -287, "attemptResponseLog", "NOT_FOUND"),  # final
        task_entry(p, "q1", "b", -200, "attemptResponseLog", "INTERNAL"),  # final
        task_entry(p, "q1", "c", -100, "attemptResponseLog", "OK"),
        task_entry(p, "q2", "d", -90, "attemptResponseLog", "INTERNAL"),  # final, other queue
        task_entry(p, "q1", "e", -80, "attemptResponseLog", "INTERNAL", location="europe-west1"),
        task_entry(p, "q1", "old", -3 * 86400, "attemptResponseLog", "INTERNAL"),  # before "since"
        audit_entry(p, -400, principal="user:ana@example.com", action="enqueue",
                    target=f"projects/{p}/locations/us-central1/queues/q1", task=t + "a",
                    outcome="ok"),
        audit_entry(p, -350, principal="user:bo@example.com", action="enqueue",
                    target=f"projects/{p}/locations/us-central1/queues/q1", task=t + "z",
                    outcome="denied"),
        audit_entry(p, -50, principal="user:ana@example.com", action="purge",
                    target=f"projects/{p}/locations/us-central1/queues/q2", outcome="ok"),
    ])
    return p


def payloads(entries: list[LogEntry], key: str = "task") -> list[str]:
    return [str(e.json_payload[key]).rsplit("/", 1)[-1] for e in entries]


def test_filter_a_tasks_attempts_oldest_first(logs, history):
    task_log = f"projects/{history}/logs/{TASK_LOG_ID}"
    task = f"projects/{history}/locations/us-central1/queues/q1/tasks/a"
    got = listed(logs, history, filter=f'logName="{task_log}" AND jsonPayload.task="{task}"')
    kinds = [next(k for k in e.json_payload if k.endswith("Log")) for e in got]
    assert kinds == ["taskCreationLog", "attemptDispatchLog", "attemptResponseLog",
                     "attemptDispatchLog", "attemptResponseLog"]


def test_filter_a_queues_dead_letters_newest_first(logs, history):
    since = at(-86400).strftime("%Y-%m-%dT%H:%M:%SZ")
    query = (f'logName="projects/{history}/logs/{TASK_LOG_ID}" AND '
             'resource.labels.queue_id="q1" AND resource.labels.location="us-central1" AND '
             "severity>=ERROR AND jsonPayload.attemptResponseLog:* AND "
             f'NOT jsonPayload.attemptResponseLog.retryTime:* AND timestamp>="{since}"')
    got = listed(logs, history, filter=query, order_by="timestamp desc", page_size=50)
    assert payloads(got) == ["b", "a"]
    assert [e.json_payload["attemptResponseLog"]["status"] for e in got] == [
        "INTERNAL", "NOT_FOUND"]


def test_filter_activity_by_person_action_and_queue(logs, history):
    base = 'labels.log="enqueuer-audit"'
    q1 = f"projects/{history}/locations/us-central1/queues/q1"

    def actions(extra: str = "") -> list[str]:
        got = listed(logs, history, filter=f"{base} {extra}", order_by="timestamp desc")
        return [f"{e.json_payload['audit']['action']}/{e.json_payload['audit']['outcome']}"
                for e in got]

    assert actions() == ["purge/ok", "enqueue/denied", "enqueue/ok"]
    assert actions('AND jsonPayload.audit.principal="user:ana@example.com"') == [
        "purge/ok", "enqueue/ok"]
    assert actions('AND jsonPayload.audit.action="enqueue"') == ["enqueue/denied", "enqueue/ok"]
    assert actions('AND jsonPayload.audit.target:"queues/q2"') == ["purge/ok"]
    since = at(-375).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert actions(f'AND jsonPayload.audit.target:"{q1}" AND timestamp>="{since}"') == [
        "enqueue/denied"]


def test_filter_attempts_for_a_chart(logs, history):
    since = at(-3600).strftime("%Y-%m-%dT%H:%M:%SZ")
    query = (f'logName="projects/{history}/logs/{TASK_LOG_ID}" AND '
             f'jsonPayload.attemptResponseLog:* AND timestamp>="{since}"')
    assert payloads(listed(logs, history, filter=query, page_size=1000)) == [
        "a", "a", "b", "c", "d", "e"]
    assert payloads(listed(logs, history, filter=query + ' AND resource.labels.queue_id="q2"',
                           page_size=1000)) == ["d"]


def test_filter_the_enqueue_line_of_a_task(logs, history):
    task = f"projects/{history}/locations/us-central1/queues/q1/tasks/"
    query = ('labels.log="enqueuer-audit" AND jsonPayload.audit.action="enqueue" AND '
             'jsonPayload.audit.task="{}" AND jsonPayload.audit.outcome="ok"')
    (line,) = listed(logs, history, filter=query.format(task + "a"))
    assert line.json_payload["audit"]["principal"] == "user:ana@example.com"
    assert listed(logs, history, filter=query.format(task + "z")) == []  # refused, not "ok"


def test_filter_pages_keep_the_filter(logs, history):
    query = f'logName="projects/{history}/logs/{TASK_LOG_ID}"'
    got = [[e.timestamp for e in page.entries]
           for page in pages(logs, history, filter=query, page_size=4).pages]
    assert [len(p) for p in got] == [4, 4, 2]
    flat = [t for p in got for t in p]
    assert flat == sorted(flat)


@pytest.mark.parametrize("text", ['jsonPayload.task="unterminated', "severity>=", "AND AND"])
def test_unparseable_filter_is_invalid_argument(logs, history, text):
    with pytest.raises(gexc.InvalidArgument) as e:
        listed(logs, history, filter=text)
    assert e.value.message

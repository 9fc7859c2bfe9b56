"""The Logging filter language: what each filter selects from hand-made entries in SQLite,
the INVALID_ARGUMENT text for what it refuses, and the indexes Enqueuer's queries use.

The semantics asserted here are Google's, from "Logging query language"
(https://cloud.google.com/logging/docs/view/logging-query-language).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from emulator.log_filter import INDEXES, FilterError, compile_filter

P, L = "p", "us-central1"
TASK_LOG = f"projects/{P}/logs/cloudtasks.googleapis.com%2Ftask_operations_log"
STDOUT = f"projects/{P}/logs/run.googleapis.com%2Fstdout"
SEVERITY = {"INFO": 200, "WARNING": 400, "ERROR": 500, "CRITICAL": 600}
TASK_T = f"projects/{P}/locations/{L}/queues/q1/tasks/t1"


def _task_entry(name: str, ts: str, queue: str, task: str, severity: str,
                **payload: Any) -> dict[str, Any]:
    return {
        "insertId": name, "logName": TASK_LOG, "timestamp": ts, "severity": severity,
        "resource": {"type": "cloud_tasks_queue", "labels": {
            "project_id": P, "location": L, "queue_id": queue, "target_type": "HTTP"}},
        "jsonPayload": {"@type": "type.googleapis.com/google.cloud.tasks.logging.v1."
                        "TaskActivityLog", "task": task, **payload},
    }


def _response(status: str, count: int, retry: str | None = None) -> dict[str, Any]:
    log: dict[str, Any] = {"status": status, "dispatchCount": str(count),
                           "responseCount": str(count), "maxAttempts": 3,
                           "attemptDuration": "0.125s",
                           "targetAddress": "POST http://127.0.0.1:8081/run"}
    if retry:
        log["retryTime"] = retry
    return log


ENTRIES = [
    # Task t1 in q1: created, failed once (retried), then dead.
    _task_entry("created", "2026-12-01T10:00:00Z", "q1", TASK_T, "INFO",
                taskCreationLog={"status": "OK"}),
    _task_entry("failed", "2026-12-01T10:00:01Z", "q1", TASK_T, "ERROR",
                attemptResponseLog=_response("UNAVAILABLE", 1, "2026-12-01T10:00:11Z")),
    _task_entry("dead", "2026-12-01T10:00:12Z", "q1", TASK_T, "ERROR",
                attemptResponseLog=_response("NOT_FOUND", 3)),
    # Another task, in q2, that succeeded.
    _task_entry("ok", "2026-12-01T11:00:00Z", "q2", TASK_T.replace("q1", "q2"), "INFO",
                attemptResponseLog=_response("OK", 1)),
    # Enqueuer's audit lines, as Cloud Run ships them.
    {"insertId": "audit-enqueue", "logName": STDOUT, "timestamp": "2026-12-01T09:59:59.5Z",
     "severity": "INFO", "labels": {"log": "enqueuer-audit",
                                    "logging.googleapis.com/trace_sampled": "true"},
     "resource": {"type": "cloud_run_revision", "labels": {"service_name": "enqueuer-api"}},
     "jsonPayload": {"message": "Enqueued 50%_done \"quoted\" C:\\tmp",
                     "audit": {"principal": "user:Alice@Example.com", "action": "enqueue",
                               "target": f"projects/{P}/locations/{L}/queues/q1",
                               "outcome": "ok", "task": TASK_T, "dry": False,
                               "note": None}}},
    {"insertId": "audit-delete", "logName": STDOUT, "timestamp": "2026-12-02T08:00:00Z",
     "severity": "WARNING", "labels": {"log": "enqueuer-audit"},
     "resource": {"type": "cloud_run_revision", "labels": {"service_name": "enqueuer-api"}},
     "jsonPayload": {"message": "refused", "audit": {
         "principal": "user:bob@example.com", "action": "delete", "outcome": "denied",
         "target": f"projects/{P}/locations/{L}/queues/q2", "dry": True, "count": 12}}},
]
ALL = {e["insertId"] for e in ENTRIES}


def _us(ts: str) -> int:
    when = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return (when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


@pytest.fixture(scope="module")
def db() -> Iterator[sqlite3.Connection]:
    con = sqlite3.connect(":memory:")
    con.execute("""CREATE TABLE log_entries(
        seq INTEGER PRIMARY KEY AUTOINCREMENT, log_name TEXT NOT NULL,
        ts_us INTEGER NOT NULL, severity INTEGER NOT NULL, entry TEXT NOT NULL)""")
    for statement in INDEXES:
        con.execute(statement)
    con.executemany(
        "INSERT INTO log_entries(log_name, ts_us, severity, entry) VALUES(?, ?, ?, ?)",
        [(e["logName"], _us(e["timestamp"]), SEVERITY[e["severity"]], json.dumps(e))
         for e in ENTRIES])
    yield con
    con.close()


def select(db: sqlite3.Connection, text: str) -> set[str]:
    where, params = compile_filter(text)
    rows = db.execute(f"SELECT json_extract(entry, '$.insertId') FROM log_entries "
                      f"WHERE {where}", params)
    return {r[0] for r in rows}


# -- what filters select ------------------------------------------------------------------


def test_empty_filter_and_comments_select_everything(db):
    assert compile_filter("") == ("1", [])
    assert select(db, "  -- nothing but a comment\n") == ALL


@pytest.mark.parametrize(("text", "expected"), [
    (f'jsonPayload.task="{TASK_T}"', {"created", "failed", "dead"}),
    (f'jsonPayload.task="{TASK_T.upper()}"', {"created", "failed", "dead"}),  # any case
    ('resource.labels.queue_id="q2"', {"ok"}),
    ("resource.labels.queue_id=q2", {"ok"}),  # unquoted text
    ('labels.log="enqueuer-audit"', {"audit-enqueue", "audit-delete"}),
    (f'logName="{TASK_LOG}"', {"created", "failed", "dead", "ok"}),
    (f"log_name={STDOUT}", {"audit-enqueue", "audit-delete"}),  # unquoted, snake_case
    ('resource.type="cloud_run_revision"', {"audit-enqueue", "audit-delete"}),
    ('jsonPayload.audit.principal="user:alice@example.com"', {"audit-enqueue"}),
    ('labels."logging.googleapis.com/trace_sampled"="true"', {"audit-enqueue"}),
    ('json_payload.audit.action="delete"', {"audit-delete"}),  # snake_case top level
    ('insert_id="ok"', {"ok"}),
])
def test_equality(db, text, expected):
    assert select(db, text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    # dispatchCount is the string "3": a number literal is converted to the field's type.
    ("jsonPayload.attemptResponseLog.dispatchCount=3", {"dead"}),
    ('jsonPayload.attemptResponseLog.dispatchCount="3"', {"dead"}),
    # maxAttempts is the number 3: a string whose content is a number converts to it.
    ("jsonPayload.attemptResponseLog.maxAttempts=3", {"failed", "dead", "ok"}),
    ('jsonPayload.attemptResponseLog.maxAttempts="3.0"', {"failed", "dead", "ok"}),
    ("jsonPayload.audit.count>=12", {"audit-delete"}),
    ("jsonPayload.audit.count<12.5", {"audit-delete"}),
    ("jsonPayload.audit.count>-1", {"audit-delete"}),
    ("jsonPayload.audit.count>100", set()),
    # A JSON string orders as text: "3" > "2", whatever the literal's type.
    ("jsonPayload.attemptResponseLog.dispatchCount>2", {"dead"}),
    ('jsonPayload.attemptResponseLog.status>"OK"', {"failed"}),  # "UNAVAILABLE" > "OK"
    # A number never converts from text that is not one: the comparison fails.
    ('jsonPayload.audit.count>"a"', set()),
    ("jsonPayload.audit.dry=true", {"audit-delete"}),
    ("jsonPayload.audit.dry=FALSE", {"audit-enqueue"}),
    ("jsonPayload.audit.note=NULL_VALUE", {"audit-enqueue"}),
    ("NOT jsonPayload.audit.note=NULL_VALUE", ALL - {"audit-enqueue"}),
])
def test_values_convert_to_the_fields_type(db, text, expected):
    assert select(db, text) == expected


def test_missing_fields_fail_every_comparison_but_not_is_true(db):
    # "all comparisons using missing fields fail silently"; missingField != foo is FALSE;
    # NOT missingField = foo is TRUE.
    assert select(db, 'jsonPayload.audit.outcome!="ok"') == {"audit-delete"}
    assert select(db, 'NOT jsonPayload.audit.outcome="ok"') == ALL - {"audit-enqueue"}
    assert select(db, 'NOT jsonPayload.audit.outcome!="ok"') == ALL - {"audit-delete"}
    assert select(db, "jsonPayload.nearest_store<5") == set()
    assert select(db, "-jsonPayload.nearest_store<5") == ALL


@pytest.mark.parametrize(("text", "expected"), [
    ('jsonPayload.message:"50%_done"', {"audit-enqueue"}),  # % and _ are not wildcards
    ('jsonPayload.message:"50%_"', {"audit-enqueue"}),
    ("jsonPayload.message:DONE", {"audit-enqueue"}),  # any letter case
    ('jsonPayload.message:"0%x"', set()),
    (r'jsonPayload.message:"\"quoted\""', {"audit-enqueue"}),  # escaped quotes
    (r'jsonPayload.message:"C:\\tmp"', {"audit-enqueue"}),  # an escaped backslash
    ('jsonPayload.audit.target:"queues/q2"', {"audit-delete"}),
    ("logName:run.googleapis.com", {"audit-enqueue", "audit-delete"}),
    ("textPayload:anything", set()),
])
def test_has_is_a_case_insensitive_substring(db, text, expected):
    assert select(db, text) == expected


def test_presence_finds_dead_letters(db):
    dead = ("jsonPayload.attemptResponseLog:* AND NOT "
            "jsonPayload.attemptResponseLog.retryTime:*")
    assert select(db, dead) == {"dead", "ok"}
    assert select(db, dead + " AND severity>=ERROR") == {"dead"}
    assert select(db, "labels:*") == {"audit-enqueue", "audit-delete"}
    assert select(db, "timestamp:* logName:*") == ALL


def test_not_binds_tightest_then_or_then_and(db):
    # Google's own example: "a" OR NOT "b" AND NOT "c" OR "d" is
    # ("a" OR (NOT "b")) AND ((NOT "c") OR "d"), unlike SQL, where AND binds tighter.
    a, b = 'labels.log="enqueuer-audit"', 'severity>="WARNING"'
    c, d = 'jsonPayload.audit.action="delete"', 'jsonPayload.task:"q2"'
    google = select(db, f"{a} OR NOT {b} AND NOT {c} OR {d}")
    assert google == select(db, f"({a} OR (NOT {b})) AND ((NOT {c}) OR {d})")
    assert google == {"created", "ok", "audit-enqueue"}
    # Read with SQL's precedence, the refused delete would be selected too.
    assert select(db, f"{a} OR (NOT {b} AND NOT {c}) OR {d}") == google | {"audit-delete"}


def test_implicit_and_minus_and_parentheses(db):
    assert select(db, 'resource.labels.queue_id=q1 severity>=ERROR') == {"failed", "dead"}
    assert select(db, 'resource.labels.queue_id=q1 AND severity>=ERROR') == {"failed", "dead"}
    assert select(db, 'resource.labels.queue_id=q1 -severity>=ERROR') == {"created"}
    assert select(db, 'resource.labels.queue_id=q1 -(severity>=ERROR OR '
                      'jsonPayload.taskCreationLog:*)') == set()
    assert select(db, "NOT NOT resource.labels.queue_id=q2") == {"ok"}


def test_a_field_compared_with_a_combination_of_values(db):
    assert select(db, 'resource.labels.queue_id=("q2" OR q9)') == {"ok"}
    assert select(db, "jsonPayload.audit.action=(enqueue OR delete)") == {
        "audit-enqueue", "audit-delete"}
    assert select(db, "jsonPayload.message:(quoted done)") == {"audit-enqueue"}
    assert select(db, 'jsonPayload.message:("quoted" AND "nowhere")') == set()
    assert select(db, "jsonPayload.audit.count=(-3 OR 12)") == {"audit-delete"}


@pytest.mark.parametrize(("text", "expected"), [
    ("severity>=ERROR", {"failed", "dead"}),
    ("severity>=error", {"failed", "dead"}),  # enum names in any case
    ('severity="WARNING"', {"audit-delete"}),
    ("severity<400", {"created", "ok", "audit-enqueue"}),
    ("severity=500", {"failed", "dead"}),
    ('timestamp>="2026-12-01T10:00:01Z"', ALL - {"created", "audit-enqueue"}),
    ('timestamp>"2026-12-01T10:00:01Z"', {"dead", "ok", "audit-delete"}),
    # 11:00:01+01:00 is 10:00:01Z.
    ('timestamp<="2026-12-01T11:00:01+01:00"', {"created", "failed", "audit-enqueue"}),
    ('timestamp<"2026-12-01T10:00:00.000001Z"', {"created", "audit-enqueue"}),
    ('timestamp>="2026-12-02"', {"audit-delete"}),  # a date is its midnight, UTC
    ('timestamp="2026-12-01T09:59:59.500Z"', {"audit-enqueue"}),
    ('timestamp>="2026-12-01T10:00:00Z" timestamp<="2026-12-01T10:30:00Z"',
     {"created", "failed", "dead"}),
])
def test_severity_and_timestamp(db, text, expected):
    assert select(db, text) == expected


def test_paths_become_the_store_s_expressions_exactly():
    # Contract A: the store's expression indexes match only identical text.
    assert compile_filter('jsonPayload.task="T"') == (
        "json_extract(entry, '$.jsonPayload.task') = ? COLLATE NOCASE", ["T"])
    assert compile_filter('labels."logging.googleapis.com/x"=y')[0].startswith(
        """json_extract(entry, '$.labels."logging.googleapis.com/x"')""")
    assert compile_filter('jsonPayload."@type":TaskActivityLog')[0].startswith(
        """json_extract(entry, '$.jsonPayload."@type"')""")
    assert compile_filter("logName:x AND timestamp>=2026-12-01 AND severity=INFO")[0] == (
        "(log_name LIKE ? ESCAPE '\\' AND ts_us >= ? AND severity = ?)")


def test_literals_are_parameters_and_paths_cannot_escape(db):
    where, params = compile_filter("jsonPayload.message=\"x' OR 1=1 --\"")
    assert "1=1" not in where and params == ["x' OR 1=1 --"]
    assert select(db, "jsonPayload.message=\"x' OR 1=1 --\"") == set()
    # A quoted path component with a quote and SQL in it stays inside the JSON path.
    assert select(db, "labels.\"log') OR 1=1 OR ('\"=x") == set()
    assert select(db, "labels.log=\"enqueuer-audit\"") == {"audit-enqueue", "audit-delete"}
    with pytest.raises(FilterError, match="double quote"):
        compile_filter(r'labels."a\"b"=x')


# -- what it refuses ---------------------------------------------------------------------


@pytest.mark.parametrize(("text", "message"), [
    # gcloud shows Google's answer to an unquoted timestamp as "INVALID_ARGUMENT:
    # Unparseable filter: syntax error at line 1, column 200, token ':'".
    ("timestamp>=2026-12-01T00:00:00Z",
     "Unparseable filter: syntax error at line 1, column 25, token ':'"),
    ("severity>=ERROR AND\n  jsonPayload.x=)",
     "Unparseable filter: syntax error at line 2, column 17, token ')'"),
    ('jsonPayload.x="abc', "line 1, column 15, token '\"abc': this string has no closing"),
    ("(severity>=ERROR", "token '<end of filter>': expected ')' to close the '('"),
    ("severity>=ERROR)", "token ')': this ')' has no matching '('"),
    ("jsonPayload.x=", "expected a value"),
    ("jsonPayload.x ! 3", "'!' must be followed by '=' or '~'"),
    ("severity>=ERROR AND", "token '<end of filter>'"),
    ("()", "empty parentheses"),
    ('"The cat in the hat"', "is a global restriction"),
    ("severity>=ERROR and logName:x", "Boolean operators must be upper case"),
    ('SEARCH("hello")', "the function SEARCH() at line 1, column 1 is not supported"),
    ('jsonPayload.message=~"^a"', "regular expressions (=~) at line 1, column 20"),
    ("thud=1", "thud is not a field of a log entry"),
    ("textPayload.thud=1", "textPayload has no fields below it"),
    ("resource.zone=x", "a resource has only type and labels.KEY"),
    ("severity>=ERR", '"ERR" is not a severity; use one of DEFAULT, DEBUG, INFO'),
    ('timestamp>="yesterday"', '"yesterday" is not a timestamp; write RFC 3339'),
    ('timestamp:"2026"', "timestamp has no substrings"),
    ("logName=NULL_VALUE", "NULL_VALUE compares only with = or !="),
    ("x" * 20_001, "the maximum is 20,000"),
    ("(" * 101 + "logName:x" + ")" * 101, "nest more than 100 deep"),
    ("NOT " * 200 + "logName:x", "nest more than 100 deep"),
])
def test_refusals_say_what_and_where(text, message):
    with pytest.raises(FilterError) as e:
        compile_filter(text)
    assert message in e.value.message
    assert e.value.message.startswith(("Unparseable filter: ", "Invalid filter: "))


# -- Contract B: the indexes Enqueuer's queries use ------------------------------------------

SINCE = "2026-12-01T00:00:00Z"
CONTRACT_B = {
    "a task's attempts": (f'logName="{TASK_LOG}" AND jsonPayload.task="{TASK_T}"', False,
                          "log_entries_task"),
    "a queue's dead letters": (
        f'logName="{TASK_LOG}" AND resource.labels.queue_id="q1" AND '
        f'resource.labels.location="{L}" AND severity>=ERROR AND '
        "jsonPayload.attemptResponseLog:* AND NOT jsonPayload.attemptResponseLog.retryTime:* "
        f'AND timestamp>="{SINCE}"', True, "log_entries_queue"),
    "activity": ('labels.log="enqueuer-audit"', True, "log_entries_label_log"),
    "activity by person": ('labels.log="enqueuer-audit" AND '
                           'jsonPayload.audit.principal="user:alice@example.com"', True,
                           "log_entries_audit_principal"),
    "activity by action and queue": (
        'labels.log="enqueuer-audit" AND jsonPayload.audit.action="enqueue" AND '
        f'jsonPayload.audit.target:"queues/q1" AND timestamp>="{SINCE}"', True,
        "log_entries_audit_action"),
    "activity by queue": ('labels.log="enqueuer-audit" AND jsonPayload.audit.target:"queues/q1"',
                          True, "log_entries_label_log"),
    "activity refused": ('labels.log="enqueuer-audit" AND jsonPayload.audit.outcome="denied"',
                         True, "log_entries_audit_outcome"),
    # Two indexes serve it alike: the one created later, the more selective, is taken.
    "activity by person, action and outcome": (
        'labels.log="enqueuer-audit" AND jsonPayload.audit.principal="user:a@example.com" AND '
        'jsonPayload.audit.action="delete" AND jsonPayload.audit.outcome="ok"', True,
        "log_entries_audit_principal"),
    "attempts per minute": (f'logName="{TASK_LOG}" AND jsonPayload.attemptResponseLog:* AND '
                            f'timestamp>="{SINCE}"', False, "log_entries_ts"),
    "attempts per minute of a queue": (
        f'logName="{TASK_LOG}" AND jsonPayload.attemptResponseLog:* AND '
        f'timestamp>="{SINCE}" AND resource.labels.queue_id="q1"', False, "log_entries_queue"),
    "the enqueue line of a task": (
        'labels.log="enqueuer-audit" AND jsonPayload.audit.action="enqueue" AND '
        f'jsonPayload.audit.task="{TASK_T}" AND jsonPayload.audit.outcome="ok"', True,
        "log_entries_audit_task"),
}


def _store_query(text: str, descending: bool, after: bool) -> tuple[str, list[object]]:
    """The SELECT of emulator/log_store.py for a page: the project's logs, the listed
    window, the filter, the keyset cursor of a later page, the order and the page size.
    The window is written ``+ts_us`` (a check, not an index range) as proposed to the store
    (/work/notes/issue11-filter.md): with two lower bounds on ts_us SQLite takes the first
    for the range, the store's 30 days, where the filter's last hour is the one that
    helps."""
    where, params = compile_filter(text)
    order = "DESC" if descending else "ASC"
    sql = ("SELECT seq, ts_us, entry FROM log_entries WHERE (substr(log_name, 1, ?) = ?) "
           f"AND +ts_us >= ? AND +ts_us <= ? AND ({where})")
    args: list[object] = [len(f"projects/{P}/logs/"), f"projects/{P}/logs/", 0, 2**62,
                          *params]
    if after:
        sql += f" AND (ts_us, seq) {'<' if descending else '>'} (?, ?)"
        args += [_us(SINCE) + 10**9, 10]
    return sql + f" ORDER BY ts_us {order}, seq {order} LIMIT ?", [*args, 50]


@pytest.mark.parametrize("after", [False, True], ids=["first page", "next page"])
@pytest.mark.parametrize("name", list(CONTRACT_B))
def test_contract_b_queries_use_their_index(db, name, after):
    text, descending, index = CONTRACT_B[name]
    sql, args = _store_query(text, descending, after)
    plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, args)]
    assert any(f"USING INDEX {index} " in step for step in plan), plan
    assert not any(step.startswith("SCAN") for step in plan), plan
    db.execute(sql, args).fetchall()  # and it runs


def test_indexes_are_written_as_the_filters_are():
    expressions = 0
    for statement in INDEXES:
        assert statement.startswith("CREATE INDEX IF NOT EXISTS log_entries_")
        for expr, path in re.findall(r"(json_extract\(entry, '\$\.([^']+)'\)) COLLATE NOCASE",
                                     statement):
            assert compile_filter(f"{path}=x")[0] == f"{expr} = ? COLLATE NOCASE"
            expressions += 1
    assert expressions == len(INDEXES) - 1  # all but the one on ts_us

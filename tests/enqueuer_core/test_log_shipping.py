"""A container's stdout as Cloud Run ships it: each line becomes the log entry Google makes of
it (field by field), and the dev stack's shipper sends a real child's lines to a real
emulator's Logging, keeps every line in its file, and never holds the child up."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from google.cloud.logging_v2.types import LogEntry
from google.protobuf import json_format

from enqueuer_core.access.audit import audit_line
from enqueuer_core.clients import logging_client
from enqueuer_core.config import load_settings
from enqueuer_core.devstack import free_port
from enqueuer_core.log_shipping import LogShipper, entry_from_line, stdout_log_name
from tests.emulator.harness import PROJECT, RunningEmulator

WHERE = {"project": "p", "location": "europe-west1", "service": "enqueuer-api",
         "revision": "enqueuer-api-00001-abc"}
RECEIVED = dt.datetime(2026, 12, 2, 10, 0, 5, 250000, tzinfo=dt.UTC)
CLOUD_RUN = {"type": "cloud_run_revision", "labels": {
    "project_id": "p", "service_name": "enqueuer-api", "revision_name": "enqueuer-api-00001-abc",
    "location": "europe-west1", "configuration_name": "enqueuer-api"}}


def as_json(entry: LogEntry) -> dict:
    """The entry as Google's JSON shows it (the form Logging's readers see)."""
    return json_format.MessageToDict(LogEntry.pb(entry))


# -- one line, one entry (pure) -----------------------------------------------------------------


def test_an_audit_line_becomes_a_structured_entry_field_by_field():
    line = audit_line(principal="user:ana@example.com", role="operator", via="api",
                      action="enqueue", target="projects/p/locations/l/queues/q", outcome="ok",
                      request_id="r-1", trace="projects/p/traces/abc123", worker="brain",
                      task="projects/p/locations/l/queues/q/tasks/t1",
                      now=dt.datetime(2026, 12, 2, 10, 0, 0, 123456, tzinfo=dt.UTC))
    line |= {"logging.googleapis.com/spanId": "000000000000004a",
             "logging.googleapis.com/insertId": "ins-1",
             "logging.googleapis.com/trace_sampled": True,
             "logging.googleapis.com/sourceLocation": {"file": "enqueue.py", "line": "42",
                                                       "function": "enqueue"},
             "httpRequest": {"requestMethod": "POST", "status": 200, "latency": "0.120s"}}
    got = as_json(entry_from_line(json.dumps(line) + "\n", **WHERE, received=RECEIVED,
                                  instance_id="inst-1"))
    assert got.pop("logName") == "projects/p/logs/run.googleapis.com%2Fstdout"
    assert got.pop("resource") == CLOUD_RUN
    assert got.pop("severity") == "NOTICE"
    assert got.pop("timestamp") == "2026-12-02T10:00:00.123456Z"  # the line's own `time`
    assert got.pop("labels") == {"log": "enqueuer-audit", "action": "enqueue", "outcome": "ok",
                                 "instanceId": "inst-1"}
    assert got.pop("trace") == "projects/p/traces/abc123"
    assert got.pop("spanId") == "000000000000004a"
    assert got.pop("insertId") == "ins-1"
    assert got.pop("traceSampled") is True
    assert got.pop("sourceLocation") == {"file": "enqueue.py", "line": "42",
                                         "function": "enqueue"}
    assert got.pop("httpRequest") == {"requestMethod": "POST", "status": 200,
                                      "latency": "0.120s"}
    payload = got.pop("jsonPayload")
    assert got == {}  # nothing else
    # The rest of the line, `message` kept; no special field left in it.
    assert payload == {"message": "enqueue brain by user:ana@example.com: ok",
                       "audit": line["audit"]}


def test_a_plain_line_is_text_with_severity_default_at_the_time_it_was_read():
    got = as_json(entry_from_line("INFO:     127.0.0.1:5000 - \"POST /enqueue HTTP/1.1\" 200\n",
                                  **WHERE, received=RECEIVED))
    assert got == {"logName": "projects/p/logs/run.googleapis.com%2Fstdout",
                   "resource": CLOUD_RUN, "timestamp": "2026-12-02T10:00:05.250Z",
                   "textPayload": 'INFO:     127.0.0.1:5000 - "POST /enqueue HTTP/1.1" 200'}
    assert entry_from_line("x", **WHERE).severity == 0  # DEFAULT
    # JSON that is not an object is text too, as is a line cut short.
    for text in ("[1, 2]", '"just a string"', "42", '{"severity": "ERROR"'):
        assert as_json(entry_from_line(text, **WHERE))["textPayload"] == text


@pytest.mark.parametrize("bad_time", ["yesterday", "2026-13-45T00:00:00Z", 17, None])
def test_a_bad_time_is_kept_in_the_payload_and_the_entry_takes_the_time_read(bad_time):
    line = json.dumps({"severity": "info", "time": bad_time, "message": "m"})
    got = as_json(entry_from_line(line, **WHERE, received=RECEIVED))
    assert got["timestamp"] == "2026-12-02T10:00:05.250Z"
    assert got["jsonPayload"] == {"time": bad_time, "message": "m"}
    assert got["severity"] == "INFO"  # case does not matter


def test_what_google_accepts_for_times_severities_and_labels():
    def entry(**fields):
        return as_json(entry_from_line(json.dumps(fields), **WHERE, received=RECEIVED))

    nanos = entry(timestampSeconds=1764669600, timestampNanos=5)
    assert nanos["timestamp"] == "2025-12-02T10:00:00.000000005Z" and nanos["jsonPayload"] == {}
    assert entry(timestamp={"seconds": 1764669600, "nanos": 0})["timestamp"] == (
        "2025-12-02T10:00:00Z")
    assert entry(time="2026-12-02T11:00:00.123456789+01:00")["timestamp"] == (
        "2026-12-02T10:00:00.123456789Z")
    assert entry(severity="warn")["severity"] == "WARNING"
    assert entry(severity=500)["severity"] == "ERROR"
    unknown = entry(severity="LOUD")
    assert "severity" not in unknown and unknown["jsonPayload"] == {"severity": "LOUD"}
    # Labels are strings: anything else stays where it was written.
    odd = entry(**{"logging.googleapis.com/labels": {"n": 1}})
    assert "labels" not in odd and odd["jsonPayload"] == {"logging.googleapis.com/labels":
                                                          {"n": 1}}


# -- the shipper, against the real emulator -----------------------------------------------------

CHILD = textwrap.dedent("""
    import json, sys
    for i in range(int(sys.argv[1])):
        print(json.dumps({"severity": "NOTICE", "message": f"line {i}",
                          "logging.googleapis.com/labels": {"log": sys.argv[2]}}))
        print(f"plain {i}")
    print()  # a blank line: in the file, not shipped
""")


def run_child(tmp_path: Path, lines: int, label: str, client, **shipper: object):
    log = tmp_path / f"{label}.log"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(lines), label],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    warnings: list[str] = []
    assert proc.stdout is not None
    started = time.monotonic()
    ship = LogShipper(proc.stdout, log, client, project=PROJECT, location="us-central1",
                      service=label, revision=f"{label}-00001-dev", warn=warnings.append,
                      **shipper).start()
    assert proc.wait(30) == 0
    took = time.monotonic() - started
    ship.close(timeout=20)
    return ship, log, warnings, took


def test_every_line_reaches_the_file_and_logging(emulator: RunningEmulator, tmp_path):
    settings = load_settings(cloud_tasks_emulator_host=emulator.target, project_id=PROJECT,
                             tasks_region="us-central1")
    client = logging_client(settings)
    label = f"ship-{uuid.uuid4().hex[:8]}"
    ship, log, warnings, _ = run_child(tmp_path, 150, label, client, batch_size=40)
    written = log.read_text().splitlines()
    assert len(written) == 301 and written[-1] == ""  # every line, the blank one included
    assert (ship.shipped, ship.not_shipped, warnings) == (300, 0, [])

    def listed(flt: str) -> list[LogEntry]:
        return list(client.list_log_entries(request={
            "resource_names": [f"projects/{PROJECT}"], "order_by": "timestamp asc",
            "page_size": 1000, "filter": flt}))

    structured = listed(f'labels.log="{label}"')
    assert [e.json_payload["message"] for e in structured] == [f"line {i}" for i in range(150)]
    first = structured[0]
    assert first.log_name == stdout_log_name(PROJECT)
    assert first.resource.type == "cloud_run_revision"
    assert dict(first.resource.labels) == {
        "project_id": PROJECT, "service_name": label, "revision_name": f"{label}-00001-dev",
        "location": "us-central1", "configuration_name": label}
    assert first.severity == 300 and first.labels["instanceId"]
    plain = listed(f'resource.labels.service_name="{label}" AND textPayload:"plain"')
    assert [e.text_payload for e in plain] == [f"plain {i}" for i in range(150)]


def test_with_logging_down_the_child_goes_on_and_the_file_has_every_line(tmp_path):
    dead = load_settings(cloud_tasks_emulator_host=f"127.0.0.1:{free_port()}",
                         project_id=PROJECT, tasks_region="us-central1")
    ship, log, warnings, took = run_child(tmp_path, 2000, "down", logging_client(dead),
                                          max_pending=50)
    assert took < 10  # the child never waited on Logging
    assert len(log.read_text().splitlines()) == 4001
    assert (ship.shipped, ship.not_shipped) == (0, 4000)
    assert any("down's log entries cannot reach Cloud Logging (UNAVAILABLE: " in w
               and w.endswith(f"its lines still go to {log}") for w in warnings), warnings
    assert warnings[-1].startswith("4000 log entries of down were not shipped to Cloud "
                                   "Logging (UNAVAILABLE: ")
    assert warnings[-1].endswith(f"); every line is in {log}")

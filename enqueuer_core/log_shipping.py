"""What Cloud Run does with a container's stdout, for the dev stack: each line to Logging.

On Cloud Run every line a container writes to stdout becomes a log entry in
``projects/P/logs/run.googleapis.com%2Fstdout`` on the ``cloud_run_revision`` resource
(https://cloud.google.com/run/docs/logging#container-logs). A line that is a JSON object
becomes a structured entry: its special fields are taken as the entry's own and the rest
is its ``jsonPayload``, ``message`` included; any other line is a ``textPayload`` with
severity DEFAULT (https://cloud.google.com/run/docs/logging#special-fields, and the table
of special fields in https://cloud.google.com/logging/docs/structured-logging). A special
field whose value cannot be used stays in ``jsonPayload``, as Google's agent leaves it.

``entry_from_line`` is that rule, pure. ``LogShipper`` is the agent: a thread that reads a
child process's stdout, copies every line to its log file, and sends the entries in batches
with ``WriteLogEntries``. It never blocks the child: its buffer is bounded, and when Logging
is out of reach the lines still reach the file and a warning says how many entries did not
reach Logging.
"""

from __future__ import annotations

import datetime as dt
import json
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from google.api_core import exceptions as gexc
from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
from google.cloud.logging_v2.types import LogEntry, WriteLogEntriesRequest
from google.logging.type import log_severity_pb2
from google.protobuf import json_format

STDOUT_LOG_ID = "run.googleapis.com%2Fstdout"  # the log ID, URL-encoded as logName keeps it
RESOURCE_TYPE = "cloud_run_revision"
_SEVERITIES = dict(log_severity_pb2.LogSeverity.items())
# Common spellings Google's agent matches besides LogSeverity's own names.
_SEVERITY_ALIASES = {"WARN": "WARNING", "ERR": "ERROR", "FATAL": "CRITICAL", "TRACE": "DEBUG"}
_G = "logging.googleapis.com/"
# Special field -> the LogEntry field it sets (protobuf's JSON names).
_SPECIAL = {
    f"{_G}insertId": "insertId", f"{_G}labels": "labels", f"{_G}operation": "operation",
    f"{_G}sourceLocation": "sourceLocation", f"{_G}spanId": "spanId", f"{_G}trace": "trace",
    f"{_G}trace_sampled": "traceSampled", "httpRequest": "httpRequest",
}
BATCH_SIZE = 100  # entries per WriteLogEntries call (Google takes up to 10 MB per call)
MAX_PENDING = 10_000  # entries waiting to be sent; past it, lines go to the file only
LINGER_S = 0.05  # how long a first entry waits for others to share its call
SEND_TIMEOUT_S = 5.0


def stdout_log_name(project: str) -> str:
    return f"projects/{project}/logs/{STDOUT_LOG_ID}"


def _severity(value: Any) -> int | None:
    if isinstance(value, str):
        name = value.strip().upper()
        return _SEVERITIES.get(_SEVERITY_ALIASES.get(name, name))
    if isinstance(value, int) and not isinstance(value, bool) and value in _SEVERITIES.values():
        return value
    return None


def _entry_field(field: str, value: Any) -> dict[str, Any] | None:
    """``{field: value}`` if protobuf's JSON mapping takes it for a LogEntry, else None."""
    if field == "labels" and not (isinstance(value, dict)
                                  and all(isinstance(v, str) for v in value.values())):
        return None
    try:
        json_format.ParseDict({field: value}, LogEntry.pb(LogEntry()))
    except (json_format.ParseError, TypeError, ValueError):
        return None
    return {field: value}


def _rfc3339(seconds: Any, nanos: Any = 0) -> str | None:
    """``seconds``/``nanos`` since the epoch (numbers, or strings of them) as RFC 3339."""
    try:
        whole, frac = int(seconds), int(nanos or 0)
        when = dt.datetime.fromtimestamp(whole, dt.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    if not 0 <= frac < 1_000_000_000:
        return None
    return when.strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def _timestamp(fields: dict[str, Any]) -> tuple[tuple[str, ...], str | None]:
    """The keys that gave the line's time, and that time in RFC 3339 (else ``(), None``)."""
    for key in ("time", "timestamp"):
        value = fields.get(key)
        if isinstance(value, dict) and set(value) <= {"seconds", "nanos"}:
            value = _rfc3339(value.get("seconds"), value.get("nanos"))
        if isinstance(value, str) and _entry_field("timestamp", value):
            return (key,), value
    if "timestampSeconds" in fields:
        value = _rfc3339(fields["timestampSeconds"], fields.get("timestampNanos"))
        if value and _entry_field("timestamp", value):
            return ("timestampSeconds", "timestampNanos"), value
    return (), None


def entry_from_line(line: str, *, project: str, location: str, service: str, revision: str,
                    received: dt.datetime | None = None,
                    instance_id: str | None = None) -> LogEntry:
    """The entry Cloud Run makes of one stdout line of ``service``'s ``revision``.

    ``received``: when the line was read, the entry's time unless the line gives its own (a
    valid ``time``); ``instance_id``: the container instance, a label as on Cloud Run.
    """
    text = line.rstrip("\r\n")
    entry: dict[str, Any] = {
        "logName": stdout_log_name(project),
        "resource": {"type": RESOURCE_TYPE, "labels": {
            "project_id": project, "service_name": service, "revision_name": revision,
            "location": location, "configuration_name": service}},
    }
    labels = {"instanceId": instance_id} if instance_id else {}
    if received is not None:
        entry["timestamp"] = received.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    try:
        fields = json.loads(text)
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        entry |= {"severity": "DEFAULT", "textPayload": text}
        if labels:
            entry["labels"] = labels
        return LogEntry.wrap(json_format.ParseDict(entry, LogEntry.pb(LogEntry())))
    payload = dict(fields)
    severity = _severity(payload.get("severity"))
    if severity is not None:
        entry["severity"] = severity
        del payload["severity"]
    keys, when = _timestamp(payload)
    if when:
        entry["timestamp"] = when
        for k in keys:
            payload.pop(k, None)
    for special, field in _SPECIAL.items():
        if special in payload:
            taken = _entry_field(field, payload[special])
            if taken is not None:
                entry |= taken
                del payload[special]
    entry["labels"] = {**labels, **entry.get("labels", {})}
    if not entry["labels"]:
        del entry["labels"]
    entry["jsonPayload"] = payload
    return LogEntry.wrap(json_format.ParseDict(entry, LogEntry.pb(LogEntry())))


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


class LogShipper:
    """Ships a child process's stdout as Cloud Run does, and keeps every line in ``log_file``.

    ``start()`` runs two threads: one reads the pipe (copying each line to the file at once,
    so the child never waits on Logging), one sends what was read in batches. ``close()``
    waits for the pipe's end and the last batch, then warns if entries did not reach Logging.
    """

    def __init__(self, source: IO[bytes], log_file: Path, client: LoggingServiceV2Client, *,
                 project: str, location: str, service: str, revision: str,
                 target: str = "Cloud Logging", warn: Callable[[str], None] = _warn,
                 max_pending: int = MAX_PENDING, batch_size: int = BATCH_SIZE) -> None:
        self.source = source
        self.log_file = log_file
        self.client = client
        self.where = {"project": project, "location": location, "service": service,
                      "revision": revision, "instance_id": uuid.uuid4().hex}
        self.target = target
        self.warn = warn
        self.batch_size = batch_size
        self.shipped = 0
        self.not_shipped = 0  # entries that did not reach Logging (their lines are in the file)
        self._pending: queue.Queue[tuple[str, dt.datetime]] = queue.Queue(max_pending)
        self._eof = threading.Event()
        self._failing = False  # the last call failed
        self._why = "it was too slow"  # why the entries not shipped were not
        self._threads = [threading.Thread(target=self._read, daemon=True,
                                          name=f"log-reader-{service}"),
                         threading.Thread(target=self._send_loop, daemon=True,
                                          name=f"log-sender-{service}")]

    def start(self) -> LogShipper:
        for t in self._threads:
            t.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Wait for the child's stdout to end and the last entries to be sent."""
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        left = self._pending.qsize()
        if left:
            self.not_shipped += left
        if self.not_shipped:
            self.warn(f"{self.not_shipped} log entries of {self.where['service']} were not "
                      f"shipped to {self.target} ({self._why}); "
                      f"every line is in {self.log_file}")

    # -- the two threads -------------------------------------------------------------------

    def _read(self) -> None:
        service = self.where["service"]
        with self.log_file.open("ab") as log:
            for raw in iter(self.source.readline, b""):
                log.write(raw)
                log.flush()
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if not line.strip():
                    continue  # nothing to ship
                try:
                    self._pending.put_nowait((line, dt.datetime.now(dt.UTC)))
                except queue.Full:
                    # Logging is slower than the child (or out of reach): the line is in the
                    # file, and the child must not wait.
                    if not self.not_shipped:
                        self.warn(f"{service} writes faster than {self.target} takes its log "
                                  f"entries: some reach only {self.log_file}")
                    self.not_shipped += 1
        self._eof.set()

    def _send_loop(self) -> None:
        while not (self._eof.is_set() and self._pending.empty()):
            try:
                first = self._pending.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            linger_until = time.monotonic() + LINGER_S
            while len(batch) < self.batch_size:
                try:
                    batch.append(self._pending.get(
                        timeout=max(0.0, linger_until - time.monotonic())))
                except queue.Empty:
                    break
            self._send(batch)

    def _send(self, batch: list[tuple[str, dt.datetime]]) -> None:
        w = self.where
        entries = [entry_from_line(line, project=w["project"], location=w["location"],
                                   service=w["service"], revision=w["revision"],
                                   received=when, instance_id=w["instance_id"])
                   for line, when in batch]
        try:
            # partial_success: one entry Logging refuses does not take the others with it.
            self.client.write_log_entries(
                request=WriteLogEntriesRequest(entries=entries, partial_success=True),
                retry=None, timeout=SEND_TIMEOUT_S)
        except gexc.GoogleAPICallError as e:
            # With partial_success Logging wrote the valid entries and names the others.
            refused = next((len(d.log_entry_errors) for d in e.details or ()
                            if hasattr(d, "log_entry_errors")), len(batch))
            self.shipped += len(batch) - refused
            self.not_shipped += refused
            code = e.grpc_status_code.name if e.grpc_status_code else type(e).__name__
            self._why = f"{code}: {e.message}"
            if not self._failing:
                self.warn(f"{w['service']}'s log entries cannot reach {self.target} "
                          f"({self._why}); its lines still go to {self.log_file}")
            self._failing = True
            return
        if self._failing:
            self.warn(f"{w['service']}'s log entries reach {self.target} again; "
                      f"{self.not_shipped} did not so far (they are in {self.log_file})")
            self._failing = False
        self.shipped += len(batch)

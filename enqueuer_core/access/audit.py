"""One audit line per change, allowed or refused: JSON on stdout, as Cloud Logging reads it.

Cloud Run ships each line a container writes to stdout to Cloud Logging; a line that is a
JSON object becomes a structured entry, its special fields (``severity``, ``message``,
``time``, ``logging.googleapis.com/labels``, ``logging.googleapis.com/trace``) taken as the
entry's own and the rest kept as ``jsonPayload``
(https://cloud.google.com/run/docs/logging#special-fields). A line::

    {"severity": "NOTICE", "message": "enqueue brain by user:ana@example.com: ok",
     "time": "2026-12-02T10:00:00.123456Z",
     "logging.googleapis.com/labels": {"log": "enqueuer-audit", "action": "enqueue",
                                       "outcome": "ok"},
     "audit": {"principal": "user:ana@example.com", "role": "operator", "via": "api",
               "action": "enqueue", "target": "projects/p/locations/l/queues/queue-brain",
               "outcome": "ok", "error_code": null, "request_id": "4f1c...",
               "worker": "brain", "idempotency_key": "report-1", "task": "projects/...",
               "payload": {"bytes": 123, "sha256": "9f86..."}}}

``outcome`` is ``ok``, ``refused`` (the access config said no; nothing was asked of Google)
or ``failed`` (allowed, then refused by validation or Google: ``error_code`` says why).
Never a token. A payload is kept as its size and hash, unless ``AUDIT_PAYLOADS=full``: then
the enqueue line keeps its content too (``payload_record``), which is what lets a dead job be
replayed from the logs. ``replay_of`` names the task an enqueue replays. The CLI writes its
lines to stderr, as its stdout is the command's answer (``--json`` included).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
import threading
from typing import Any, TextIO

LOG_LABEL = "enqueuer-audit"
# One encoder for every line (json.dumps with options would build one per line).
_LINE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)
_SEVERITY = {"ok": "NOTICE", "refused": "WARNING", "failed": "ERROR"}
_lock = threading.Lock()


# Cloud Logging refuses an entry over 256 KB (https://cloud.google.com/logging/quotas): past
# this many bytes of payload the line keeps its hash only, and says why.
MAX_CONTENT_BYTES = 200_000


def payload_digest(body: bytes) -> dict[str, Any]:
    """What the audit keeps of a payload by default: its size and SHA-256, not its content."""
    return {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def payload_record(body: bytes, payload: Any, keep: str) -> dict[str, Any]:
    """The enqueue line's ``payload``: the digest, plus ``content`` (the payload as JSON) when
    ``keep`` is ``full`` and the payload fits in a log entry. ``payload`` is the object
    ``body`` was serialised from: nothing is serialised twice."""
    record = payload_digest(body)
    if keep == "full":
        if len(body) <= MAX_CONTENT_BYTES:
            record["content"] = payload
        else:
            record["content_omitted"] = (
                f"{len(body):,} bytes: over the {MAX_CONTENT_BYTES:,} the audit line keeps "
                "(Cloud Logging refuses entries over 256 KB)")
    return record


def audit_line(*, principal: str, role: str | None, via: str, action: str, target: str,
               outcome: str, request_id: str, error_code: str | None = None,
               trace: str | None = None, now: dt.datetime | None = None,
               **details: Any) -> dict[str, Any]:
    """The structured entry for one change (pure: ``write`` prints it)."""
    when = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    shown = f"{action} {details.get('worker') or target} by {principal}: {outcome}"
    entry: dict[str, Any] = {
        "severity": _SEVERITY[outcome],
        "message": shown + (f" ({error_code})" if error_code else ""),
        "time": when,
        "logging.googleapis.com/labels": {"log": LOG_LABEL, "action": action,
                                          "outcome": outcome},
        "audit": {"principal": principal, "role": role, "via": via, "action": action,
                  "target": target, "outcome": outcome, "error_code": error_code,
                  "request_id": request_id,
                  **{k: v for k, v in details.items() if v is not None}},
    }
    if trace:
        entry["logging.googleapis.com/trace"] = trace
    return entry


def write(entry: dict[str, Any], stream: TextIO | None = None) -> None:
    """One line on stdout (or ``stream``), whole: lines from concurrent requests never
    interleave."""
    line = _LINE.encode(entry) + "\n"
    out = stream or sys.stdout
    with _lock:
        out.write(line)
        out.flush()

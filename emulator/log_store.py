"""Cloud Logging's entries in the emulator's SQLite: the ``log_entries`` table, writing,
listing in timestamp order with keyset pages, and retention.

The table shares the ``Store``'s connection, so entries written by the dispatcher land in
the same commit as the task state change they describe (``add`` joins the open
transaction). Each entry is kept as the LogEntry in protobuf's JSON mapping (camelCase),
beside the columns every query needs (log name, timestamp in microseconds, severity); the
filter module (``emulator/log_filter.py``) turns a Logging filter into SQL over those
columns and ``json_extract(entry, '$.path')``, and exports the expression indexes that keep
its hot queries fast.

Retention is Google's _Default bucket's: 30 days unless ``[logging] retention_days`` says
otherwise (https://cloud.google.com/logging/quotas#logs_retention_periods). Entries older
than that, or more than 24 hours in the future, are not listed ("will not be available
when calling entries.list": the WriteLogEntries reference), and the janitor deletes the
old ones.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from google.cloud.logging_v2.types import LogEntry as _LogEntry
from google.logging.type import log_severity_pb2
from google.protobuf import json_format

from emulator.clock import US
from emulator.store import Store

LogEntry = _LogEntry.pb()
# (log_name, ts_us, severity, entry JSON text): one row of log_entries.
LogRow = tuple[str, int, int, str]

SCHEMA = """
CREATE TABLE IF NOT EXISTS log_entries(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    log_name TEXT NOT NULL,
    ts_us INTEGER NOT NULL,
    severity INTEGER NOT NULL,
    entry TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS log_entries_ts ON log_entries(ts_us);
"""
DAY_US = 86_400 * US
FUTURE_LIMIT_US = DAY_US  # "more than 24 hours in the future will not be available"
EXPIRE_BATCH = 5000  # rows deleted per janitor pass, so that one pass never stalls the loop
SEVERITY_NAMES = {v: k for k, v in log_severity_pb2.LogSeverity.items()}
SEVERITIES = dict(log_severity_pb2.LogSeverity.items())
INFO, ERROR = SEVERITIES["INFO"], SEVERITIES["ERROR"]
_INSERT = "INSERT INTO log_entries(log_name, ts_us, severity, entry) VALUES(?, ?, ?, ?)"
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_counter = itertools.count()
_process = "".join(secrets.choice(_ALPHABET) for _ in range(4))


def insert_id() -> str:
    """A unique insertId like Google's ("pu08t2d3phz": lower-case letters and digits).

    A per-process prefix and a counter in base 36: unique, and later calls sort after
    earlier ones, so that entries of one request keep their order among equal timestamps.
    """
    n, out = next(_counter), []
    for _ in range(7):
        n, r = divmod(n, 36)
        out.append(_ALPHABET[r])
    return _process + "".join(reversed(out))


_last_second: list[tuple[int, str]] = [(-1, "")]


def rfc3339(us: int) -> str:
    """A timestamp in protobuf's JSON form (0, 3 or 6 fractional digits, "Z")."""
    secs, frac = divmod(us, US)
    cached, text = _last_second[0]
    if cached != secs:  # the entries of one dispatch batch share their second
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
        _last_second[0] = (secs, text)
    if not frac:
        return text + "Z"
    if frac % 1000 == 0:
        return f"{text}.{frac // 1000:03d}Z"
    return f"{text}.{frac:06d}Z"


def duration_json(us: int) -> str:
    """A Duration in protobuf's JSON form, as Cloud Tasks logs it: "0.001250s"."""
    secs, frac = divmod(us, US)
    if not frac:
        return f"{secs}s"
    if frac % 1000 == 0:
        return f"{secs}.{frac // 1000:03d}s"
    return f"{secs}.{frac:06d}s"


def to_proto(text: str) -> LogEntry:
    """The stored JSON as a LogEntry proto (jsonPayload a Struct).

    The fields every entry has are set directly; json_format handles the rest. About five
    times faster than ``json_format.Parse`` of the whole text, which matters for a page
    of 1000 entries.
    """
    d = json.loads(text)
    e = LogEntry()
    e.log_name = d.pop("logName", "")
    e.insert_id = d.pop("insertId", "")
    severity = d.pop("severity", None)
    if severity is not None:
        e.severity = SEVERITIES.get(severity, 0) if isinstance(severity, str) else severity
    for key, field in (("timestamp", e.timestamp), ("receiveTimestamp", e.receive_timestamp)):
        value = d.pop(key, None)
        if value:
            field.FromJsonString(value)
    resource = d.pop("resource", None)
    if resource is not None:
        e.resource.type = resource.get("type", "")
        e.resource.labels.update(resource.get("labels") or {})
    labels = d.pop("labels", None)
    if labels:
        e.labels.update(labels)
    payload = d.pop("jsonPayload", None)
    if payload is not None:
        e.json_payload.update(payload)
    if d:
        json_format.ParseDict(d, e)
    return e


@dataclass(frozen=True)
class Cursor:
    """Where a page ends: the last entry's (ts_us, seq), bound to the request it answers."""

    ts_us: int
    seq: int
    request: str  # digest of resource_names, filter and order_by

    def token(self) -> str:
        raw = f"{self.ts_us}:{self.seq}:{self.request}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @staticmethod
    def read(token: str, request: str) -> Cursor | None:
        """The cursor in ``token``, or None when it is not one of ours for this request."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            ts, seq, digest = raw.split(":")
            cursor = Cursor(int(ts), int(seq), digest)
        except (ValueError, UnicodeDecodeError):
            return None
        return cursor if cursor.request == request else None


def request_digest(resource_names: Sequence[str], filter_: str, descending: bool) -> str:
    text = "\n".join([*resource_names, filter_, "desc" if descending else "asc"])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class LogStore:
    def __init__(self, store: Store, retention_days: int = 30,
                 indexes: Iterable[str] = ()) -> None:
        self.db = store.db
        self.retention_us = retention_days * DAY_US
        self.db.executescript(SCHEMA)
        for statement in indexes:
            self.db.execute(statement)

    def add(self, rows: Sequence[LogRow]) -> None:
        """Insert entries; inside an open transaction they share its commit."""
        if rows:
            self.db.executemany(_INSERT, rows)

    def listed_window(self, now_us: int) -> tuple[int, int]:
        """The timestamps entries.list shows: within retention, at most 24 h ahead."""
        return now_us - self.retention_us, now_us + FUTURE_LIMIT_US

    def list(
        self,
        projects: Sequence[str],
        where: str,
        params: Sequence[object],
        descending: bool,
        after: Cursor | None,
        limit: int,
        now_us: int,
    ) -> list[tuple[int, int, str]]:
        """Up to ``limit`` entries (seq, ts_us, entry JSON) of ``projects`` matching ``where``
        (an SQL expression over the table's columns), in timestamp order, after ``after``."""
        low, high = self.listed_window(now_us)
        # substr() rather than a range on log_name, so that the planner does not take the
        # log_name index for a condition that nearly every entry meets.
        owners = " OR ".join("substr(log_name, 1, ?) = ?" for _ in projects)
        args: list[object] = []
        for p in projects:
            prefix = f"projects/{p}/logs/"
            args += [len(prefix), prefix]
        # The retention window as plain checks (+ts_us): as an index bound it would make
        # SQLite walk the whole window (a week) to reach the last hour a filter asks for.
        sql = f"SELECT seq, ts_us, entry FROM log_entries WHERE ({owners}) " \
              "AND +ts_us >= ? AND +ts_us <= ?"
        args += [low, high]
        if where:
            sql += f" AND ({where})"
            args += list(params)
        if after is not None:
            sql += " AND (ts_us, seq) < (?, ?)" if descending else " AND (ts_us, seq) > (?, ?)"
            args += [after.ts_us, after.seq]
        order = "DESC" if descending else "ASC"
        sql += f" ORDER BY ts_us {order}, seq {order} LIMIT ?"
        args.append(limit)
        return self.db.execute(sql, args).fetchall()

    def expire(self, now_us: int) -> int:
        """Delete entries past retention, a batch at a time; how many went."""
        cutoff = now_us - self.retention_us
        return self.db.execute(
            "DELETE FROM log_entries WHERE seq IN "
            "(SELECT seq FROM log_entries WHERE ts_us < ? LIMIT ?)",
            (cutoff, EXPIRE_BATCH),
        ).rowcount

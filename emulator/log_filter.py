"""Cloud Logging's filter language for the emulator's ListLogEntries: the public face.

``compile_filter(text)`` turns a filter into a SQL boolean expression over the store's
``log_entries`` table and its parameters (every literal is a parameter; field paths are
validated and quoted), or raises ``FilterError`` whose ``message`` is the INVALID_ARGUMENT
text. ``INDEXES`` are the expression indexes that keep Enqueuer's queries fast at a million
entries; their expressions are written exactly as ``compile_filter`` writes them, or SQLite
would not use them.

The parser is ``log_filter_parse``, the translation to SQL ``log_filter_sql``; what the
language means there is cited from Google's "Logging query language"
(https://cloud.google.com/logging/docs/view/logging-query-language).
"""

from __future__ import annotations

from emulator.log_filter_parse import FilterError, parse
from emulator.log_filter_sql import SEVERITIES, to_sql

__all__ = ["INDEXES", "SEVERITIES", "FilterError", "compile_filter"]


def compile_filter(text: str) -> tuple[str, list[object]]:
    """A SQL boolean expression over log_entries' columns, and its parameters.

    An empty filter (or one of comments only) is ``"1"``: every entry.
    """
    return to_sql(parse(text))


def _index(name: str, *columns: str) -> str:
    return f"CREATE INDEX IF NOT EXISTS {name} ON log_entries({', '.join(columns)})"


def _json(path: str) -> str:
    return f"json_extract(entry, '$.{path}') COLLATE NOCASE"


# One index per hot equality, each followed by ts_us: the equality finds the entries and the
# index already holds them in time order (with seq, the rowid, as the tie-break), so "newest
# 50" reads 50 index entries instead of sorting. The queries are the plan's Contract B.
INDEXES: list[str] = [
    # Time alone: retention, windows with no better column ("attempts per minute").
    _index("log_entries_ts", "ts_us"),
    # 1. A task's attempts: jsonPayload.task = T.
    _index("log_entries_task", _json("jsonPayload.task"), "ts_us"),
    # 2. A queue's dead letters: resource.labels.queue_id = Q AND severity >= ERROR; the
    # severity range skips the queue's successes, the few failures left are sorted.
    _index("log_entries_queue", _json("resource.labels.queue_id"), "severity", "ts_us"),
    # 3. Activity: labels.log = "enqueuer-audit", newest first; by person too.
    _index("log_entries_label_log", _json("labels.log"), "ts_us"),
    _index("log_entries_audit_principal", _json("jsonPayload.audit.principal"), "ts_us"),
    # 5. The enqueue audit line of a task (replay).
    _index("log_entries_audit_task", _json("jsonPayload.audit.task"), "ts_us"),
]

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


def _index(name: str, path: str | None, *columns: str, present: str | None = None) -> str:
    """An index led by the JSON field at ``path`` (when given), partial on the presence of
    ``present`` (default: that field): an entry without it costs no index entry, no write and
    no space. The planner takes a partial index for ``field = ?``, which implies the field is
    there, or when the filter tests the same presence (``present:*``, compiled to the very
    same ``… IS NOT NULL``)."""
    if path is None:
        return f"CREATE INDEX IF NOT EXISTS {name} ON log_entries({', '.join(columns)})"
    field = f"json_extract(entry, '$.{path}')"
    where = f"json_extract(entry, '$.{present or path}')"
    return (f"CREATE INDEX IF NOT EXISTS {name} ON log_entries("
            f"{', '.join((field + ' COLLATE NOCASE', *columns))}) WHERE {where} IS NOT NULL")


# One index per hot equality, each followed by ts_us: the equality finds the entries and the
# index holds them in time order already (with seq, the rowid, as the tie-break), so "the
# newest 50" reads 50 index entries instead of sorting. The queries are Contract B of the
# issue's plan.
#
# The order matters. With no statistics (the store runs no ANALYZE), SQLite rates two
# indexes that each serve an equality and the ORDER BY alike, and then takes the one created
# last (SQLite 3.40, checked in tests/emulator/test_log_filter.py). So the fields come from
# the least selective to the most: labels.log = "enqueuer-audit" matches every audit line, a
# principal only theirs, a task's name a handful.
INDEXES: list[str] = [
    # Time alone: windows with no better column ("attempts per minute"), retention.
    _index("log_entries_ts", None, "ts_us"),
    # 3. Activity, newest first, and its filters.
    _index("log_entries_label_log", "labels.log", "ts_us"),
    _index("log_entries_audit_outcome", "jsonPayload.audit.outcome", "ts_us"),
    _index("log_entries_audit_action", "jsonPayload.audit.action", "ts_us"),
    _index("log_entries_audit_principal", "jsonPayload.audit.principal", "ts_us"),
    # 2. A queue's dead letters: queue_id = Q AND severity >= ERROR AND
    # attemptResponseLog:*; the severity range skips the queue's successes, and the few
    # failures left are sorted. 4. A queue's attempts per minute: attemptResponseLog:* too.
    # Only attempt responses (a third of a task's entries) are in it: each entry an index
    # holds costs the dispatcher a page write per commit (bench/history.py).
    _index("log_entries_queue", "resource.labels.queue_id", "severity", "ts_us",
           present="jsonPayload.attemptResponseLog"),
    # 1. A task's attempts; 5. the enqueue audit line of a task (replay).
    _index("log_entries_task", "jsonPayload.task", "ts_us"),
    _index("log_entries_audit_task", "jsonPayload.audit.task", "ts_us"),
]

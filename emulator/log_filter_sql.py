"""A parsed Logging filter turned into a SQL boolean expression over ``log_entries``.

Pure (no I/O). Field paths map to SQL textually exactly as the store's expression indexes
expect (Contract A in the issue's plan): ``logName`` -> ``log_name``, ``timestamp`` ->
``ts_us``, ``severity`` -> ``severity``, anything else -> ``json_extract(entry, '$.<path>')``.

Meaning, from Google's "Logging query language"
(https://cloud.google.com/logging/docs/view/logging-query-language):

- "String comparisons ignore letter case": strings compare ``COLLATE NOCASE`` and ``:`` is
  a ``LIKE`` (both fold ASCII letters only; Google folds with NFKC_Casefold).
- "The [VALUE] is converted to the field's type prior to the comparison": a value that
  reads as a number equals a JSON number or the same text (``dispatchCount = 3`` matches
  the string "3", ``maxAttempts = "5"`` the number 5); ``true``/``false`` equal JSON
  Booleans. Ordering a JSON string is lexicographic, a JSON number numeric. "If an
  attempted conversion fails, then the comparison fails."
- Missing fields: "all comparisons using missing fields fail silently", ``missing != foo``
  is false, and ``NOT missing = foo`` is true. SQL's NULL does the first two; NOT turns a
  NULL into false first (``NOT coalesce(…, 0)``).
- ``FIELD:*`` is true when the field is present; ``FIELD = NULL_VALUE`` when it is JSON null.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from emulator.log_filter_parse import And, Compare, FilterError, Node, Not, Or, Path, Value

# google.logging.type.LogSeverity
SEVERITIES = {"DEFAULT": 0, "DEBUG": 100, "INFO": 200, "NOTICE": 300, "WARNING": 400,
              "ERROR": 500, "CRITICAL": 600, "ALERT": 700, "EMERGENCY": 800}

# LogEntry's fields (google/logging/v2/log_entry.proto), by how a path below them is read.
_COLUMNS = {"logName": "log_name", "timestamp": "ts_us", "severity": "severity"}
_SCALARS = {"insertId", "textPayload", "trace", "spanId", "traceSampled", "receiveTimestamp"}
_MESSAGES = {"httpRequest", "operation", "sourceLocation", "split", "resource"}
_FREE = {"jsonPayload", "protoPayload", "labels", "errorGroups", "apphub",
         "apphubDestination", "apphubSource"}
_TOP = set(_COLUMNS) | _SCALARS | _MESSAGES | _FREE
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"([Zz]|[+-]\d{2}:\d{2})?)?")
_ORDER = ("<", "<=", ">", ">=")


@dataclass(frozen=True)
class Sql:
    text: str
    params: list[object]
    nullable: bool = True  # may be NULL (a missing field), which NOT must turn into false


def to_sql(node: Node | None) -> tuple[str, list[object]]:
    if node is None:
        return "1", []
    sql = _node(node)
    return sql.text, sql.params


def _node(node: Node) -> Sql:
    if isinstance(node, And | Or):
        parts = [_node(n) for n in node.items]
        word = " AND " if isinstance(node, And) else " OR "
        return Sql("(" + word.join(p.text for p in parts) + ")",
                   [x for p in parts for x in p.params], any(p.nullable for p in parts))
    if isinstance(node, Not):
        inner = _node(node.item)
        text = f"NOT coalesce({inner.text}, 0)" if inner.nullable else f"NOT {inner.text}"
        return Sql(text, inner.params, False)
    return _compare(node)


# -- fields --------------------------------------------------------------------------------


def _camel(name: str) -> str:
    return re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), name)


def _bad_path(path: Path, why: str) -> FilterError:
    return FilterError(f"Invalid filter: {path.text} at line {path.line}, column {path.col}: "
                       f"{why}")


def field_sql(path: Path) -> tuple[str, str]:
    """(kind, SQL) of a field path: kind "column" or "json"."""
    parts = list(path.parts)
    top = _camel(parts[0])
    if top not in _TOP:
        raise _bad_path(path, f"{parts[0]} is not a field of a log entry; a path starts with "
                        "one of " + ", ".join(sorted(_TOP)))
    parts[0] = top
    if (top in _COLUMNS or top in _SCALARS) and len(parts) > 1:
        raise _bad_path(path, f"{top} has no fields below it")
    if top in _COLUMNS:
        return "column", _COLUMNS[top]
    if top in _MESSAGES and len(parts) > 1:
        parts[1] = _camel(parts[1])
        if top == "resource" and (parts[1] not in ("type", "labels")
                                  or (parts[1] == "type" and len(parts) > 2)):
            raise _bad_path(path, "a resource has only type and labels.KEY")
    for p in parts:
        if not p or '"' in p or any(ord(c) < 32 for c in p):
            raise _bad_path(path, "a path component is empty or holds a double quote or a "
                            "control character")
    json_path = "$." + ".".join(p if _IDENT.fullmatch(p) else f'"{p}"' for p in parts)
    return "json", "json_extract(entry, '" + json_path.replace("'", "''") + "')"


# -- values --------------------------------------------------------------------------------


def _number(v: Value) -> int | float | None:
    if not _NUMBER.fullmatch(v.text):
        return None
    if re.fullmatch(r"[+-]?[0-9]+", v.text):
        return int(v.text)
    return float(v.text)


def timestamp_us(text: str) -> int | None:
    """RFC 3339 (``Z`` or ``±hh:mm``; none is UTC) or a date (its midnight, UTC), in
    microseconds; digits past the microsecond are dropped."""
    m = _TIMESTAMP.fullmatch(text.strip())
    if not m:
        return None
    year, month, day, hh, mm, ss, frac, zone = m.groups()
    tz = dt.UTC
    if zone and zone not in "Zz":
        sign = -1 if zone[0] == "-" else 1
        tz = dt.timezone(sign * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        when = dt.datetime(int(year), int(month), int(day), int(hh or 0), int(mm or 0),
                           int(ss or 0), int((frac or "0").ljust(6, "0")[:6]), tzinfo=tz)
    except ValueError:
        return None
    return (when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def _like(text: str) -> str:
    return "%" + re.sub(r"([\\%_])", r"\\\1", text) + "%"


# -- comparisons ---------------------------------------------------------------------------


def _where(c: Compare, why: str) -> FilterError:
    return FilterError(f"Invalid filter: {c.path.text} {c.op} … at line {c.path.line}, "
                       f"column {c.path.col}: {why}")


def _compare(c: Compare) -> Sql:
    kind, x = field_sql(c.path)
    if x == "ts_us":
        return _timestamp(c)
    if x == "severity":
        return _severity(c)
    if c.value is None:  # FIELD:*
        return Sql("1", [], False) if kind == "column" else Sql(f"{x} IS NOT NULL", [], False)
    v = c.value
    if not v.quoted and v.text == "NULL_VALUE":
        if kind == "column" or c.op not in ("=", "!="):
            raise _where(c, "NULL_VALUE compares only with = or != on a jsonPayload field")
        jtype = "json_type" + x[len("json_extract"):]
        return Sql(f"{jtype} {'=' if c.op == '=' else '!='} 'null'", [])
    if c.op == ":":
        return Sql(f"{x} LIKE ? ESCAPE '\\'", [_like(v.text)])
    num = _number(v) if kind == "json" else None
    if c.op in ("=", "!="):
        extra: list[object] = []
        if num is not None:
            extra.append(num)
        elif kind == "json" and v.text.lower() in ("true", "false"):
            extra.append(int(v.text.lower() == "true"))  # json_extract's true is 1
        if extra:
            # One IN keeps the expression index usable, where an OR of two would not.
            marks = ", ".join("?" * (1 + len(extra)))
            sql = f"{x} COLLATE NOCASE IN ({marks})"
        else:
            sql = f"{x} = ? COLLATE NOCASE"
        if c.op == "!=":
            sql = f"NOT ({sql})" if extra else f"{x} != ? COLLATE NOCASE"
        return Sql(sql, [v.text, *extra], kind == "json")
    if num is None:
        text = f"{x} {c.op} ? COLLATE NOCASE"
        if kind == "json":  # a JSON number never converts from a non-numeric value
            text = f"(typeof({x}) = 'text' AND {text})"
        return Sql(text, [v.text], kind == "json")
    return Sql(f"(CASE typeof({x}) WHEN 'text' THEN {x} {c.op} ? COLLATE NOCASE "
               f"ELSE {x} {c.op} ? END)", [v.text, num])


def _timestamp(c: Compare) -> Sql:
    if c.value is None:
        return Sql("1", [], False)
    if c.op == ":":
        raise _where(c, "timestamp has no substrings; compare it with =, <, <=, >, >= or !=, "
                     'e.g. timestamp>="2026-12-01T00:00:00Z"')
    us = timestamp_us(c.value.text)
    if us is None:
        raise _where(c, f'"{c.value.text}" is not a timestamp; write RFC 3339 in double quotes,'
                     ' e.g. "2026-12-01T00:00:00Z", or a date, e.g. "2026-12-01"')
    return Sql(f"ts_us {c.op} ?", [us], False)


def _severity(c: Compare) -> Sql:
    if c.value is None:  # proto3 leaves DEFAULT out of an entry's JSON: "not present"
        return Sql("severity != 0", [], False)
    text = c.value.text.strip().upper()
    level = SEVERITIES.get(text)
    if level is None and re.fullmatch(r"[0-9]+", text):
        level = int(text)
    if level is None:
        raise _where(c, f'"{c.value.text}" is not a severity; use one of '
                     + ", ".join(SEVERITIES) + " or a number")
    op = "=" if c.op == ":" else c.op
    return Sql(f"severity {op} ?", [level], False)

"""Times as the Logging query language writes them, and ``--since`` as people write it."""

from __future__ import annotations

import datetime as dt
import re

from enqueuer_core.errors import InvalidRequest

_SPAN = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def rfc3339(value: dt.datetime) -> str:
    """A UTC time as the Logging query language takes it: ``2026-12-01T00:00:00Z``
    (https://cloud.google.com/logging/docs/view/logging-query-language#times)."""
    value = utc(value)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}"
    return text + "Z"


def utc(value: dt.datetime) -> dt.datetime:
    """``value`` in UTC; a naive time is taken as UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def parse_since(text: str, now: dt.datetime | None = None, what: str = "--since",
                ) -> dt.datetime:
    """``30m``, ``24h``, ``7d`` (ago, from ``now``) or an RFC 3339 time, as a UTC time.

    ``InvalidRequest`` says what was wrong and what is accepted.
    """
    now = utc(now or dt.datetime.now(dt.UTC))
    m = _SPAN.match(text)
    if m:
        return now - dt.timedelta(**{_UNITS[m[2].lower()]: int(m[1])})
    try:
        # Python 3.11's fromisoformat takes RFC 3339 with "Z" or an offset.
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        value = None
    if value is None or "T" not in text.upper() or value.tzinfo is None:
        raise InvalidRequest(
            f"{what} {text!r} is neither a span nor an RFC 3339 time: write a number and a "
            "unit (30m, 24h, 7d; s, m, h, d or w) or a time with its zone "
            "(2026-12-01T00:00:00Z)")
    return utc(value)

"""Task IDs from idempotency keys: deterministic, always valid, never colliding, readable.

Cloud Tasks accepts only ``[A-Za-z0-9_-]{1,500}`` in a task ID, and spreads named tasks
badly when their IDs share a sequential or timestamp prefix. So the ID starts with a hash
of the whole key (spreads well; different keys, different IDs) and goes on with the key
itself, its other characters turned into ``_`` (readable in the Console and the dashboard).
"""

from __future__ import annotations

import hashlib
import re
import uuid

MAX_KEY_CHARS = 500
MAX_TASK_ID = 500
_HASH_HEX = 32  # 128 bits: no two keys share an ID in practice
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_key(key: str) -> None:
    """A key is 1–500 characters of anything but control characters (it travels as a header)."""
    if not 1 <= len(key) <= MAX_KEY_CHARS:
        raise ValueError(f"idempotency_key must be 1 to {MAX_KEY_CHARS} characters, "
                         f"not {len(key)}")
    if _CONTROL.search(key):
        raise ValueError("idempotency_key must not contain control characters such as line "
                         "breaks or tabs: it is sent to the worker as the X-Idempotency-Key "
                         "header")


def new_key() -> str:
    return str(uuid.uuid4())


def task_id_for_key(key: str) -> str:
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:_HASH_HEX]
    readable = _NOT_ALLOWED.sub("_", key).strip("_")
    if not readable:
        return digest
    return f"{digest}-{readable}"[:MAX_TASK_ID]


def key_readable_part(task_id: str) -> str:
    """The key as the task ID shows it (``_`` where the key had other characters)."""
    return task_id[_HASH_HEX + 1:]

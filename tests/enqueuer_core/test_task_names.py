"""Task IDs derived from idempotency keys."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enqueuer_core.task_names import check_key, key_readable_part, task_id_for_key

VALID = re.compile(r"^[A-Za-z0-9_-]{1,500}$")
keys = st.text(min_size=1, max_size=500).filter(lambda k: not re.search(r"[\x00-\x1f\x7f]", k))


@given(keys)
def test_always_a_valid_task_id(key):
    assert VALID.match(task_id_for_key(key))


@given(keys, keys)
def test_different_keys_never_share_an_id(a, b):
    if a != b:
        assert task_id_for_key(a) != task_id_for_key(b)


def test_deterministic_and_readable():
    assert task_id_for_key("order-42") == task_id_for_key("order-42")
    tid = task_id_for_key("pedido 42/ñandú:x")
    assert key_readable_part(tid) == "pedido_42_and_x"


def test_starts_with_a_hash_not_the_key():
    # Keys with a shared (sequential, timestamp) prefix get well-spread IDs.
    a, b = task_id_for_key("2026-11-29T10:00:01"), task_id_for_key("2026-11-29T10:00:02")
    assert a[:8] != b[:8] or a[8:16] != b[8:16]
    assert re.match(r"^[0-9a-f]{32}-", a)


def test_keys_that_differ_only_in_refused_characters():
    ids = {task_id_for_key(k) for k in ("a b", "a:b", "a/b", "a_b", "a  b")}
    assert len(ids) == 5


def test_longest_key_fits():
    assert len(task_id_for_key("x" * 500)) == 500
    assert task_id_for_key("ñ" * 10).count("-") == 0  # nothing readable: the hash alone


@pytest.mark.parametrize("bad", ["", "x" * 501, "line\nbreak", "tab\there"])
def test_bad_keys_are_refused_with_the_reason(bad):
    with pytest.raises(ValueError, match="idempotency_key"):
        check_key(bad)

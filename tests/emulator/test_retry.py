"""Google's retry rules as pure functions."""

from __future__ import annotations

from emulator.retry import RetryPolicy


def policy(**kw: float) -> RetryPolicy:
    base = {"max_attempts": 100, "min_backoff_s": 10, "max_backoff_s": 300,
            "max_doublings": 3, "max_retry_duration_s": 0}
    return RetryPolicy(**{**base, **kw})  # type: ignore[arg-type]


def test_doubling_then_linear_then_capped():
    # The RetryConfig reference's own example.
    assert [policy().backoff_s(k) for k in range(1, 9)] == [10, 20, 40, 80, 160, 240, 300, 300]


def test_defaults_reach_max_backoff_of_an_hour():
    p = RetryPolicy(100, 0.1, 3600, 16, 0)
    assert p.backoff_s(1) == 0.1 and p.backoff_s(2) == 0.2
    assert p.backoff_s(16) == 0.1 * 2**15
    assert p.backoff_s(40) == 3600


def test_exhausted_needs_both_limits():
    p = policy(max_attempts=3, max_retry_duration_s=60)
    assert not p.exhausted(3, 59)
    assert not p.exhausted(2, 61)
    assert p.exhausted(3, 60)


def test_unset_limits():
    assert policy(max_attempts=3).exhausted(3, 0)
    assert not policy(max_attempts=-1, max_retry_duration_s=0).exhausted(10_000, 10**6)
    assert policy(max_attempts=-1, max_retry_duration_s=5).exhausted(2, 5)

"""Cloud Tasks' retry rules: when the next attempt happens and when a task is given up.

From the RetryConfig reference: the interval starts at ``min_backoff``, doubles
``max_doublings`` times, then grows linearly by ``2**max_doublings * min_backoff``, and is
capped at ``max_backoff``. With min 10 s, max 300 s, 3 doublings the retries come after
10, 20, 40, 80, 160, 240, 300, 300 ... seconds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int  # -1: unlimited
    min_backoff_s: float
    max_backoff_s: float
    max_doublings: int
    max_retry_duration_s: float  # 0: unlimited

    def backoff_s(self, attempts: int) -> float:
        """Delay before the next attempt, after ``attempts`` (>= 1) attempts have failed."""
        k = max(attempts, 1)
        if k - 1 <= self.max_doublings:
            interval = self.min_backoff_s * 2 ** (k - 1)
        else:
            interval = self.min_backoff_s * 2**self.max_doublings * (k - self.max_doublings)
        return min(interval, self.max_backoff_s)

    def exhausted(self, attempts: int, since_first_attempt_s: float) -> bool:
        """True when a failed task must not be tried again.

        When both limits are set the task is retried until both are reached; a limit
        that is not set (-1 attempts, 0 duration) does not hold the task back on its own,
        and with neither set the task is retried forever.
        """
        limits = []
        if self.max_attempts != -1:
            limits.append(attempts >= self.max_attempts)
        if self.max_retry_duration_s > 0:
            limits.append(since_first_attempt_s >= self.max_retry_duration_s)
        return bool(limits) and all(limits)

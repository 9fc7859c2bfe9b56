"""Queue configuration as Cloud Tasks applies it: defaults, limits, validation, update masks.

A queue's ``http_target`` (queue-level routing) is checked by ``http_target.validate`` and
applied at each dispatch by ``http_target.effective_request``.
"""

from __future__ import annotations

import math

from google.cloud import tasks_v2
from google.protobuf import field_mask_pb2

from emulator import http_target
from emulator.clock import duration, seconds
from emulator.errors import invalid
from emulator.retry import RetryPolicy

Queue = tasks_v2.Queue.pb()
RetryConfig = tasks_v2.RetryConfig.pb()
RUNNING = tasks_v2.Queue.State.RUNNING.value
PAUSED = tasks_v2.Queue.State.PAUSED.value

# Defaults of a queue created with no configuration (as `gcloud tasks queues describe` shows).
DEFAULT_RATE = 500.0
MAX_RATE = 500.0
DEFAULT_CONCURRENT = 1000
MAX_CONCURRENT = 5000
DEFAULT_MAX_ATTEMPTS = 100
DEFAULT_MIN_BACKOFF_S = 0.1
DEFAULT_MAX_BACKOFF_S = 3600.0
DEFAULT_MAX_DOUBLINGS = 16

# Fields a client may set; the rest of Queue is output only.
_SETTABLE = ("rate_limits", "retry_config", "stackdriver_logging_config", "http_target",
             "app_engine_routing_override")


def burst_size(rate: float) -> int:
    """Cloud Tasks picks the bucket size from the rate: 500/s gives 100."""
    return max(1, math.ceil(rate / 5))


def validate_and_default(queue: Queue) -> None:
    """Check the client's limits with Google's messages, then fill in what was left unset.

    As in the API, a zero (unset) field takes the default; max_burst_size is output only.
    """
    rl, rc = queue.rate_limits, queue.retry_config
    if rl.max_dispatches_per_second < 0:
        raise invalid("RateLimits.maxDispatchesPerSecond cannot be negative.")
    if rl.max_dispatches_per_second > MAX_RATE:
        raise invalid("RateLimits.maxDispatchesPerSecond must be less than or equal to 500.")
    if rl.max_concurrent_dispatches < 0:
        raise invalid("RateLimits.maxConcurrentDispatches cannot be negative.")
    if rl.max_concurrent_dispatches > MAX_CONCURRENT:
        raise invalid("RateLimits.maxConcurrentDispatches must be less than or equal to 5000.")
    if rc.max_attempts < -1:
        raise invalid("RetryConfig.maxAttempts must be greater or equal to -1.")
    if rc.max_doublings < 0:
        raise invalid("RetryConfig.maxDoublings cannot be negative.")
    if seconds(rc.min_backoff) < 0:
        raise invalid("RetryConfig.minBackoff cannot be negative.")
    if seconds(rc.max_backoff) < 0:
        raise invalid("RetryConfig.maxBackoff cannot be negative.")
    if seconds(rc.max_retry_duration) < 0:
        raise invalid("RetryConfig.maxRetryDuration cannot be negative.")
    if queue.HasField("http_target"):
        http_target.drop_empty(queue.http_target)
        if queue.http_target.ByteSize():
            project = queue.name.split("/")[1] if queue.name.count("/") else "PROJECT"
            http_target.validate(queue.http_target, project)
        else:
            queue.ClearField("http_target")  # every part cleared: no queue-level routing

    if not rl.max_dispatches_per_second:
        rl.max_dispatches_per_second = DEFAULT_RATE
    if not rl.max_concurrent_dispatches:
        rl.max_concurrent_dispatches = DEFAULT_CONCURRENT
    rl.max_burst_size = burst_size(rl.max_dispatches_per_second)
    if not rc.max_attempts:
        rc.max_attempts = DEFAULT_MAX_ATTEMPTS
    if not rc.HasField("min_backoff"):
        rc.min_backoff.CopyFrom(duration(DEFAULT_MIN_BACKOFF_S))
    if not rc.HasField("max_backoff"):
        rc.max_backoff.CopyFrom(duration(DEFAULT_MAX_BACKOFF_S))
    if not rc.max_doublings:
        rc.max_doublings = DEFAULT_MAX_DOUBLINGS
    if seconds(rc.min_backoff) > seconds(rc.max_backoff):
        raise invalid(
            "RetryConfig.minBackoff must be less than or equal to RetryConfig.maxBackoff."
        )
    if not queue.state:
        queue.state = RUNNING


def apply_update(current: Queue, update: Queue, mask: field_mask_pb2.FieldMask) -> Queue:
    """UpdateQueue: the fields named by ``mask`` (all settable ones when empty) from ``update``."""
    paths = list(mask.paths) or [f for f in _SETTABLE if update.HasField(f)]
    for path in paths:
        if path.split(".")[0] not in _SETTABLE:
            raise invalid(
                f'Invalid field mask path "{path}": only rate_limits, retry_config, '
                "stackdriver_logging_config, http_target and app_engine_routing_override "
                "can be updated."
            )
    merged = Queue()
    merged.CopyFrom(current)
    # Clear what the mask names so that an unset value in the update means "default".
    for path in paths:
        _clear(merged, path)
    field_mask_pb2.FieldMask(paths=paths).MergeMessage(update, merged)
    validate_and_default(merged)
    return merged


def _clear(msg: Queue, path: str) -> None:
    *parents, leaf = path.split(".")
    for p in parents:
        msg = getattr(msg, p)
    msg.ClearField(leaf)


def retry_policy(rc: RetryConfig) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=rc.max_attempts or DEFAULT_MAX_ATTEMPTS,
        min_backoff_s=seconds(rc.min_backoff) if rc.HasField("min_backoff")
        else DEFAULT_MIN_BACKOFF_S,
        max_backoff_s=seconds(rc.max_backoff) if rc.HasField("max_backoff")
        else DEFAULT_MAX_BACKOFF_S,
        max_doublings=rc.max_doublings or DEFAULT_MAX_DOUBLINGS,
        max_retry_duration_s=seconds(rc.max_retry_duration),
    )

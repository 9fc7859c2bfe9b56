"""Time as the store keeps it (integer microseconds since the epoch) and as protos carry it."""

from __future__ import annotations

import time

from google.protobuf import duration_pb2, timestamp_pb2

US = 1_000_000


def now_us() -> int:
    return time.time_ns() // 1000


def to_timestamp(us: int) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromMicroseconds(us)
    return ts


def from_timestamp(ts: timestamp_pb2.Timestamp) -> int:
    return ts.ToMicroseconds()


def seconds(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


def duration(secs: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(secs * 1e9))
    return d

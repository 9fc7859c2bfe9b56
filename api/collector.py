"""The API process's garbage collector, set for a server that answers many small requests.

Measured around 6,200 ``POST /enqueue`` (bench/api.py's load, with ``gc.callbacks``): with
CPython's defaults (a young collection every 700 net allocations) the API ran a young
collection about every ten requests and, every ~1,200 requests, a full one over the ~125,000
objects that FastAPI, pydantic and the Google clients keep from start-up, 70 ms each (the
p99 latency). Together about 80 µs of CPU per request.

``settle()`` is called once the app is built: the objects made at start-up move to the
permanent generation (``gc.freeze``), which collections skip, and the young generation's
threshold goes past what the requests in flight hold at once, so that it runs when garbage has
built up rather than every few requests (then about once per 6,000). Memory without cycles is
freed by reference counting as always; cycles are still collected, later.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """Freeze what start-up made and raise the young generation's threshold."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)

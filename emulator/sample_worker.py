"""The sample worker each emulated Cloud Run service runs behind the front door.

Any method on one of the service's ``paths`` answers 200 with an echo::

    {"ok": true, "service": "brain", "path": "/process", "received": <the JSON body or null>,
     "attempt": 0}

Any other path answers 404, which is how a task sent to a wrong URL path shows up.

``attempt`` counts from 0: the ``X-CloudTasks-TaskRetryCount`` header when there is one;
without it, the requests seen so far with the same ``X-Idempotency-Key``; without that, the
requests seen so far on the same path.

Simulation knobs, in a JSON object body under ``"_simulate"``:

=================  ====================================================================
``fail_first: N``  answer ``status`` to attempts 0 .. N-1, then succeed (retries)
``status: S``      the failing status, 500 by default; given without ``fail_first``,
                   every attempt answers ``S``
``delay_s: D``     take ``D`` seconds before answering (past the service's ``timeout_s``
                   the front door cuts the worker off with a 504)
=================  ====================================================================

For example ``{"job": 1, "_simulate": {"fail_first": 2, "status": 503}}`` answers 503, 503,
then 200. A knob of the wrong type answers 400 naming it.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

_MAX_COUNTERS = 10_000


class SimulationError(ValueError):
    """A ``_simulate`` knob that cannot be used."""


def parse_json(body: bytes) -> Any:
    """The body as JSON, or None when it is empty or not JSON."""
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def knobs(received: Any) -> tuple[int, int | None, float]:
    """``(fail_first, status, delay_s)`` from a body; ``status`` None: not failing."""
    sim = received.get("_simulate") if isinstance(received, dict) else None
    if sim is None:
        return 0, None, 0.0
    if not isinstance(sim, dict):
        raise SimulationError('"_simulate" must be an object, for example '
                              '{"fail_first": 2, "status": 503, "delay_s": 1}')
    unknown = set(sim) - {"fail_first", "status", "delay_s"}
    if unknown:
        raise SimulationError(f'unknown "_simulate" knob(s) {sorted(unknown)}: use '
                              '"fail_first", "status" or "delay_s"')
    fail_first = sim.get("fail_first", 0)
    status = sim.get("status")
    delay = sim.get("delay_s", 0)
    if not isinstance(fail_first, int) or isinstance(fail_first, bool) or fail_first < 0:
        raise SimulationError('"_simulate.fail_first" must be a whole number >= 0')
    if status is not None and (not isinstance(status, int) or isinstance(status, bool)
                               or not 200 <= status <= 599):
        raise SimulationError('"_simulate.status" must be an HTTP status between 200 and 599')
    if not isinstance(delay, int | float) or isinstance(delay, bool) or not 0 <= delay <= 3600:
        raise SimulationError('"_simulate.delay_s" must be a number of seconds, 0 to 3600')
    if fail_first and status is None:
        status = 500
    elif status is not None and "fail_first" not in sim:
        fail_first = -1  # always
    return fail_first, status, float(delay)


class SampleWorker:
    def __init__(self, service: str, paths: list[str]) -> None:
        self.service = service
        self.paths = set(paths)
        self._seen: OrderedDict[tuple[str, str], int] = OrderedDict()

    def attempt(self, path: str, headers: Mapping[str, str]) -> int:
        retry = headers.get("X-CloudTasks-TaskRetryCount", "")
        if retry.isdigit():
            return int(retry)
        key = headers.get("X-Idempotency-Key")
        counter = ("key", key) if key else ("path", path)
        n = self._seen.pop(counter, 0)
        self._seen[counter] = n + 1
        if len(self._seen) > _MAX_COUNTERS:
            self._seen.popitem(last=False)
        return n

    async def handle(self, path: str, headers: Mapping[str, str],
                     received: Any) -> tuple[int, dict[str, Any]]:
        """``(status, JSON answer)`` for a request the front door let through."""
        if path not in self.paths:
            return 404, {"ok": False, "service": self.service, "path": path,
                         "error": f"no such path: {self.service} serves "
                                  f"{', '.join(sorted(self.paths))}"}
        try:
            fail_first, status, delay = knobs(received)
        except SimulationError as e:
            return 400, {"ok": False, "service": self.service, "path": path,
                         "error": str(e)}
        attempt = self.attempt(path, headers)
        if delay:
            await asyncio.sleep(delay)
        answer: dict[str, Any] = {"ok": True, "service": self.service, "path": path,
                                  "received": received, "attempt": attempt}
        if status is not None and (fail_first < 0 or attempt < fail_first):
            answer.update(ok=False, simulated=status)
            return status, answer
        return 200, answer

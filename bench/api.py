"""Benchmark of the HTTP API beside the library it wraps (run by hand). Not a test.

One run starts the emulator (``python -m emulator``, the three workers' queues PAUSED so
nothing is dispatched, state in a temporary SQLite file) and the API
(``python -m uvicorn app:app`` on a free port, its environment pointing at the emulator)
as subprocesses, then, with the same concurrency and count and unique idempotency keys:

1. ``Enqueuer.enqueue_async`` called directly in this process, as the local operator (the
   access decision and the audit line included; the lines go to /dev/null);
2. ``POST /enqueue`` through the API, over keep-alive connections from ``http_load`` (the
   cheapest client: its CPU comes out of the same two cores), each request carrying the local
   operator's ID token from the emulator's issuer (the API verifies it every time, from its
   cached certificates; its audit lines go to its log);

each from one event loop with the same number of requests in flight.

It prints enqueues per second and p50/p99 latency of each, then each figure beside its
target: the API's rate as a fraction of the direct one (≥ 0.8: the API costs at most a
fifth), the CPU per enqueue of this process in the direct phase (the library, ≤ 250 µs) and
of the API process in the API phase (≤ 400 µs), from /proc; then every process's CPU per
enqueue in each phase, and the machine's pace before and after (``processes.pace_us``: on a
shared machine CPU figures vary with it, by 2x within minutes). Every process it starts is
stopped before it exits, on error too; a missed target makes the exit status 1.

    .venv/bin/python bench/api.py
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from http_load import Connections
from processes import READY, pace_us, start_emulator, stop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from enqueuer_core.access import Acting, member_for_email  # noqa: E402
from enqueuer_core.build import EnqueueRequest  # noqa: E402
from enqueuer_core.config import LOCAL_API_CALLER, load_settings  # noqa: E402
from enqueuer_core.enqueue import Enqueuer  # noqa: E402
from enqueuer_core.tokens import mint_id_token  # noqa: E402

N = 3_000
CONCURRENCY = 16
WARMUP = 100
TARGET_RATIO = 0.8
TARGET_LIBRARY_US = 250  # CPU per enqueue of the process calling Enqueuer.enqueue_async
TARGET_API_US = 400  # CPU per enqueue of the API process
QUIET_PACE_US = 8.5  # processes.pace_us() on the 2-core machine the targets were set on, quiet
PROJECT, REGION = "local-project", "us-central1"
QUEUES = ("queue-brain", "queue-testimonios", "queue-transcripciones")
CONFIG = f'project = "{PROJECT}"\nlocation = "{REGION}"\n' + "".join(
    f'\n[[queues]]\nname = "{q}"\npaused = true\n' for q in QUEUES)
PAYLOAD = {"job": "bench", "id": "0" * 16, "data": "x" * 64}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



def wait_for(check: Callable[[], object], what: str, proc: subprocess.Popen, log: Path,
             timeout: float = 30) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not become ready (exit code {proc.poll()}):\n"
                       f"{log.read_text()[-3000:]}")


def reachable(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


Measured = tuple[float, list[float], int]  # seconds, latencies in s, failures


async def measure(one: Callable[[int], Awaitable[bool]], n: int) -> Measured:
    """``await one(i)`` for i < n, CONCURRENCY at a time."""
    latencies: list[float] = []
    todo = iter(range(n))
    failed = 0

    async def worker() -> None:
        nonlocal failed
        for i in todo:
            t0 = time.perf_counter()
            ok = await one(i)
            latencies.append(time.perf_counter() - t0)
            failed += not ok

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.perf_counter() - t0, latencies, failed


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def cpu_per_enqueue(pids: dict[str, int], phase: Callable[[], Awaitable[Measured]]
                          ) -> tuple[Measured, dict[str, float]]:
    """Run ``phase``; also the CPU microseconds each process spent per enqueue in it."""
    before = {k: cpu_s(p) for k, p in pids.items()}
    result = await phase()
    return result, {k: (cpu_s(p) - before[k]) / N * 1e6 for k, p in pids.items()}


def percentiles(latencies: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(latencies, n=100)
    return q[49] * 1000, q[98] * 1000


def run(tmp: Path) -> bool:
    procs: list[subprocess.Popen] = []
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        emulator, target = start_emulator(tmp, CONFIG)
        procs.append(emulator)

        found = READY.search((tmp / "emulator.log").read_text())
        assert found, "the emulator's ready line names its HTTP address"
        emulator_http = found["http"]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        settings_env = {"CLOUD_TASKS_EMULATOR_HOST": target, "PROJECT_ID": PROJECT,
                        "TASKS_REGION": REGION, "EMULATOR_HTTP_URL": emulator_http,
                        "API_AUDIENCE": url}
        alog = tmp / "api.log"
        with alog.open("w") as log:
            api = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1",
                 "--port", str(port), "--log-level", "warning"],
                cwd=ROOT, env={**env, **settings_env}, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        procs.append(api)
        wait_for(lambda: reachable(url + "/healthz"), "the API", api, alog)
        print(f"emulator pid {emulator.pid} at {target}; API pid {api.pid} at {url}; "
              f"{N:,} enqueues each, {CONCURRENCY} at a time, queues paused", flush=True)

        run_id = uuid.uuid4().hex[:8]
        enqueuer = Enqueuer(load_settings(**{k.lower(): v for k, v in settings_env.items()}))
        operator = Acting(member_for_email(LOCAL_API_CALLER), enqueuer.access, "api")
        token = {"Authorization": f"Bearer {mint_id_token(emulator_http, LOCAL_API_CALLER, url)}"}
        failures: list[str] = []
        pids = {"bench": os.getpid(), "API": api.pid, "emulator": emulator.pid}

        async def phases() -> tuple[tuple[Measured, dict[str, float]], ...]:
            # Both sides driven the way the API itself works: one event loop, CONCURRENCY
            # requests in flight, so that the load generator costs as little as it can.
            async def direct(i: int, phase: str = "direct") -> bool:
                request = EnqueueRequest(service="testimonios", payload=PAYLOAD,
                                         idempotency_key=f"{run_id}-{phase}-{i}")
                try:
                    await enqueuer.enqueue_async(request, operator)
                    return True
                except Exception as e:  # counted and shown, never hidden
                    failures.append(f"direct: {type(e).__name__}: {e}")
                    return False

            # Warm each path up before it is measured: the gRPC channel, imports, caches (the
            # API's certificates among them).
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                await measure(lambda i: direct(i, "warm-direct"), WARMUP)
                d = await cpu_per_enqueue(pids, lambda: measure(direct, N))

            # The cheapest client there is (http_load): on two shared cores, the client's CPU
            # per request is taken from the API and the emulator. Connected now, not before the
            # direct phase, which may outlast the API's keep-alive timeout.
            async with Connections("127.0.0.1", port, CONCURRENCY) as http:

                async def through_api(i: int, phase: str = "api") -> bool:
                    status, body = await http.post_json("/enqueue", token, {
                        "service": "testimonios", "payload": PAYLOAD,
                        "idempotency_key": f"{run_id}-{phase}-{i}"})
                    if status != 200:
                        failures.append(f"api: {status} {body[:200]!r}")
                    return status == 200

                await measure(lambda i: through_api(i, "warm-api"), WARMUP)
                a = await cpu_per_enqueue(pids, lambda: measure(through_api, N))
            return d, a

        pace_before = pace_us()
        ((d_s, d_lat, d_fail), d_cpu), ((a_s, a_lat, a_fail), a_cpu) = asyncio.run(phases())
        pace_after = pace_us()

        for f in failures[:5]:
            print("  failed:", f, file=sys.stderr)
        d_rate, a_rate = (N - d_fail) / d_s, (N - a_fail) / a_s
        (d50, d99), (a50, a99) = percentiles(d_lat), percentiles(a_lat)
        ratio = a_rate / d_rate
        library_us, api_us = d_cpu["bench"], a_cpu["API"]
        targets = [  # figure, value, shown, target shown, met
            ("API ÷ direct (rate)", ratio, f"{ratio:.2f}", f"≥ {TARGET_RATIO:.2f}",
             ratio >= TARGET_RATIO),
            ("library CPU per enqueue (this process)", library_us, f"{library_us:,.0f} µs",
             f"≤ {TARGET_LIBRARY_US} µs", library_us <= TARGET_LIBRARY_US),
            ("API process CPU per enqueue", api_us, f"{api_us:,.0f} µs",
             f"≤ {TARGET_API_US} µs", api_us <= TARGET_API_US),
        ]
        ok = all(met for *_, met in targets) and not d_fail and not a_fail
        print()
        print(f"  {'figure':<40} {'enqueues':>10}  {'p50 / p99 ms':>14}")
        for label, rate, (p50, p99) in (("Enqueuer.enqueue_async, direct", d_rate, (d50, d99)),
                                        ("POST /enqueue, uvicorn", a_rate, (a50, a99))):
            print(f"  {label:<40} {f'{rate:,.0f}/s':>10}  {f'{p50:.1f} / {p99:.1f}':>14}")
        print()
        print(f"  {'target':<40} {'measured':>10}  {'target':>14}  status")
        for label, _, shown, target_s, met in targets:
            print(f"  {label:<40} {shown:>10}  {target_s:>14}  {'OK' if met else 'MISSED'}")
        print(f"  failures: direct {d_fail}, API {a_fail}")
        print(f"  CPU per enqueue (this machine: {os.cpu_count()} cores), direct: "
              + ", ".join(f"{k} {v:,.0f} µs" for k, v in d_cpu.items() if k != "API")
              + "; through the API: " + ", ".join(f"{k} {v:,.0f} µs" for k, v in a_cpu.items()))
        d_total, a_total = sum(d_cpu.values()), sum(a_cpu.values())
        print(f"  CPU per enqueue, all processes: direct {d_total:,.0f} µs, through the API "
              f"{a_total:,.0f} µs: where CPU is what runs out, the API can reach about "
              f"{d_total / a_total:.2f} of the direct rate")
        print(f"  machine pace: {pace_before:.1f} µs before, {pace_after:.1f} µs after "
              f"(sum(range(1000)); {QUIET_PACE_US} µs on this machine when quiet): CPU figures "
              "scale with it")
        missed = [label for label, *_, met in targets if not met]
        if missed:
            print("\nMISSED: " + "; ".join(missed))
        return ok
    finally:
        for proc in reversed(procs):
            stop(proc)


def main() -> int:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        ok = run(Path(tmp))
    print(f"\nwhole run: {time.perf_counter() - started:.1f} s (processes stopped)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

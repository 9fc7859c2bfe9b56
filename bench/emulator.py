"""Benchmark of the Cloud Tasks emulator (run by hand: ``make bench``). Not a test.

One run starts the emulator (``python -m emulator``, state in a temporary SQLite file) and
a receiver (a small aiohttp server in its own process) as subprocesses, drives them with the
official client (``google-cloud-tasks`` over plaintext gRPC) and prints, each beside its
target:

1. CreateTask calls per second from 8 threads into a paused queue;
2. dispatches per second of one queue (rate limit 500/s, the API's maximum) with OIDC
   tokens to the receiver, beside what a plain aiohttp client reaches against the same
   receiver; also the total of several queues at once, which the per-queue cap hides;
3. the emulator's RSS with 100,000 pending tasks;
4. ListTasks of one page of 1,000 on that queue (first page and second page).

Every process the benchmark starts is stopped (SIGTERM, then wait) before it exits, on error
too. Targets that are missed are printed as MISSED, and the exit status is then 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import aiohttp
from google.cloud import tasks_v2
from processes import cpu_s, stop
from tasks_load import BODY, RECEIVER, make_client, new_task, received

ROOT = Path(__file__).resolve().parent.parent
PROJECT, LOCATION = "local-project", "us-central1"
PARENT = f"projects/{PROJECT}/locations/{LOCATION}"

N_CREATE = 5_000  # figure 1; these tasks are then dispatched for figure 2
CREATE_THREADS = 8
N_PLAIN = 5_000
PLAIN_IN_FLIGHT = 100
RATE = 500.0  # Cloud Tasks' per-queue maximum (max_dispatches_per_second)
CONCURRENT = 1000
# Extra figure: so many queues dispatch at once (cap 16 x 500/s = 8,000/s) that the
# per-queue cap is not what limits the emulator.
MULTI_QUEUES = 16
N_MULTI_PER_QUEUE = 625
N_BIG = 100_000
BIG_PROCS, BIG_THREADS = 2, 8
LIST_PAGE = 1000
LIST_CALLS = 10
CALL_TIMEOUT_S = 30.0

TARGET_CREATES = 1000.0
TARGET_DISPATCH = 500.0
TARGET_VS_PLAIN = 0.5
TARGET_RSS_MB = 250.0
TARGET_LIST_MS = 100.0


# -- processes ---------------------------------------------------------------------------


def _wait_for_line(proc: subprocess.Popen, out: Path, err: Path, pattern: str,
                   timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, out.read_text())
        if m:
            return m
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(
        f"{proc.args[1:3]} did not become ready (exit code {proc.poll()}):\n"
        f"{out.read_text()[-2000:]}\n{err.read_text()[-4000:]}"
    )



@contextlib.contextmanager
def started(args: list[str], workdir: Path, label: str, pattern: str) -> Iterator[
        tuple[subprocess.Popen, re.Match[str]]]:
    out, err = workdir / f"{label}.out", workdir / f"{label}.err"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    with out.open("w") as o, err.open("w") as e:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=o, stderr=e,
                                stdin=subprocess.DEVNULL)
    try:
        yield proc, _wait_for_line(proc, out, err, pattern, 60)
    finally:
        stop(proc)


def rss_mb(pid: int) -> tuple[float, float]:
    """VmRSS and VmHWM (peak) of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


class Cpu:
    """CPU used by the emulator and the receiver over a phase, per item."""

    def __init__(self, emulator: int, receiver: int) -> None:
        self.pids = {"emulator": emulator, "receiver": receiver}
        self.start = {k: cpu_s(p) for k, p in self.pids.items()}
        self.t0 = time.perf_counter()

    def line(self, n: int, unit: str, only: str | None = None) -> str:
        wall = time.perf_counter() - self.t0
        parts = []
        for k, p in self.pids.items():
            if only and k != only:
                continue
            used = cpu_s(p) - self.start[k]
            parts.append(f"{k} {used:.2f} s ({used / wall:.0%} of a core, "
                         f"{used / n * 1e6:,.0f} us/{unit})")
        return "CPU over this phase: " + "; ".join(parts)


# -- the client ----------------------------------------------------------------------------


def create_many(client: tasks_v2.CloudTasksClient, queue: str, url: str, n: int,
                threads: int) -> tuple[float, int]:
    """CreateTask ``n`` times from ``threads`` threads; (seconds, failures)."""

    errors: list[str] = []

    def one(_: int) -> bool:
        try:
            client.create_task(parent=queue, task=new_task(url), timeout=CALL_TIMEOUT_S)
            return True
        except Exception as e:  # counted and reported, never hidden
            errors.append(f"{type(e).__name__}: {e}")
            if len(errors) <= 3:
                print(f"  CreateTask failed: {errors[-1]}", file=sys.stderr)
            return False

    with ThreadPoolExecutor(threads) as pool:
        t0 = time.perf_counter()
        ok = sum(pool.map(one, range(n), chunksize=16))
        return time.perf_counter() - t0, n - ok


def _create_worker(port: int, queue: str, url: str, n: int, threads: int) -> tuple[float, int]:
    """In a spawned process: a client of its own, ``n`` creates from ``threads`` threads."""
    return create_many(make_client(f"127.0.0.1:{port}"), queue, url, n, threads)


def queue_path(queue_id: str) -> str:
    return f"{PARENT}/queues/{queue_id}"


# -- the receiver ------------------------------------------------------------------------------


def wait_received(receiver_url: str, target: int, timeout: float) -> float:
    """Poll the receiver every 50 ms until it has seen ``target`` requests; the time then."""
    deadline = time.perf_counter() + timeout
    while True:
        now = time.perf_counter()
        if received(receiver_url)["count"] >= target:
            return now
        if now > deadline:
            raise TimeoutError(
                f"the receiver saw {received(receiver_url)['count']} of {target} requests "
                f"after {timeout:.0f}s"
            )
        time.sleep(0.05)


async def _plain(url: str, n: int, in_flight: int, auth: str) -> float:
    headers = {"Authorization": auth, "Content-Type": "application/json",
               "User-Agent": "Google-Cloud-Tasks"}
    left = iter(range(n))
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for _ in left:
                async with session.post(url, data=BODY, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"plain POST: HTTP {resp.status}")

        # Warm up the connections, then time n requests.
        await asyncio.gather(*(session.post(url, data=BODY, headers=headers)
                               for _ in range(in_flight)))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return time.perf_counter() - t0


def plain_rate(url: str, n: int, in_flight: int) -> float:
    # An ID token as the emulator mints it is about 900 characters.
    auth = "Bearer eyJ" + "a" * 890
    return n / asyncio.run(_plain(url, n, in_flight, auth))


# -- the run -----------------------------------------------------------------------------------


def config_toml() -> str:
    queues = [
        ("bench-warmup", RATE), ("bench-create", RATE), ("bench-big", RATE),
        *((f"bench-multi-{i}", RATE) for i in range(MULTI_QUEUES)),
    ]
    lines = [f'project = "{PROJECT}"', f'location = "{LOCATION}"', ""]
    for name, rate in queues:
        lines += [
            "[[queues]]",
            f'name = "{name}"',
            "paused = true",
            f"rate_limits = {{ max_dispatches_per_second = {rate:g}, "
            f"max_concurrent_dispatches = {CONCURRENT} }}",
            "",
        ]
    return "\n".join(lines)


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, bool]] = []
        self.notes: list[str] = []

    def add(self, label: str, value: float, fmt: str, target: float, higher_is_better: bool,
            target_fmt: str | None = None) -> None:
        ok = value >= target if higher_is_better else value < target
        sign = ">=" if higher_is_better else "<"
        ratio = value / target if target else float("inf")
        self.rows.append((label, format(value, fmt), f"{sign} {format(target, target_fmt or fmt)}",
                          f"{ratio:.2f}x", ok))

    def print(self) -> bool:
        print()
        print("Summary (ratio = measured / target; for '<' targets lower is better)")
        print(f"  {'figure':<44} {'measured':>10}   {'target':<10} {'ratio':>7}  status")
        for label, value, target, ratio, ok in self.rows:
            print(f"  {label:<44} {value:>10}   {target:<10} {ratio:>7}  "
                  f"{'OK' if ok else 'MISSED'}")
        missed = [r[0] for r in self.rows if not r[4]]
        if missed:
            print(f"\nMISSED {len(missed)} target(s): "
                  + "; ".join(m.strip() for m in missed))
        else:
            print("\nAll targets met.")
        for note in self.notes:
            print(f"Note: {note}")
        return not missed


def step(title: str) -> Callable[[str], None]:
    print(f"\n== {title}", flush=True)
    return lambda s: print(f"   {s}", flush=True)


def run(workdir: Path) -> bool:
    report = Report()
    config = workdir / "emulator.toml"
    config.write_text(config_toml())
    db = workdir / "emulator.db"
    started_at = time.perf_counter()

    with contextlib.ExitStack() as stack:
        rproc, rm = stack.enter_context(started(
            [sys.executable, "-c", RECEIVER], workdir, "receiver", r"receiver ready (\d+)"))
        receiver_url = f"http://127.0.0.1:{rm.group(1)}"
        eproc, em = stack.enter_context(started(
            [sys.executable, "-m", "emulator", "--port", "0", "--http-port", "0",
             "--db", str(db), "--config", str(config), "--log-level", "WARNING"],
            workdir, "emulator", r"Cloud Tasks emulator ready: gRPC [\d.]+:(\d+)"))
        port = int(em.group(1))
        print(f"emulator pid {eproc.pid} on gRPC port {port}, receiver pid {rproc.pid} at "
              f"{receiver_url}; {os.cpu_count()} CPUs; state {db}")
        client = make_client(f"127.0.0.1:{port}")
        rss0, _ = rss_mb(eproc.pid)

        # Warm-up: connections, code paths (a paused queue that is never resumed).
        create_many(client, queue_path("bench-warmup"), f"{receiver_url}/warmup", 200,
                    CREATE_THREADS)

        # 1. CreateTask rate.
        say = step(f"1. CreateTask through the official client, {CREATE_THREADS} threads, "
                   f"{N_CREATE:,} tasks (url, POST, {len(BODY)}-byte JSON body, oidc_token) "
                   "into a paused queue")
        cpu = Cpu(eproc.pid, rproc.pid)
        bench_cpu = time.process_time()
        secs, failed = create_many(client, queue_path("bench-create"),
                                   f"{receiver_url}/task", N_CREATE, CREATE_THREADS)
        creates = (N_CREATE - failed) / secs
        say(f"{N_CREATE - failed:,} created in {secs:.2f} s ({failed} failed): "
            f"{creates:,.0f} creates/s")
        say(cpu.line(N_CREATE, "create", "emulator")
            + f"; the client (this process) {time.process_time() - bench_cpu:.2f} s")
        report.add(f"creates/s ({CREATE_THREADS} threads)", creates, ",.0f", TARGET_CREATES, True)

        # 2a. Plain HTTP rate against the same receiver.
        say = step(f"2. Dispatch rate. Plain aiohttp client first: {N_PLAIN:,} POSTs of "
                   f"{len(BODY)} bytes with a ~900-char Bearer header, {PLAIN_IN_FLIGHT} in "
                   "flight")
        cpu = Cpu(eproc.pid, rproc.pid)
        bench_cpu = time.process_time()
        plain = plain_rate(f"{receiver_url}/plain", N_PLAIN, PLAIN_IN_FLIGHT)
        say(f"plain HTTP client: {plain:,.0f} requests/s (client CPU "
            f"{(time.process_time() - bench_cpu) / N_PLAIN * 1e6:,.0f} us/request)")
        say(cpu.line(N_PLAIN, "request", "receiver"))

        # 2b. One queue at 500/s.
        before = received(receiver_url)
        cpu = Cpu(eproc.pid, rproc.pid)
        t0 = time.perf_counter()
        client.resume_queue(name=queue_path("bench-create"), timeout=CALL_TIMEOUT_S)
        t1 = wait_received(receiver_url, before["count"] + N_CREATE, 120)
        after = received(receiver_url)
        dispatch = N_CREATE / (t1 - t0)
        authed = after["authed"] - before["authed"]
        burst = max(1, int(RATE / 5))  # max_burst_size Cloud Tasks derives from the rate
        ceiling = N_CREATE / ((N_CREATE - burst) / RATE)
        say(f"emulator, 1 queue (max_dispatches_per_second={RATE:g}, "
            f"max_concurrent_dispatches={CONCURRENT}): {N_CREATE:,} tasks dispatched in "
            f"{t1 - t0:.2f} s = {dispatch:,.0f} dispatches/s, {authed:,} with a Bearer token")
        say(f"THE EMULATOR IS CAPPED AT {RATE:g}/s BY THE QUEUE'S RATE LIMIT (Cloud Tasks' "
            f"per-queue maximum); with the initial burst of {burst} the best possible for "
            f"{N_CREATE:,} tasks is {ceiling:,.0f}/s. Share of the cap reached: "
            f"{dispatch / RATE:.1%}")
        say(cpu.line(N_CREATE, "dispatch"))
        say(f"ratio to the plain client: {dispatch:,.0f} / {plain:,.0f} = {dispatch / plain:.2f}"
            f" (the cap alone limits it to {min(RATE, plain) / plain:.2f})")
        left = list(client.list_tasks(request={"parent": queue_path("bench-create"),
                                               "page_size": 1000}, timeout=CALL_TIMEOUT_S))
        if left:  # the receiver saw them all; give the emulator a moment to record it
            time.sleep(1)
            left = list(client.list_tasks(request={"parent": queue_path("bench-create"),
                                                   "page_size": 1000},
                                          timeout=CALL_TIMEOUT_S))
        say(f"tasks left in the queue (ListTasks): {len(left)}")
        report.add(f"dispatches/s, 1 queue (cap {RATE:g}/s)", dispatch, ",.0f", TARGET_DISPATCH,
                   True)
        report.add("  1-queue dispatch / plain HTTP (capped)", dispatch / plain, ".2f",
                   TARGET_VS_PLAIN, True)
        report.notes.append(
            f"one queue is capped at {RATE:g}/s by its rate limit (Cloud Tasks' per-queue "
            f"maximum), so against a plain rate of {plain:,.0f}/s its ratio cannot exceed "
            f"{min(RATE, plain) / plain:.2f}; the {MULTI_QUEUES}-queue row (cap "
            f"{MULTI_QUEUES * RATE:,.0f}/s) shows what the emulator itself reaches.")

        # 2c. Several queues at once: what the emulator reaches when the per-queue cap is not
        # the limit.
        n_multi = MULTI_QUEUES * N_MULTI_PER_QUEUE
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(
                lambda i: create_many(client, queue_path(f"bench-multi-{i}"),
                                      f"{receiver_url}/multi", N_MULTI_PER_QUEUE, 2),
                range(MULTI_QUEUES)))
        before = received(receiver_url)
        cpu = Cpu(eproc.pid, rproc.pid)
        t0 = time.perf_counter()
        for i in range(MULTI_QUEUES):
            client.resume_queue(name=queue_path(f"bench-multi-{i}"), timeout=CALL_TIMEOUT_S)
        t1 = wait_received(receiver_url, before["count"] + n_multi, 120)
        multi = n_multi / (t1 - t0)
        say(f"emulator, {MULTI_QUEUES} queues at {RATE:g}/s each at once (cap "
            f"{MULTI_QUEUES * RATE:,.0f}/s): {n_multi:,} tasks in {t1 - t0:.2f} s = "
            f"{multi:,.0f} dispatches/s ({multi / (MULTI_QUEUES * RATE):.0%} of that cap, "
            f"{multi / plain:.2f} of the plain rate)")
        say(cpu.line(n_multi, "dispatch"))
        report.add(f"  {MULTI_QUEUES}-queue total dispatch / plain HTTP", multi / plain,
                   ".2f", TARGET_VS_PLAIN, True)

        # 3. RSS with 100,000 pending tasks.
        say = step(f"3. RSS of the emulator with {N_BIG:,} pending tasks (created by "
                   f"{BIG_PROCS} processes x {BIG_THREADS} threads into a paused queue)")
        rss_before, _ = rss_mb(eproc.pid)
        per = [N_BIG // BIG_PROCS + (i < N_BIG % BIG_PROCS) for i in range(BIG_PROCS)]
        t0 = time.perf_counter()
        with ProcessPoolExecutor(BIG_PROCS, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(
                _create_worker, [port] * BIG_PROCS, [queue_path("bench-big")] * BIG_PROCS,
                [f"{receiver_url}/big"] * BIG_PROCS, per, [BIG_THREADS] * BIG_PROCS))
        wall = time.perf_counter() - t0
        failed = sum(f for _, f in results)
        busiest = max(s for s, _ in results)
        say(f"{N_BIG - failed:,} created in {wall:.1f} s wall including process start-up "
            f"({(N_BIG - failed) / busiest:,.0f} creates/s while creating; {failed} failed)")
        rss, hwm = rss_mb(eproc.pid)
        say(f"emulator VmRSS: {rss:.0f} MB (at start {rss0:.0f} MB, before these creates "
            f"{rss_before:.0f} MB, peak VmHWM {hwm:.0f} MB)")
        report.add(f"emulator RSS, {N_BIG // 1000}k pending tasks (MB)", rss, ",.0f",
                   TARGET_RSS_MB, False)
        report.notes.append(
            f"the RSS is read after all of the above (dispatch included); the {N_BIG:,} "
            f"pending tasks themselves changed it by {rss - rss_before:+.0f} MB.")

        # 4. ListTasks, page of 1,000 on the 100,000-task queue.
        say = step(f"4. ListTasks page_size={LIST_PAGE} on the {N_BIG:,}-task queue, "
                   f"official client, median of {LIST_CALLS}")
        big = queue_path("bench-big")
        firsts, seconds_ = [], []
        token = ""
        for _ in range(LIST_CALLS):
            t0 = time.perf_counter()
            pager = client.list_tasks(request={"parent": big, "page_size": LIST_PAGE},
                                     timeout=CALL_TIMEOUT_S)
            firsts.append(time.perf_counter() - t0)
            n_first, token = len(pager.tasks), pager.next_page_token
        for _ in range(LIST_CALLS):
            t0 = time.perf_counter()
            page2 = client.list_tasks(
                request={"parent": big, "page_size": LIST_PAGE, "page_token": token},
                timeout=CALL_TIMEOUT_S)
            seconds_.append(time.perf_counter() - t0)
            n_second = len(page2.tasks)
        first_ms, second_ms = statistics.median(firsts) * 1000, statistics.median(seconds_) * 1000
        say(f"first page ({n_first} tasks): median {first_ms:.1f} ms "
            f"(min {min(firsts) * 1000:.1f}, max {max(firsts) * 1000:.1f})")
        say(f"second page via page_token ({n_second} tasks): median {second_ms:.1f} ms "
            f"(min {min(seconds_) * 1000:.1f}, max {max(seconds_) * 1000:.1f})")
        report.add("ListTasks page of 1000, 1st page (ms)", first_ms, ".1f", TARGET_LIST_MS,
                   False, ".0f")
        report.add("ListTasks page of 1000, 2nd page (ms)", second_ms, ".1f", TARGET_LIST_MS,
                   False, ".0f")

        client.transport.close()
        ok = report.print()
    print(f"\nwhole run: {time.perf_counter() - started_at:.1f} s (processes stopped)")
    return ok


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-emulator-") as tmp:
        return 0 if run(Path(tmp)) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of history in the emulator's Cloud Logging (run by hand:
``python bench/history.py [--entries N]``). Not a test.

One run starts the emulator (``python -m emulator``, state in a temporary SQLite file) and a
receiver, and prints, each beside its target:

1. the emulator holding ``--entries`` log entries (default 1,000,000) over 100 queues,
   written through the official ``LoggingServiceV2Client`` (WriteLogEntries, 1,000 a
   call, from two processes): Cloud Tasks' task-operation logs as the emulator's dispatcher
   writes them (most tasks succeed at once, some are retried, a few fail for good) and
   Enqueuer's audit lines as Cloud Run ships them, over the last seven days;
2. Enqueuer's queries (``enqueuer_core.history``'s filters, one ListLogEntries call each):
   a task's attempts, a queue's first page of dead letters and the next one, a page of
   activity (all, by person, by queue), and a page of the last hour's attempts (the
   per-minute chart), each the median of 20 calls on different tasks, queues and people,
   beside a ListTasks page of 50 of the same emulator; targets under 100 ms. The same
   through ``enqueuer_core.history`` (entries read into records), unrated;
3. the dispatch rate of queues whose task logs are on (sampling_ratio 1.0) and of the same
   number of queues with them off, the same load (receiver at once, 8 queues at 500/s at
   a time, three rounds each, alternating which goes first); target on >= 0.8 x off.

Every process the benchmark starts is stopped before it exits, on error too. A missed target
is printed as MISSED, and the exit status is then 1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import grpc
from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
from google.cloud.logging_v2.services.logging_service_v2.transports import (
    LoggingServiceV2GrpcTransport,
)
from google.cloud.logging_v2.types import ListLogEntriesRequest, LogEntry, WriteLogEntriesRequest

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from enqueuer_core import history  # noqa: E402
from enqueuer_core.history import queries as filters  # noqa: E402

# bench/emulator.py's receiver, process handling, client and report (a file, not the
# emulator package of the same name).
_spec = importlib.util.spec_from_file_location("bench_emulator", BENCH / "emulator.py")
assert _spec and _spec.loader
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

PROJECT, LOCATION = "bench-project", "us-central1"
PARENT = f"projects/{PROJECT}/locations/{LOCATION}"
TASK_LOG = f"projects/{PROJECT}/logs/cloudtasks.googleapis.com%2Ftask_operations_log"
STDOUT_LOG = f"projects/{PROJECT}/logs/run.googleapis.com%2Fstdout"
ACTIVITY = "type.googleapis.com/google.cloud.tasks.logging.v1.TaskActivityLog"
TARGET = "POST http://127.0.0.1:8081/run"
QUEUES, PEOPLE, BATCH, WRITERS = 100, 20, 1000, 2
SPAN_US = 7 * 86_400 * 1_000_000  # the entries' timestamps cover the last seven days
CALLS = 20  # per query; the median is the figure
LIST_TASKS, PAGE = 1000, 50
ROUNDS, DISPATCH_QUEUES, PER_QUEUE, RATE = 3, 8, 1000, 500.0
TARGET_QUERY_MS, TARGET_DISPATCH_RATIO = 100.0, 0.8
INFO, WARNING, ERROR = 200, 400, 500
PbEntry, PbWrite = LogEntry.pb(), WriteLogEntriesRequest.pb()  # raw protobuf: 5x faster


def logging_client(target: str) -> LoggingServiceV2Client:
    return LoggingServiceV2Client(
        transport=LoggingServiceV2GrpcTransport(channel=grpc.insecure_channel(target)))


# -- the entries ------------------------------------------------------------------------------


def queue_of(chunk: int, n: int) -> str:
    """The queue of task ``t{chunk}-{n}``: computable without the entries, so that the
    queries can name tasks that exist (every chunk starts with task ``t{chunk}-0``)."""
    return f"bench-q-{(chunk * 7919 + n * 31) % QUEUES:03d}"


def task_name(chunk: int, n: int) -> str:
    return f"{PARENT}/queues/{queue_of(chunk, n)}/tasks/t{chunk}-{n}"


def person(i: int) -> str:
    return f"user:person{i}@example.com"


def _iso(us: int) -> str:
    return dt.datetime.fromtimestamp(us / 1e6, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _entry(log_name: str, us: int, severity: int, resource: tuple[str, dict[str, str]],
           payload: dict[str, Any], labels: dict[str, str] | None = None) -> Any:
    e = PbEntry()
    e.log_name = log_name
    e.timestamp.FromMicroseconds(us)
    e.severity = severity
    e.resource.type = resource[0]
    e.resource.labels.update(resource[1])
    e.json_payload.update(payload)
    if labels:
        e.labels.update(labels)
    return e


def _task(chunk: int, n: int, us: int, rng: random.Random) -> list[Any]:
    """A task's entries as the dispatcher writes them (Contract C): created, then per attempt
    a dispatch and a response; 85 % succeed at once, 12 % after 1-3 retries, 3 % fail for
    good after 5 attempts (the last response without retryTime)."""
    name, queue = task_name(chunk, n), queue_of(chunk, n)
    resource = ("cloud_tasks_queue", {"project_id": PROJECT, "location": LOCATION,
                                      "queue_id": queue, "target_type": "HTTP"})

    def one(at: int, severity: int, kind: str, body: dict[str, Any]) -> Any:
        body = {"scheduleTime": _iso(at), "targetAddress": TARGET, "targetType": "HTTP", **body}
        return _entry(TASK_LOG, at, severity, resource,
                      {"@type": ACTIVITY, "task": name, kind: body})

    out = [one(us, INFO, "taskCreationLog", {"status": "OK"})]
    r = rng.random()
    failures = 0 if r < 0.85 else rng.randint(1, 3) if r < 0.97 else 5
    for attempt in range(1, min(failures, 4) + 2):
        us += rng.randint(1_000, 200_000)
        out.append(one(us, INFO, "attemptDispatchLog", {"dispatchCount": str(attempt)}))
        us += rng.randint(1_000, 500_000)
        ok = attempt > failures
        body = {"attemptDuration": f"{rng.randint(5, 900) / 1000:.3f}s",
                "dispatchCount": str(attempt), "responseCount": str(attempt),
                "maxAttempts": 5, "status": "OK" if ok else rng.choice(
                    ["UNAVAILABLE", "NOT_FOUND", "DEADLINE_EXCEEDED", "INTERNAL"])}
        if not ok and attempt < 5:
            body["retryTime"] = _iso(us + 10_000_000 * attempt)
        out.append(one(us, INFO if ok else ERROR, "attemptResponseLog", body))
    return out


def _audit(chunk: int, n: int, us: int, rng: random.Random) -> Any:
    """An audit line as Cloud Run ships the API's stdout (Contract C)."""
    who = person(rng.randrange(PEOPLE))
    action = rng.choice(["enqueue"] * 14 + ["run", "delete", "pause", "resume", "replay"])
    outcome = "denied" if rng.random() < 0.05 else "ok"
    queue = queue_of(chunk, n)
    audit = {"principal": who, "role": "operator", "via": "api", "action": action,
             "target": f"{PARENT}/queues/{queue}", "outcome": outcome,
             "request_id": f"r{chunk}-{n}", "task": f"{PARENT}/queues/{queue}/tasks/a{chunk}-{n}"}
    resource = ("cloud_run_revision", {"project_id": PROJECT, "service_name": "enqueuer-api",
                                       "revision_name": "enqueuer-api-00001-abc",
                                       "location": LOCATION,
                                       "configuration_name": "enqueuer-api"})
    return _entry(STDOUT_LOG, us, WARNING if outcome == "denied" else INFO, resource,
                  {"message": f"{action} {outcome}", "audit": audit},
                  {"log": "enqueuer-audit"})


def chunk_entries(chunk: int, chunks: int, end_us: int) -> list[Any]:
    """The ``chunk``-th batch of entries, in time order; one in five events an audit line."""
    rng = random.Random(chunk)
    us = end_us - SPAN_US + SPAN_US * chunk // chunks
    out: list[Any] = []
    n = 0
    while len(out) < BATCH:
        if n and rng.random() < 0.2:
            out.append(_audit(chunk, n, us, rng))
        else:
            out.extend(_task(chunk, n, us, rng))
        n += 1
        us += SPAN_US // chunks // 400
    return out[:BATCH]


def _write_chunks(target: str, chunks: list[int], total: int, end_us: int) -> int:
    """In a spawned process: write these chunks; the number of entries written."""
    client = logging_client(target)
    written = 0
    for chunk in chunks:
        request = PbWrite(entries=chunk_entries(chunk, total, end_us))
        client.write_log_entries(request=WriteLogEntriesRequest.wrap(request), timeout=120)
        written += len(request.entries)
    return written


# -- timing -----------------------------------------------------------------------------------


def timed(calls: list[Callable[[], object]]) -> tuple[float, float]:
    """Median and maximum in milliseconds over the calls (each a different argument)."""
    times = []
    for call in calls:
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), max(times)


def list_page(client: LoggingServiceV2Client, filter_: str, newest_first: bool,
              page_size: int, token: str = "") -> tuple[int, str]:
    """One ListLogEntries call, as enqueuer_core.history makes it."""
    pager = client.list_log_entries(request=ListLogEntriesRequest(
        resource_names=[f"projects/{PROJECT}"], filter=filter_, page_size=page_size,
        order_by="timestamp desc" if newest_first else "timestamp asc", page_token=token),
        timeout=60)
    page = next(iter(pager.pages))
    return len(page.entries), page.next_page_token


# -- the run ----------------------------------------------------------------------------------


def config_toml() -> str:
    lines = [f'project = "{PROJECT}"', f'location = "{LOCATION}"', "",
             "[[queues]]", 'name = "bench-list"', "paused = true", ""]
    for r in range(ROUNDS):
        for logged in ("on", "off"):
            for i in range(DISPATCH_QUEUES):
                lines += ["[[queues]]", f'name = "bench-{logged}-{r}-{i}"', "paused = true",
                          f"log_sampling_ratio = {1.0 if logged == 'on' else 0.0}",
                          f"rate_limits = {{ max_dispatches_per_second = {RATE:g}, "
                          "max_concurrent_dispatches = 1000 }", ""]
    return "\n".join(lines)


def seed(target: str, entries: int, say: Callable[[str], None]) -> float:
    """Write ``entries`` entries; the rate, in entries per second."""
    chunks = max(1, entries // BATCH)
    end_us = int(time.time() * 1e6) - 60_000_000
    share = [list(range(w, chunks, WRITERS)) for w in range(WRITERS)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(WRITERS, mp_context=get_context("spawn")) as pool:
        written = sum(pool.map(_write_chunks, [target] * WRITERS, share,
                               [chunks] * WRITERS, [end_us] * WRITERS))
    secs = time.perf_counter() - t0
    say(f"{written:,} entries written in {secs:.1f} s ({written / secs:,.0f} entries/s, "
        f"{chunks:,} WriteLogEntries calls of {BATCH} from {WRITERS} processes)")
    return written / secs


def queries(client: LoggingServiceV2Client, tasks_client: Any, chunks: int, report: Any,
            say: Callable[[str], None]) -> None:
    rng = random.Random(7)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=7)
    hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    def list_tasks() -> object:
        return tasks_client.list_tasks(request={"parent": f"{PARENT}/queues/bench-list",
                                                "page_size": PAGE}, timeout=60).tasks

    list_tasks()
    list_ms, _ = timed([list_tasks] * CALLS)
    say(f"ListTasks, page of {PAGE} of a {LIST_TASKS:,}-task queue: median {list_ms:.1f} ms")
    tasks = [task_name(rng.randrange(chunks), 0) for _ in range(CALLS)]
    queues = [f"{PARENT}/queues/bench-q-{q:03d}" for q in rng.sample(range(QUEUES), CALLS)]
    people = [person(i % PEOPLE) for i in range(CALLS)]
    cases: list[tuple[str, list[Callable[[], object]]]] = [
        ("a task's attempts", [lambda t=t: list_page(client, filters.attempts_filter(t),
                                                     False, 1000) for t in tasks]),
        ("dead letters, 1st page", [lambda q=q: list_page(
            client, filters.dead_letters_filter(q, since), True, PAGE) for q in queues]),
    ]
    tokens = [list_page(client, filters.dead_letters_filter(q, since), True, PAGE)[1]
              for q in queues]
    cases += [
        ("dead letters, 2nd page", [lambda q=q, tok=tok: list_page(
            client, filters.dead_letters_filter(q, since), True, PAGE, tok)
            for q, tok in zip(queues, tokens, strict=True)]),
        ("activity, a page", [lambda: list_page(client, filters.actions_filter(), True,
                                                PAGE)] * CALLS),
        ("activity of a person", [lambda p=p: list_page(
            client, filters.actions_filter(who=p), True, PAGE) for p in people]),
        ("activity on a queue", [lambda q=q: list_page(
            client, filters.actions_filter(queue=q), True, PAGE) for q in queues]),
        # Not one of the three; the dashboard's chart reads it page by page.
        ("attempts per minute, a page of 1000", [lambda: list_page(
            client, filters.minutes_filter(PROJECT, hour_ago), False, 1000)] * CALLS),
    ]
    for label, calls in cases:
        calls[0]()  # the first call of a shape warms its index pages
        median, worst = timed(calls)
        say(f"{label}: median {median:.1f} ms (max {worst:.1f}) beside ListTasks "
            f"{list_ms:.1f} ms: {median / list_ms:.1f}x")
        report.add(f"{label} (ms)", median, ".1f", TARGET_QUERY_MS, False, ".0f")
    found = sum(list_page(client, filters.dead_letters_filter(q, since), True, PAGE)[0]
                for q in queues)
    say(f"(dead letters found on those {CALLS} queues' first pages: {found})")
    through = [
        ("history.task_attempts", [lambda t=t: history.task_attempts(client, t)
                                   for t in tasks]),
        ("history.dead_letters", [lambda q=q: history.dead_letters(client, q, since)
                                  for q in queues]),
        ("history.actions", [lambda: history.actions(client, PROJECT)] * CALLS),
    ]
    for label, calls in through:
        median, worst = timed(calls)
        say(f"through {label} (entries read into records): median {median:.1f} ms "
            f"(max {worst:.1f})")


def dispatch(tasks_client: Any, receiver_url: str, report: Any,
             say: Callable[[str], None]) -> None:
    create = bench.create_many
    rates: dict[str, list[float]] = {"on": [], "off": []}
    for r in range(ROUNDS):
        for logged in ("off", "on") if r % 2 == 0 else ("on", "off"):
            names = [f"{PARENT}/queues/bench-{logged}-{r}-{i}" for i in range(DISPATCH_QUEUES)]
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda q: create(tasks_client, q, f"{receiver_url}/run",
                                               PER_QUEUE, 2), names))
            before = bench.received(receiver_url)["count"]
            n = DISPATCH_QUEUES * PER_QUEUE
            t0 = time.perf_counter()
            for q in names:
                tasks_client.resume_queue(name=q, timeout=60)
            t1 = bench.wait_received(receiver_url, before + n, 300)
            rates[logged].append(n / (t1 - t0))
            say(f"round {r + 1}, task logs {logged}: {n:,} tasks over {DISPATCH_QUEUES} "
                f"queues in {t1 - t0:.2f} s = {n / (t1 - t0):,.0f} dispatches/s")
    on, off = statistics.mean(rates["on"]), statistics.mean(rates["off"])
    say(f"mean: logs on {on:,.0f}/s, off {off:,.0f}/s: ratio {on / off:.2f}")
    report.add("dispatch rate, logs on / off", on / off, ".2f", TARGET_DISPATCH_RATIO, True)


def logged_entries(client: LoggingServiceV2Client, queue: str) -> int:
    total, token = 0, ""
    while True:
        n, token = list_page(client, f'resource.labels.queue_id="{queue}" AND '
                             "jsonPayload.attemptResponseLog:*", False, 1000, token)
        total += n
        if not token:
            return total


def run(workdir: Path, entries: int) -> bool:
    report = bench.Report()
    (workdir / "emulator.toml").write_text(config_toml())
    db = workdir / "emulator.db"
    started_at = time.perf_counter()
    with contextlib.ExitStack() as stack:
        _, rm = stack.enter_context(bench.started(
            [sys.executable, "-c", bench.RECEIVER], workdir, "receiver", r"receiver ready (\d+)"))
        receiver_url = f"http://127.0.0.1:{rm.group(1)}"
        eproc, em = stack.enter_context(bench.started(
            [sys.executable, "-m", "emulator", "--port", "0", "--http-port", "0", "--db",
             str(db), "--config", str(workdir / "emulator.toml"), "--log-level", "WARNING"],
            workdir, "emulator", r"Cloud Tasks emulator ready: gRPC [\d.]+:(\d+)"))
        target = f"127.0.0.1:{em.group(1)}"
        print(f"emulator pid {eproc.pid} at {target}; {os.cpu_count()} CPUs; state {db}")
        client, tasks_client = logging_client(target), bench.make_client(int(em.group(1)))

        say = bench.step(f"1. {entries:,} log entries over {QUEUES} queues and 7 days")
        cpu = bench.Cpu(eproc.pid, eproc.pid)
        seed(target, entries, say)
        say(cpu.line(entries, "entry", "emulator"))
        say(f"database: {sum(p.stat().st_size for p in workdir.glob('emulator.db*')) / 1e6:,.0f}"
            " MB (with the -wal file)")
        bench.create_many(tasks_client, f"{PARENT}/queues/bench-list", f"{receiver_url}/x",
                          LIST_TASKS, 8)

        say = bench.step(f"2. Enqueuer's queries, median of {CALLS} calls each")
        queries(client, tasks_client, max(1, entries // BATCH), report, say)

        say = bench.step(f"3. Dispatch with task logs on and off, {ROUNDS} rounds of "
                         f"{DISPATCH_QUEUES} x {PER_QUEUE} tasks each")
        dispatch(tasks_client, receiver_url, report, say)
        say(f"attempt responses logged for bench-on-0-0: "
            f"{logged_entries(client, 'bench-on-0-0'):,} (one per task); for bench-off-0-0: "
            f"{logged_entries(client, 'bench-off-0-0')}")
        client.transport.close()
        ok = report.print()
    print(f"\nwhole run: {time.perf_counter() - started_at:.1f} s (processes stopped)")
    return ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entries", type=int, default=1_000_000,
                   help="log entries to seed (default 1,000,000)")
    args = p.parse_args()
    # SIGTERM as an exception, so that the processes started are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        return 0 if run(Path(tmp), args.entries) else 1


if __name__ == "__main__":
    sys.exit(main())

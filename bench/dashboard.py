"""Benchmark of the dashboard's Queues page on a long queue (run by hand). Not a test.

One run starts a dedicated emulator (``python -m emulator``, the three workers' queues,
queue-brain PAUSED so nothing is dispatched, state in a temporary SQLite file), seeds
queue-brain with 10,000 brain tasks (built by ``enqueuer_core.build.build_task``, created
through the official client from 8 threads), then, in this process, pointed at that
emulator:

1. renders the Queues page for queue-brain with Streamlit's AppTest (``dashboard.py``,
   page ``pages/queues.py``, ``?queue=queue-brain``), its snapshot caches empty: the
   page's first render for that queue, timed around ``at.run()``; meanwhile every
   ListTasks call the page makes is recorded (a pass-through wrapper around the client's
   ``list_tasks``: which requests, and how long they took);
2. makes the same ListTasks calls directly, each through ``enqueuer_core.inspect.task_page``
   with the request the page sent (queue, page size, page token), timed.

Each is repeated and the medians compared: target, the first render within 2x of the
ListTasks calls underneath it. Before that, one render of an empty queue warms the
process (imports, the cached client), as a running dashboard is; its time is printed too.
Every process it starts is stopped before it exits, on error too; a missed target makes
the exit status 1.

    .venv/bin/python bench/dashboard.py
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processes import start_emulator, stop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # dashboard.py imports `pages`

import streamlit as st  # noqa: E402
from google.cloud import tasks_v2  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from enqueuer_core.build import EnqueueRequest, build_task  # noqa: E402
from enqueuer_core.clients import tasks_client  # noqa: E402
from enqueuer_core.config import LOCAL_PROJECT, LOCAL_REGION, load_settings  # noqa: E402
from enqueuer_core.inspect import count_tasks, task_page  # noqa: E402
from enqueuer_core.workers import BRAIN_FIELDS, load_registry  # noqa: E402

N_TASKS = 10_000
N_WARMUP_TASKS = 20  # in the warm-up queue: its render draws the table and charts too
CREATE_THREADS = 8
REPEATS = 5
TARGET_RATIO = 2.0  # first render / ListTasks calls underneath it
QUEUE, SMALL_QUEUE = "queue-brain", "queue-testimonios"
QUEUES = ("queue-brain", "queue-testimonios", "queue-transcripciones")
CONFIG = f'project = "{LOCAL_PROJECT}"\nlocation = "{LOCAL_REGION}"\n' + "".join(
    f'\n[[queues]]\nname = "{q}"\npaused = {"true" if q == QUEUE else "false"}\n'
    for q in QUEUES)
RENDER_TIMEOUT_S = 120.0
# Settings of the environment that would point the dashboard elsewhere than our emulator.
FOREIGN = re.compile(r"^(PROJECT_ID|TASKS_REGION|CALLER_SA|WORKERS_FILE|(QUEUE|URL|AUD)_\w+"
                     r"|DEADLINE_\w+_S|GOOGLE_APPLICATION_CREDENTIALS)$")


# -- the emulator --------------------------------------------------------------------------


def seed(client: tasks_v2.CloudTasksClient, n: int, service: str = "brain") -> float:
    """``n`` tasks for ``service`` (its queue), as the Enqueuer builds them, an hour ahead;
    the seconds it took."""
    settings = load_settings()
    worker = load_registry(settings).get(service)
    now = dt.datetime.now(dt.UTC)
    payload = {f: f"doc-{f}" for f in BRAIN_FIELDS} if service == "brain" else {}
    failures: list[str] = []

    def one(i: int) -> None:
        key = f"bench-{service}-{i:05d}"
        request = EnqueueRequest(service=service, idempotency_key=key, schedule_in_s=3600,
                                 payload=payload)
        built = build_task(request, worker, settings, key, now)
        try:
            client.create_task(parent=built.queue, task=built.task, timeout=30)
        except Exception as e:  # counted and reported, never hidden
            failures.append(f"{type(e).__name__}: {e}")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(CREATE_THREADS) as pool:
        list(pool.map(one, range(n), chunksize=64))
    seconds = time.perf_counter() - t0
    if failures:
        raise RuntimeError(f"{len(failures)} CreateTask calls failed, first: {failures[0]}")
    return seconds


# -- what the page asks Cloud Tasks ---------------------------------------------------------


@dataclass(frozen=True)
class ListCall:
    parent: str
    page_size: int
    page_token: str
    seconds: float


class ListTasksRecorder:
    """Records every ``CloudTasksClient.list_tasks`` call made while ``on``; passes each
    through unchanged. The page's client is built inside the page (``st.cache_resource``):
    wrapping the method is the way to see its calls without changing the page."""

    def __init__(self) -> None:
        self.calls: list[ListCall] = []
        self.on = False
        self._lock = threading.Lock()
        original = tasks_v2.CloudTasksClient.list_tasks
        recorder = self

        def list_tasks(client: Any, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(client, *args, **kwargs)
            finally:
                if recorder.on:
                    request = kwargs.get("request") or (args[0] if args else None)
                    if request is None:
                        request = tasks_v2.ListTasksRequest(parent=kwargs.get("parent", ""))
                    with recorder._lock:
                        recorder.calls.append(ListCall(
                            request.parent, request.page_size, request.page_token,
                            time.perf_counter() - t0))

        tasks_v2.CloudTasksClient.list_tasks = list_tasks  # type: ignore[method-assign]

    def record(self) -> list[ListCall]:
        self.calls = []
        self.on = True
        return self.calls

    def pause(self) -> None:
        self.on = False


@contextmanager
def quiet() -> Iterator[None]:
    """Streamlit warns when called outside a script run (as here, around AppTest's runs):
    harmless, and kept out of the output."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


class QueuesPage:
    """The dashboard in one session (AppTest), showing the Queues page.

    One session for every render, as in a running dashboard: AppTest's one-time set-up (a
    scan of the installed packages for components, which `streamlit run` does once at
    start) is paid by the warm-up, not by the renders measured.
    """

    def __init__(self) -> None:
        with quiet():
            self.at = AppTest.from_file(str(ROOT / "dashboard.py"),
                                        default_timeout=RENDER_TIMEOUT_S)
            self.at.switch_page("pages/queues.py")

    def first_render(self, queue_id: str) -> float:
        """Open the page on ``queue_id`` (as its link does: ``?queue=``), no snapshot
        cached; the seconds the run took."""
        with quiet():
            st.cache_data.clear()
        self.at.query_params["queue"] = queue_id
        t0 = time.perf_counter()
        self.at.run()
        seconds = time.perf_counter() - t0
        if self.at.exception:
            raise RuntimeError(f"the Queues page raised: {self.at.exception[0].value}")
        if self.at.error:
            raise RuntimeError(f"the Queues page shows an error: {self.at.error[0].value}")
        shown = next((m.value for m in self.at.markdown if m.value.startswith("### `")), "")
        if f"`{queue_id}`" not in shown:
            raise RuntimeError(f"the Queues page shows {shown!r}, not {queue_id}")
        return seconds


def direct(client: tasks_v2.CloudTasksClient, calls: list[ListCall]) -> float:
    """The same ListTasks calls, each through ``inspect.task_page``; seconds in all."""
    t0 = time.perf_counter()
    for call in calls:
        task_page(client, call.parent, call.page_token or None, call.page_size)
    return time.perf_counter() - t0


def timed(fn: Callable[[], float], repeats: int) -> list[float]:
    return [fn() for _ in range(repeats)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


# -- the run --------------------------------------------------------------------------------


def run(tmp: Path) -> bool:
    emulator, target = start_emulator(tmp, CONFIG)
    try:
        for name in [k for k in os.environ if FOREIGN.match(k)]:
            del os.environ[name]
        os.environ["CLOUD_TASKS_EMULATOR_HOST"] = target
        settings = load_settings()
        client = tasks_client(settings)
        queue_path = settings.queue_path(QUEUE)

        print(f"Seeding {QUEUE} (paused) with {N_TASKS:,} tasks from {CREATE_THREADS} "
              "threads...", flush=True)
        seconds = seed(client, N_TASKS)
        count, more = count_tasks(client, queue_path, cap=N_TASKS + 1)
        if count != N_TASKS or more:
            raise RuntimeError(f"{QUEUE} holds {count}{'+' if more else ''} tasks, "
                               f"not {N_TASKS}")
        print(f"  {N_TASKS:,} tasks in {seconds:.1f} s ({N_TASKS / seconds:,.0f} creates/s)")

        seed(client, N_WARMUP_TASKS, "testimonios")

        recorder = ListTasksRecorder()
        page = QueuesPage()
        cold = page.first_render(SMALL_QUEUE)
        print(f"Warm-up: the process's first render (Queues page, {SMALL_QUEUE} with "
              f"{N_WARMUP_TASKS} tasks): {ms(cold)}")

        renders: list[float] = []
        inside: list[float] = []
        calls: list[ListCall] = []
        for _ in range(REPEATS):
            calls = recorder.record()
            seconds = page.first_render(QUEUE)
            recorder.pause()
            renders.append(seconds)
            inside.append(sum(c.seconds for c in calls))
            page.first_render(SMALL_QUEUE)  # away, so that the next one is a first again
        page.first_render(QUEUE)  # once more, to read what it shows
        at = page.at
        tasks_metric = next((m.value for m in at.metric if m.label == "tasks"), "?")
        page_caption = next((c.value for c in at.caption if c.value.startswith("Page ")), "?")
        if not calls:
            raise RuntimeError("the Queues page made no ListTasks call")
        print(f"The page shows: tasks {tasks_metric}; {page_caption.split(' · read')[0]}")
        print(f"ListTasks calls the page makes on its first render: {len(calls)}")
        for c in calls:
            print(f"  ListTasks(parent=.../{c.parent.rsplit('/', 1)[-1]}, "
                  f"page_size={c.page_size}, page_token={'set' if c.page_token else 'none'})")

        task_page(client, queue_path, None, 1)  # the direct client's channel, connected
        directs = timed(lambda: direct(client, calls), REPEATS)
        # What the page costs whatever the queue's length: its render for a short queue.
        small = timed(lambda: page.first_render(SMALL_QUEUE), REPEATS)

        render_ms, direct_ms = statistics.median(renders), statistics.median(directs)
        ratio = render_ms / direct_ms
        ok = ratio <= TARGET_RATIO
        print()
        print(f"Queues page, first render for {QUEUE} ({N_TASKS:,} tasks), median of "
              f"{REPEATS}: {ms(render_ms)}  (runs: {', '.join(ms(r) for r in renders)})")
        print(f"  of which inside those ListTasks calls: {ms(statistics.median(inside))}  "
              f"(runs: {', '.join(ms(i) for i in inside)})")
        print(f"The same ListTasks calls made directly (inspect.task_page), median of "
              f"{REPEATS}: {ms(direct_ms)}  (runs: {', '.join(ms(d) for d in directs)})")
        print(f"For comparison, its first render for {SMALL_QUEUE} ({N_WARMUP_TASKS} tasks), "
              f"median of {REPEATS}: {ms(statistics.median(small))}")
        print(f"Ratio first render / ListTasks calls: {ratio:.2f}x   target <= "
              f"{TARGET_RATIO:g}x   {'OK' if ok else 'MISSED'}")
        return ok
    finally:
        stop(emulator)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        return 0 if run(Path(tmp)) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Our emulator beside its peer on PyPI (run by hand: ``make bench-peer``). Not a test.

The peer is ``gcloud-tasks-emulator`` 0.6.2 (github.com/potatolondon/gcloud-tasks-emulator):
tasks in memory, no rate or concurrency limits, no OIDC tokens, no IAM. It needs
protobuf < 5, so it gets a virtualenv of its own, made on the first run in
``~/.cache/enqueuer/bench-peer-venv`` (``$XDG_CACHE_HOME`` is honoured) with
``python3 -m venv`` and pip; later runs reuse it.

One run starts a receiver (a small aiohttp server answering 200, in its own process) and
both emulators as subprocesses: the peer as ``gcloud-tasks-emulator start --port=P -q``,
ours as ``python -m emulator`` with its state in a temporary SQLite file (durable: every
acknowledged create is committed first). Both are driven by the same client (the official
``google-cloud-tasks`` over plaintext gRPC, from this venv), get the same queues (created,
and paused where said, through the API) and the same task (url, POST, a 128-byte JSON body,
an oidc_token, which the peer ignores), and are measured in short bursts, peer and ours in
turn (the order swapped every round), so that both see the same moments of a shared machine:

1. CreateTask/s from 8 threads into a paused queue (PauseQueue: both emulators keep a
   paused queue's tasks and send none, so only creating is timed), with the CPU per create
   of each emulator and of the client (this process: one Python process drives all 8
   threads, so its CPU per create bounds the rate either emulator can show);
   Beside them, as a yardstick, the two gRPC servers alone ("bare": CreateTask answered
   with a canned Task, nothing checked or stored): grpc.aio, which ours serves with, and
   grpc's thread-pool server, which the peer serves with;
2. create-plus-dispatch/s: 8 threads create into 8 running queues (one queue is capped at
   500/s by its rate limit in ours, as in Cloud Tasks; the peer has no limit, so both get
   8 queues), timed from the first create until the receiver has counted every task.

Each figure is the best burst of each emulator (noise only slows a burst down), beside the
median of the rounds; then ours / peer, with the target on creates (ours at least 1.2x).
Every process the benchmark starts is stopped (SIGTERM, then wait) before it exits, on error
too; a missed target makes the exit status 1.

    .venv/bin/python bench/peer.py
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from google.api_core import exceptions as gexc
from google.cloud import tasks_v2
from processes import cpu_s, start_emulator, stop
from tasks_load import make_client, new_task, received, start_receiver

PEER_SPEC = ("gcloud-tasks-emulator==0.6.2", "protobuf>=4.25,<5")
PROJECT, LOCATION = "local-project", "us-central1"
PARENT = f"projects/{PROJECT}/locations/{LOCATION}"
THREADS = 8
N_WARMUP = 300
N_CREATE = 1_500  # per burst
CREATE_ROUNDS = 8
N_FLOW = 1_000  # per burst, created and dispatched, spread over FLOW_QUEUES queues
FLOW_QUEUES = 8
FLOW_ROUNDS = 6
CALL_TIMEOUT_S = 30.0
FLOW_TIMEOUT_S = 180.0
TARGET_CREATES_RATIO = 1.2

# The two gRPC transports with nothing behind them, as a yardstick: CreateTask answered with
# one canned Task by grpc.aio (what ours serves with) or by grpc's thread-pool server with 2
# workers (what the peer serves with). Neither stores or checks anything.
BARE = textwrap.dedent(
    """
    import asyncio, sys
    from concurrent import futures
    import grpc
    from google.cloud import tasks_v2

    mode, port = sys.argv[1], int(sys.argv[2])
    Request = tasks_v2.CreateTaskRequest.pb()
    ANSWER = tasks_v2.Task.pb()(name="projects/p/locations/l/queues/q/tasks/1")

    def handlers(fn):
        return (grpc.method_handlers_generic_handler("google.cloud.tasks.v2.CloudTasks", {
            "CreateTask": grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=Request.FromString,
                response_serializer=lambda m: m.SerializeToString())}),)

    async def answer_async(request, context):
        return ANSWER

    async def serve_aio():
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(handlers(answer_async))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    if mode == "aio":
        asyncio.run(serve_aio())
    else:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        server.add_generic_rpc_handlers(handlers(lambda request, context: ANSWER))
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        print("ready", flush=True)
        server.wait_for_termination()
    """
)


# -- processes ---------------------------------------------------------------------------


def peer_venv() -> Path:
    """The peer's virtualenv, made (once) when missing or incomplete."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    venv = cache / "enqueuer" / "bench-peer-venv"
    marker = venv / "bench-peer-installed"
    if marker.exists() and marker.read_text() == "\n".join(PEER_SPEC):
        return venv
    print(f"Making the peer's virtualenv in {venv} (once): {' '.join(PEER_SPEC)}", flush=True)
    subprocess.run(["python3", "-m", "venv", "--clear", str(venv)], check=True)
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", *PEER_SPEC],
        capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"could not install the peer ({' '.join(PEER_SPEC)}) into {venv}:\n"
                           f"{done.stderr[-3000:]}\nFix pip's access to PyPI, or delete {venv} "
                           "and run again.")
    marker.write_text("\n".join(PEER_SPEC))
    return venv


def free_port() -> int:
    # The peer takes a fixed port (no port 0); one the kernel just handed out is free.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    try:
        yield proc
    finally:
        stop(proc)


def start_bare(mode: str, workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    out = workdir / f"bare-{mode}.out"
    with out.open("w") as o:
        proc = subprocess.Popen([sys.executable, "-c", BARE, mode, str(port)], stdout=o,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if out.read_text().startswith("ready"):
            return proc, f"127.0.0.1:{port}"
        time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"the bare {mode} gRPC server did not start:\n{out.read_text()[-2000:]}")


def start_peer(venv: Path, workdir: Path) -> tuple[subprocess.Popen, str]:
    """The peer on a free port, once it answers ListQueues (it prints nothing when ready)."""
    port = free_port()
    log = workdir / "peer.log"
    with log.open("w") as out:
        # -q: errors only, as ours runs at WARNING; its INFO logs a line per task.
        proc = subprocess.Popen(
            [str(venv / "bin" / "gcloud-tasks-emulator"), "start", f"--port={port}", "-q"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    target = f"127.0.0.1:{port}"
    client = make_client(target)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                client.list_queues(parent=PARENT, timeout=1)
                return proc, target
            except gexc.GoogleAPICallError:
                time.sleep(0.1)
    finally:
        client.transport.close()
    stop(proc)
    raise RuntimeError(f"the peer did not start (exit code {proc.poll()}):\n"
                       f"{log.read_text()[-3000:]}")


# -- the client ------------------------------------------------------------------------------


def create_many(client: tasks_v2.CloudTasksClient, queues: list[str], url: str,
                n: int) -> tuple[float, int]:
    """CreateTask ``n`` times from THREADS threads, task i into queues[i % len]; (s, failed)."""
    errors: list[str] = []

    def one(i: int) -> bool:
        try:
            client.create_task(parent=queues[i % len(queues)], task=new_task(url),
                               timeout=CALL_TIMEOUT_S)
            return True
        except gexc.GoogleAPICallError as e:  # counted and reported, never hidden
            errors.append(f"{type(e).__name__}: {e}")
            if len(errors) <= 3:
                print(f"    CreateTask failed: {errors[-1]}", file=sys.stderr)
            return False

    with ThreadPoolExecutor(THREADS) as pool:
        t0 = time.perf_counter()
        ok = sum(pool.map(one, range(n), chunksize=16))
        return time.perf_counter() - t0, n - ok


def wait_received(receiver: str, target: int, timeout: float) -> tuple[float, int]:
    """Poll every 20 ms until the receiver has counted ``target``; (time, count) then, or at
    the timeout."""
    deadline = time.perf_counter() + timeout
    while True:
        now, seen = time.perf_counter(), received(receiver)["count"]
        if seen >= target or now > deadline:
            return now, seen
        time.sleep(0.02)


# -- the two emulators, burst by burst -------------------------------------------------------


@dataclass
class Emulator:
    """One emulator under test, its client and what was measured of it."""

    label: str
    proc: subprocess.Popen
    client: tasks_v2.CloudTasksClient
    creates: list[float] = field(default_factory=list)  # per burst, creates/s
    create_cpu_us: list[float] = field(default_factory=list)
    client_cpu_us: list[float] = field(default_factory=list)
    flows: list[float] = field(default_factory=list)  # per burst, delivered/s


def queue_path(queue_id: str) -> str:
    return f"{PARENT}/queues/{queue_id}"


FLOW_QUEUE_PATHS = [queue_path(f"flow-{i}") for i in range(FLOW_QUEUES)]


def set_up(em: Emulator, receiver: str) -> None:
    """The same queues on both, created and paused through the API, then a warm-up."""
    for q, paused in [("warmup", True), ("held", True),
                      *((f"flow-{i}", False) for i in range(FLOW_QUEUES))]:
        em.client.create_queue(parent=PARENT, queue={"name": queue_path(q)},
                               timeout=CALL_TIMEOUT_S)
        if paused:
            em.client.pause_queue(name=queue_path(q), timeout=CALL_TIMEOUT_S)
    create_many(em.client, [queue_path("warmup")], f"{receiver}/warmup", N_WARMUP)


def create_burst(em: Emulator, receiver: str) -> str:
    cpu0, own0 = cpu_s(em.proc.pid), time.process_time()
    secs, failed = create_many(em.client, [queue_path("held")], f"{receiver}/held", N_CREATE)
    rate = (N_CREATE - failed) / secs
    cpu_us = (cpu_s(em.proc.pid) - cpu0) / N_CREATE * 1e6
    own_us = (time.process_time() - own0) / N_CREATE * 1e6
    em.creates.append(rate)
    em.create_cpu_us.append(cpu_us)
    em.client_cpu_us.append(own_us)
    return (f"{rate:>6,.0f}/s (emulator {cpu_us:,.0f} us, client {own_us:,.0f} us"
            + (f", {failed} FAILED)" if failed else ")"))


def flow_burst(em: Emulator, receiver: str) -> str:
    before = received(receiver)["count"]
    t0 = time.perf_counter()
    _, failed = create_many(em.client, FLOW_QUEUE_PATHS, f"{receiver}/flow", N_FLOW)
    t1, seen = wait_received(receiver, before + N_FLOW - failed, FLOW_TIMEOUT_S)
    delivered = seen - before
    rate = delivered / (t1 - t0)
    em.flows.append(rate)
    return (f"{rate:>6,.0f}/s" + (f" ({failed} FAILED)" if failed else "")
            + ("" if delivered >= N_FLOW - failed
               else f" (only {delivered:,} delivered within {FLOW_TIMEOUT_S:.0f} s)"))


def alternate(what: str, rounds: int, all_: tuple[Emulator, ...],
              burst: Callable[[Emulator, str], str], receiver: str) -> None:
    print(f"\n== {what}", flush=True)
    for r in range(rounds):
        order = all_ if r % 2 == 0 else all_[::-1]
        print(f"   round {r + 1}: " + "; ".join(f"{em.label} {burst(em, receiver)}"
                                               for em in order), flush=True)


# -- the run ------------------------------------------------------------------------------------


def run(workdir: Path) -> bool:
    venv = peer_venv()
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"{THREADS} client threads; bursts of {N_CREATE:,} creates into a paused queue "
          f"({CREATE_ROUNDS} each) and of {N_FLOW:,} created and dispatched over {FLOW_QUEUES} "
          f"queues ({FLOW_ROUNDS} each), peer and ours in turn", flush=True)
    with contextlib.ExitStack() as stack:
        rproc, receiver = start_receiver(workdir)
        stack.enter_context(running(rproc))
        (workdir / "peer").mkdir()
        pproc, ptarget = start_peer(venv, workdir / "peer")
        stack.enter_context(running(pproc))
        (workdir / "ours").mkdir()
        oproc, otarget = start_emulator(workdir / "ours",
                                        f'project = "{PROJECT}"\nlocation = "{LOCATION}"\n')
        stack.enter_context(running(oproc))
        bare = []
        for mode in ("aio", "threads"):
            bproc, btarget = start_bare(mode, workdir)
            stack.enter_context(running(bproc))
            bare.append(Emulator(f"bare {mode}", bproc, make_client(btarget)))
        peer = Emulator("peer", pproc, make_client(ptarget))
        ours = Emulator("ours", oproc, make_client(otarget))
        print(f"peer: gcloud-tasks-emulator 0.6.2 (in memory), pid {pproc.pid}, {ptarget}; "
              f"ours: python -m emulator (SQLite {workdir / 'ours' / 'emulator.db'}), pid "
              f"{oproc.pid}, {otarget}", flush=True)
        try:
            for em in (peer, ours):
                set_up(em, receiver)
            for em in bare:
                create_many(em.client, [queue_path("held")], f"{receiver}/warmup", N_WARMUP)
            alternate(f"1. CreateTask/s, {THREADS} threads, paused queue; beside them the "
                      "bare gRPC transports (a canned answer, nothing stored)", CREATE_ROUNDS,
                      (peer, ours, *bare), create_burst, receiver)
            alternate(f"2. create-plus-dispatch/s, {THREADS} threads, {FLOW_QUEUES} running "
                      "queues, counted at the receiver", FLOW_ROUNDS, (peer, ours), flow_burst,
                      receiver)
        finally:
            for em in (peer, ours, *bare):
                em.client.transport.close()
    return summary(peer, ours, bare)


def summary(peer: Emulator, ours: Emulator, bare: list[Emulator]) -> bool:
    c_peer, c_ours = max(peer.creates), max(ours.creates)
    f_peer, f_ours = max(peer.flows), max(ours.flows)
    paired = statistics.median(o / p for o, p in zip(ours.creates, peer.creates, strict=True))
    ok = c_ours / c_peer >= TARGET_CREATES_RATIO
    print("\nSummary (best burst of each; noise on a shared machine only slows a burst down)")
    print(f"  {'figure':<36} {'peer':>8} {'ours':>8} {'ours/peer':>10}   target")
    print(f"  {'CreateTask/s, 8 threads':<36} {c_peer:>8,.0f} {c_ours:>8,.0f} "
          f"{c_ours / c_peer:>9.2f}x   >= {TARGET_CREATES_RATIO:.1f}x "
          f"{'OK' if ok else 'MISSED'}")
    print(f"  {'  median of the rounds':<36} {statistics.median(peer.creates):>8,.0f} "
          f"{statistics.median(ours.creates):>8,.0f} {paired:>9.2f}x   (median of each "
          "round's ratio)")
    e_peer, e_ours = statistics.median(peer.create_cpu_us), statistics.median(ours.create_cpu_us)
    print(f"  {'  emulator CPU us/create (median)':<36} {e_peer:>8,.0f} {e_ours:>8,.0f} "
          f"{e_peer / e_ours:>9.2f}x   (peer/ours)")
    print(f"  {'  client CPU us/create (median)':<36} "
          f"{statistics.median(peer.client_cpu_us):>8,.0f} "
          f"{statistics.median(ours.client_cpu_us):>8,.0f}")
    for em in bare:
        print(f"  {'  ' + em.label + ' (best, median, CPU)':<36} {max(em.creates):>8,.0f} "
              f"{statistics.median(em.creates):>8,.0f} "
              f"{statistics.median(em.create_cpu_us):>7,.0f} us/create")
    print(f"  {'create+dispatch/s, 8 queues':<36} {f_peer:>8,.0f} {f_ours:>8,.0f} "
          f"{f_ours / f_peer:>9.2f}x   (none)")
    print("Ours commits every create before answering it and dispatches within rate limits "
          "with an OIDC token per request; the peer keeps tasks in memory and sends no token. "
          "One Python process drives the 8 client threads: its CPU per create bounds the "
          "creates/s either emulator can show. The bare rows are the gRPC servers alone: "
          "aio is ours' transport, threads the peer's.")
    if not ok:
        print(f"\nMISSED: creates {c_ours / c_peer:.2f}x the peer's, target "
              f">= {TARGET_CREATES_RATIO:.1f}x")
    return ok


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        return 0 if run(Path(tmp)) else 1


if __name__ == "__main__":
    sys.exit(main())

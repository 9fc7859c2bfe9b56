"""Our emulator beside its peer on PyPI (run by hand: ``make bench-peer``). Not a test.

The peer is ``gcloud-tasks-emulator`` 0.6.2 (github.com/potatolondon/gcloud-tasks-emulator):
tasks in memory, no rate or concurrency limits, no OIDC tokens, no IAM. It needs
protobuf < 5, so it gets a virtualenv of its own, made on the first run in
``~/.cache/enqueuer/bench-peer-venv`` (``$XDG_CACHE_HOME`` is honoured) with
``python3 -m venv`` and pip; later runs reuse it.

One run starts a receiver (a small aiohttp server answering 200, in its own process), then,
in turn and three times each (peer, ours, ours, peer, peer, ours: neither always runs on a
cold or a warm machine), each emulator as a subprocess: the peer as ``gcloud-tasks-emulator start
--port=P -q``, ours as ``python -m emulator`` with its state in a temporary SQLite file
(durable: every acknowledged create is committed first). Both are driven by the same client
(the official ``google-cloud-tasks`` over plaintext gRPC, from this venv), with the same
task (url, POST, a 128-byte JSON body, an oidc_token, which the peer ignores), and measured:

1. CreateTask/s from 8 threads into a queue paused through the API (PauseQueue: both
   emulators keep a paused queue's tasks and send none, so only creating is timed);
2. create-plus-dispatch/s: 8 threads create into 8 running queues (one queue is capped at
   500/s by its rate limit in ours, as in Cloud Tasks; the peer has no limit, so both get
   8 queues), timed from the first create until the receiver has counted every task.

Each figure is the best of the rounds (noise on a shared machine only slows things down);
every round is printed, with the CPU each emulator and the client (this process) spent per
create: the client's share bounds what either emulator can show here, as one Python process
drives all 8 threads. Then ours / peer, beside the target on creates (ours at least 1.2x).
Every process the benchmark starts is stopped (SIGTERM, then wait) before it exits, on error
too; a missed target makes the exit status 1.

    .venv/bin/python bench/peer.py
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from processes import start_emulator, stop

PEER_SPEC = ("gcloud-tasks-emulator==0.6.2", "protobuf>=4.25,<5")
PROJECT, LOCATION = "local-project", "us-central1"
PARENT = f"projects/{PROJECT}/locations/{LOCATION}"
SERVICE_ACCOUNT = "bench-caller@local-project.iam.gserviceaccount.com"
THREADS = 8
N_WARMUP = 300
N_CREATE = 5_000
N_FLOW = 4_000  # created and dispatched, spread over FLOW_QUEUES queues
FLOW_QUEUES = 8
ROUNDS = 3
CALL_TIMEOUT_S = 30.0
FLOW_TIMEOUT_S = 180.0
TARGET_CREATES_RATIO = 1.2
BODY = json.dumps({"job": "bench", "id": "0" * 16, "data": "x" * 74}).encode()

RECEIVER = textwrap.dedent(
    """
    import asyncio, signal
    from aiohttp import web

    seen = {"count": 0}

    async def post(request):
        await request.read()
        seen["count"] += 1
        return web.Response(text="ok")

    async def count(request):
        return web.json_response(seen)

    async def main():
        app = web.Application()
        app.router.add_get("/count", count)
        app.router.add_post("/{tail:.*}", post)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(f"receiver ready {site._server.sockets[0].getsockname()[1]}", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())
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


def start_receiver(workdir: Path) -> tuple[subprocess.Popen, str]:
    out = workdir / "receiver.out"
    with out.open("w") as o:
        proc = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=o,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        text = out.read_text()
        if text.startswith("receiver ready"):
            return proc, f"http://127.0.0.1:{int(text.split()[2])}"
        time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"the receiver did not start:\n{out.read_text()[-2000:]}")


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


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the client ------------------------------------------------------------------------------


def make_client(target: str) -> tasks_v2.CloudTasksClient:
    return tasks_v2.CloudTasksClient(
        transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(target)))


def new_task(url: str) -> tasks_v2.Task:
    return tasks_v2.Task(http_request=tasks_v2.HttpRequest(
        url=url, http_method=tasks_v2.HttpMethod.POST,
        headers={"Content-Type": "application/json"}, body=BODY,
        oidc_token=tasks_v2.OidcToken(service_account_email=SERVICE_ACCOUNT)))


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


def received(receiver: str) -> int:
    with urllib.request.urlopen(f"{receiver}/count", timeout=10) as r:
        return json.load(r)["count"]


def wait_received(receiver: str, target: int, timeout: float) -> tuple[float, int]:
    """Poll every 20 ms until the receiver has counted ``target``; (time, count) then, or at
    the timeout."""
    deadline = time.perf_counter() + timeout
    while True:
        now, seen = time.perf_counter(), received(receiver)
        if seen >= target or now > deadline:
            return now, seen
        time.sleep(0.02)


# -- one emulator, one round -----------------------------------------------------------------


@dataclass
class Figures:
    creates: list[float] = field(default_factory=list)
    create_cpu_us: list[float] = field(default_factory=list)
    client_cpu_us: list[float] = field(default_factory=list)
    flows: list[float] = field(default_factory=list)


def queue_path(queue_id: str) -> str:
    return f"{PARENT}/queues/{queue_id}"


def measure(name: str, pid: int, target: str, receiver: str, figures: Figures,
            say: Callable[[str], None]) -> None:
    client = make_client(target)
    try:
        for q, paused in [("warmup", True), ("held", True),
                          *((f"flow-{i}", False) for i in range(FLOW_QUEUES))]:
            client.create_queue(parent=PARENT, queue={"name": queue_path(q)},
                                timeout=CALL_TIMEOUT_S)
            if paused:
                client.pause_queue(name=queue_path(q), timeout=CALL_TIMEOUT_S)
        create_many(client, [queue_path("warmup")], f"{receiver}/warmup", N_WARMUP)

        cpu0, own0 = cpu_s(pid), time.process_time()
        secs, failed = create_many(client, [queue_path("held")], f"{receiver}/held", N_CREATE)
        rate, cpu_us = (N_CREATE - failed) / secs, (cpu_s(pid) - cpu0) / N_CREATE * 1e6
        own_us = (time.process_time() - own0) / N_CREATE * 1e6
        figures.creates.append(rate)
        figures.create_cpu_us.append(cpu_us)
        figures.client_cpu_us.append(own_us)
        say(f"{name}: {N_CREATE - failed:,} creates in {secs:.2f} s ({failed} failed) = "
            f"{rate:,.0f}/s; CPU per create: emulator {cpu_us:,.0f} us, client {own_us:,.0f} us")

        before = received(receiver)
        flow_queues = [queue_path(f"flow-{i}") for i in range(FLOW_QUEUES)]
        t0 = time.perf_counter()
        csecs, failed = create_many(client, flow_queues, f"{receiver}/flow", N_FLOW)
        t1, seen = wait_received(receiver, before + N_FLOW - failed, FLOW_TIMEOUT_S)
        delivered = seen - before
        flow = delivered / (t1 - t0)
        figures.flows.append(flow)
        say(f"{name}: {N_FLOW - failed:,} created (in {csecs:.2f} s) and {delivered:,} "
            f"delivered in {t1 - t0:.2f} s = {flow:,.0f}/s"
            + ("" if delivered >= N_FLOW - failed else
               f" (NOT ALL DELIVERED within {FLOW_TIMEOUT_S:.0f} s)"))
    finally:
        client.transport.close()


# -- the run ------------------------------------------------------------------------------------


def run(workdir: Path) -> bool:
    venv = peer_venv()
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"{THREADS} client threads; {N_CREATE:,} creates into a paused queue, "
          f"{N_FLOW:,} created and dispatched over {FLOW_QUEUES} queues; best of {ROUNDS} "
          "rounds", flush=True)
    peer, ours = Figures(), Figures()
    rproc, receiver = start_receiver(workdir)
    with running(rproc):
        for r in range(ROUNDS):
            order = ("peer", "ours") if r % 2 == 0 else ("ours", "peer")
            print(f"\n== round {r + 1}", flush=True)
            for which in order:
                rdir = workdir / f"{which}-{r}"
                rdir.mkdir()
                if which == "peer":
                    proc, target = start_peer(venv, rdir)
                    figures = peer
                    label = "peer (gcloud-tasks-emulator 0.6.2, in memory)"
                else:
                    proc, target = start_emulator(
                        rdir, f'project = "{PROJECT}"\nlocation = "{LOCATION}"\n')
                    figures = ours
                    label = "ours (python -m emulator, SQLite file)"
                with running(proc):
                    measure(label, proc.pid, target, receiver, figures,
                            lambda s: print(f"   {s}", flush=True))
    return summary(peer, ours)


def summary(peer: Figures, ours: Figures) -> bool:
    c_peer, c_ours = max(peer.creates), max(ours.creates)
    f_peer, f_ours = max(peer.flows), max(ours.flows)
    ok = c_ours / c_peer >= TARGET_CREATES_RATIO
    print("\nSummary (best of the rounds)")
    print(f"  {'figure':<34} {'peer':>9} {'ours':>9} {'ours/peer':>10}   target")
    print(f"  {'CreateTask/s, 8 threads':<34} {c_peer:>9,.0f} {c_ours:>9,.0f} "
          f"{c_ours / c_peer:>9.2f}x   >= {TARGET_CREATES_RATIO:.1f}x "
          f"{'OK' if ok else 'MISSED'}")
    e_peer, e_ours = min(peer.create_cpu_us), min(ours.create_cpu_us)
    print(f"  {'  emulator CPU us/create (least)':<34} {e_peer:>9,.0f} {e_ours:>9,.0f} "
          f"{e_peer / e_ours:>9.2f}x   (peer/ours: above 1, ours costs less)")
    print(f"  {'  client CPU us/create (least)':<34} {min(peer.client_cpu_us):>9,.0f} "
          f"{min(ours.client_cpu_us):>9,.0f}")
    print(f"  {'create+dispatch/s, 8 queues':<34} {f_peer:>9,.0f} {f_ours:>9,.0f} "
          f"{f_ours / f_peer:>9.2f}x   (none)")
    print("Ours commits every create before answering it and dispatches within rate limits "
          "with an OIDC token per request; the peer keeps tasks in memory and sends no token.")
    if not ok:
        print(f"\nMISSED: creates {c_ours / c_peer:.2f}x the peer's, target "
              f">= {TARGET_CREATES_RATIO:.1f}x")
    return ok


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        return 0 if run(Path(tmp)) else 1


if __name__ == "__main__":
    sys.exit(main())

"""What the Cloud Tasks benchmarks share: the task they create, the client that creates it,
and the receiver its dispatches reach (an aiohttp server in its own process that counts)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import grpc
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from processes import stop

SERVICE_ACCOUNT = "bench-caller@local-project.iam.gserviceaccount.com"
# A JSON body of 128 bytes, as a job's small payload.
BODY = json.dumps({"job": "bench", "id": "0" * 16, "data": "x" * 74}).encode()
assert len(BODY) == 128, len(BODY)

# Counts what it is sent (and how much of it carried a bearer token) at GET /count.
RECEIVER = textwrap.dedent(
    """
    import asyncio, signal, sys
    from aiohttp import web

    seen = {"count": 0, "authed": 0, "bytes": 0}

    async def post(request):
        body = await request.read()
        seen["count"] += 1
        seen["bytes"] += len(body)
        if request.headers.get("Authorization", "").startswith("Bearer "):
            seen["authed"] += 1
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
        port = site._server.sockets[0].getsockname()[1]
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        print(f"receiver ready {port}", flush=True)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())
    """
)


def make_client(target: str) -> tasks_v2.CloudTasksClient:
    """The official client over plaintext gRPC to ``host:port``."""
    return tasks_v2.CloudTasksClient(
        transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(target)))


def new_task(url: str) -> tasks_v2.Task:
    return tasks_v2.Task(http_request=tasks_v2.HttpRequest(
        url=url, http_method=tasks_v2.HttpMethod.POST,
        headers={"Content-Type": "application/json"}, body=BODY,
        oidc_token=tasks_v2.OidcToken(service_account_email=SERVICE_ACCOUNT)))


def start_receiver(workdir: Path) -> tuple[subprocess.Popen, str]:
    """The receiver, once ready; (process, its base URL). The caller stops it."""
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


def received(receiver_url: str) -> dict[str, int]:
    """What the receiver has counted: requests, those with a bearer token, body bytes."""
    with urllib.request.urlopen(f"{receiver_url}/count", timeout=10) as r:
        return json.load(r)

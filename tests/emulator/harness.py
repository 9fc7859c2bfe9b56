"""The emulator as a real process on ephemeral ports, and the official clients to it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.auth.credentials import AnonymousCredentials
from google.cloud import tasks_v2, tasks_v2beta3
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from google.cloud.tasks_v2beta3.services.cloud_tasks.transports import (
    CloudTasksGrpcTransport as BetaTransport,
)
from google.protobuf import duration_pb2

ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(r"gRPC (?P<host>[\d.]+):(?P<port>\d+), HTTP (?P<http>http://[^,]+),")
PROJECT, LOCATION = "test-project", "us-central1"
PARENT = f"projects/{PROJECT}/locations/{LOCATION}"


@dataclass
class RunningEmulator:
    proc: subprocess.Popen[str]
    port: int
    http_url: str
    db: str
    stderr: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> tasks_v2.CloudTasksClient:
        channel = grpc.insecure_channel(self.target)
        return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))

    def beta_client(self) -> tasks_v2beta3.CloudTasksClient:
        channel = grpc.insecure_channel(self.target)
        return tasks_v2beta3.CloudTasksClient(transport=BetaTransport(channel=channel))

    def rest_client(self) -> tasks_v2.CloudTasksClient:
        """The official client over HTTP/JSON (``transport="rest"``) to the HTTP port."""
        return tasks_v2.CloudTasksClient(**self.rest_options())

    def beta_rest_client(self) -> tasks_v2beta3.CloudTasksClient:
        return tasks_v2beta3.CloudTasksClient(**self.rest_options())

    def rest_options(self) -> dict[str, object]:
        """What any gapic client needs to speak REST to the emulator, no Google account."""
        return {"transport": "rest", "credentials": AnonymousCredentials(),
                "client_options": {"api_endpoint": self.http_url}}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def start_emulator(
    tmp: Path, config: str = "", db: str = ":memory:", timeout: float = 20.0,
    project: str = PROJECT,
) -> RunningEmulator:
    """``python -m emulator`` on ports 0, once it has printed its ready line."""
    cfg = tmp / f"emulator-{time.monotonic_ns()}.toml"
    cfg.write_text(f'project = "{project}"\nlocation = "{LOCATION}"\n' + config)
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--port", "0", "--http-port", "0",
         "--db", db, "--config", str(cfg)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    stderr: list[str] = []
    threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True).start()  # type: ignore[arg-type]
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    m = READY.search(lines[0]) if lines else None
    if not m:
        proc.kill()
        proc.wait(5)
        raise RuntimeError(f"emulator did not start: {lines} {''.join(stderr)}")
    return RunningEmulator(proc, int(m["port"]), m["http"], db, stderr)


@contextmanager
def emulator_on_disk(folder: Path, config: str) -> Iterator[RunningEmulator]:
    """An emulator keeping its state in ``folder`` (a test may restart one on it), stopped
    cleanly at the end."""
    em = start_emulator(folder, config, db=str(folder / "state.db"))
    try:
        yield em
    finally:
        assert em.stop() == 0, "".join(em.stderr)


def queue_name(queue_id: str) -> str:
    return f"{PARENT}/queues/{queue_id}"


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = ""):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s: {what}")
        time.sleep(interval)


def fast_retry(**overrides: object) -> tasks_v2.RetryConfig:
    """Retries that a test can watch: 0.1 s, doubling, at most 0.4 s apart."""
    cfg = {
        "max_attempts": 10,
        "min_backoff": duration_pb2.Duration(nanos=100_000_000),
        "max_backoff": duration_pb2.Duration(nanos=400_000_000),
        "max_doublings": 2,
    }
    cfg.update(overrides)
    return tasks_v2.RetryConfig(**cfg)


def http_task(url: str, body: bytes = b'{"job": 1}', **fields: object) -> tasks_v2.Task:
    headers = fields.pop("headers", {"Content-Type": "application/json"})
    oidc = fields.pop("oidc", None)
    request = tasks_v2.HttpRequest(
        url=url, http_method=tasks_v2.HttpMethod.POST, body=body, headers=headers
    )
    if oidc:
        request.oidc_token = tasks_v2.OidcToken(**oidc)
    return tasks_v2.Task(http_request=request, **fields)

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import tasks_v2
from google.protobuf import duration_pb2

from tests.emulator.harness import PARENT, RunningEmulator, start_emulator
from tests.receiver import Receiver

_ids = itertools.count()


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    tmp = tmp_path_factory.mktemp("emulator")
    em = start_emulator(tmp, db=str(tmp / "state.db"))
    yield em
    assert em.stop() == 0, "".join(em.stderr)


@pytest.fixture(scope="session")
def client(emulator: RunningEmulator) -> tasks_v2.CloudTasksClient:
    return emulator.client()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


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


@pytest.fixture
def make_queue(client: tasks_v2.CloudTasksClient):
    """Create a fresh queue for one test: ``make_queue(rate_limits=..., retry_config=...)``."""

    def make(paused: bool = False, **fields: object) -> str:
        name = f"{PARENT}/queues/q{next(_ids)}-{Path.cwd().name[:0]}t"
        fields.setdefault("retry_config", fast_retry())
        client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name, **fields))
        if paused:
            client.pause_queue(name=name)
        return name

    return make


def http_task(url: str, body: bytes = b'{"job": 1}', **fields: object) -> tasks_v2.Task:
    headers = fields.pop("headers", {"Content-Type": "application/json"})
    oidc = fields.pop("oidc", None)
    request = tasks_v2.HttpRequest(
        url=url, http_method=tasks_v2.HttpMethod.POST, body=body, headers=headers
    )
    if oidc:
        request.oidc_token = tasks_v2.OidcToken(**oidc)
    return tasks_v2.Task(http_request=request, **fields)

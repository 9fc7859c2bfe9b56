from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import tasks_v2

from tests.emulator.harness import PARENT, RunningEmulator, fast_retry, start_emulator
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


@pytest.fixture(scope="module")
def worker() -> Iterator[Receiver]:
    """One receiver for a module's tests, standing in for every worker."""
    r = Receiver()
    yield r
    r.close()


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

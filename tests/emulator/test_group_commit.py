"""Creates that arrive together share one commit, and each is committed before it is answered:
what a client was told survives a ``kill -9`` (with its taskCreationLog), a name taken twice
in one batch is refused once, a batch that cannot be committed answers no create OK, and
concurrent creates from many threads all land."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2
from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
from google.cloud.logging_v2.services.logging_service_v2.transports import (
    LoggingServiceV2GrpcTransport,
)

from emulator.config import load_config
from emulator.errors import ApiError
from emulator.group_commit import GroupCommit
from emulator.server import TASKS_V2, Emulator
from emulator.store import Store
from tests.emulator.harness import PROJECT, http_task, queue_name, start_emulator

CreateTaskRequest = tasks_v2.CreateTaskRequest.pb()
DeleteQueueRequest = tasks_v2.DeleteQueueRequest.pb()
TASK_LOG = f"projects/{PROJECT}/logs/cloudtasks.googleapis.com%2Ftask_operations_log"
HELD = """
[[queues]]
name = "held"
paused = true
log_sampling_ratio = 1.0
"""


def test_acknowledged_creates_survive_kill_9_with_their_logs(tmp_path):
    db = str(tmp_path / "state.db")
    em = start_emulator(tmp_path, HELD, db=db)
    q = queue_name("held")
    names = [f"{q}/tasks/t{i}" for i in range(400)]
    try:
        client = em.client()
        with ThreadPoolExecutor(16) as pool:  # many at once: they share commits
            created = list(pool.map(
                lambda name: client.create_task(parent=q, task=http_task(
                    "http://127.0.0.1:9/never", name=name), timeout=30).name, names))
        em.kill9()  # at once: no clean shutdown, nothing flushed on the way out
    finally:
        em.stop()
    assert created == names

    em = start_emulator(tmp_path, HELD, db=db)
    try:
        listed = {t.name for t in em.client().list_tasks(request={"parent": q, "page_size": 1000})}
        assert listed == set(names)
        logs = LoggingServiceV2Client(transport=LoggingServiceV2GrpcTransport(
            channel=grpc.insecure_channel(em.target)))
        logged = {e.json_payload["task"] for e in logs.list_log_entries(request={
            "resource_names": [f"projects/{PROJECT}"], "page_size": 1000,
            "filter": f'logName="{TASK_LOG}" AND jsonPayload.taskCreationLog.status="OK"'})}
        assert logged == set(names)  # each create's log entry was in its commit
    finally:
        assert em.stop() == 0, "".join(em.stderr)


def test_the_same_name_created_at_once_is_created_once(client, make_queue):
    q = make_queue(paused=True)
    name = f"{q}/tasks/wanted-by-all"
    start = threading.Barrier(8)

    def create(_: int) -> str:
        start.wait(10)
        try:
            client.create_task(parent=q, task=http_task("http://127.0.0.1:9/x", name=name),
                               timeout=30)
            return "created"
        except gexc.AlreadyExists as e:
            assert e.message == "Requested entity already exists"
            return "exists"

    with ThreadPoolExecutor(8) as pool:
        outcomes = sorted(pool.map(create, range(8)))
    assert outcomes == ["created"] + ["exists"] * 7
    assert [t.name for t in client.list_tasks(parent=q)] == [name]


def test_concurrent_creates_from_many_threads_all_land(client, make_queue):
    q = make_queue(paused=True)
    with ThreadPoolExecutor(16) as pool:
        names = list(pool.map(
            lambda _: client.create_task(parent=q, task=http_task("http://127.0.0.1:9/x"),
                                         timeout=30).name, range(800)))
    assert len(set(names)) == 800
    listed = client.list_tasks(request={"parent": q, "page_size": 1000})
    assert {t.name for t in listed} == set(names)


# -- one batch, made certain: the emulator in this process, creates submitted in one turn --


def _in_process(tmp_path: Path, body) -> object:
    cfg = tmp_path / "emulator.toml"
    cfg.write_text(f'project = "{PROJECT}"\nlocation = "us-central1"\n' + HELD)

    async def main() -> object:
        em = Emulator(load_config(str(cfg)), db=str(tmp_path / "state.db"), port=0,
                      http_port=0)
        await em.start()
        try:
            return await body(em)
        finally:
            await em.stop()

    return asyncio.run(main())


def _create(em: Emulator, name: str = "", url: str = "http://127.0.0.1:9/x"):
    req = CreateTaskRequest(parent=queue_name("held"))
    req.task.CopyFrom(tasks_v2.Task.pb(http_task(url, name=name)))
    return em.router.invoke(TASKS_V2, "CreateTask", req, {})


def test_a_name_taken_earlier_in_the_batch_is_refused_to_the_later_create(tmp_path):
    name = f"{queue_name('held')}/tasks/twice"

    async def body(em: Emulator) -> list:
        # Gathered calls run to their first await in the same turn: one batch.
        return await asyncio.gather(_create(em, name), _create(em, name), _create(em),
                                    return_exceptions=True)

    first, second, other = _in_process(tmp_path, body)
    assert first.name == name
    assert isinstance(second, ApiError) and second.code == grpc.StatusCode.ALREADY_EXISTS
    assert second.message == "Requested entity already exists"
    assert other.name.startswith(f"{queue_name('held')}/tasks/")  # the batch went on


def test_a_batch_that_cannot_be_committed_answers_no_create_ok(tmp_path):
    async def body(em: Emulator) -> tuple[list, list]:
        em.store.db.execute("PRAGMA busy_timeout=200")
        other = sqlite3.connect(em.db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the database
        try:
            failed = await asyncio.gather(*(_create(em, f"{queue_name('held')}/tasks/n{i}")
                                            for i in range(3)), return_exceptions=True)
        finally:
            other.execute("ROLLBACK")
            other.close()
        ok = await _create(em, f"{queue_name('held')}/tasks/n0")  # the name is still free
        return failed, [ok]

    failed, (ok,) = _in_process(tmp_path, body)
    assert [e.code for e in failed] == [grpc.StatusCode.INTERNAL] * 3
    assert "Nothing of it was saved" in failed[0].message
    assert ok.name.endswith("/tasks/n0")


def test_a_write_that_fails_unexpectedly_rolls_back_its_whole_batch(tmp_path):
    store = Store(tmp_path / "state.db")
    commits = GroupCommit(store)

    def meta(key: str):
        return lambda: store.set_meta(key, b"x")

    def broken() -> None:
        raise RuntimeError("disk on fire")

    async def main() -> list:
        return await asyncio.gather(commits.submit(meta("a")), commits.submit(broken),
                                    commits.submit(meta("b")), return_exceptions=True)

    outcomes = asyncio.run(main())
    assert [e.code for e in outcomes] == [grpc.StatusCode.INTERNAL] * 3
    assert "RuntimeError: disk on fire" in outcomes[0].message
    assert store.get_meta("a") is None and store.get_meta("b") is None
    store.close()


def test_closing_the_store_commits_what_waits_for_its_commit(tmp_path):
    store = Store(tmp_path / "state.db")
    commits = GroupCommit(store)

    async def main() -> asyncio.Future:
        waiting = commits.submit(lambda: store.set_meta("pending", b"kept") or "done")
        store.close()  # before the loop's next turn would have flushed it
        return waiting

    waiting = asyncio.run(main())
    assert waiting.result() == "done"
    reopened = Store(tmp_path / "state.db")
    assert reopened.get_meta("pending") == b"kept"
    reopened.close()


def test_deleting_a_queue_takes_the_creates_accepted_before_it(tmp_path):
    async def body(em: Emulator) -> list:
        created = [asyncio.ensure_future(_create(em)) for _ in range(3)]
        await asyncio.sleep(0)  # the creates are submitted, not yet committed
        delete = DeleteQueueRequest(name=queue_name("held"))
        await em.router.invoke(TASKS_V2, "DeleteQueue", delete, {})
        done = await asyncio.gather(*created)
        left = em.store.db.execute("SELECT count(*) FROM tasks").fetchone()[0]
        return [len(done), left]

    assert _in_process(tmp_path, body) == [3, 0]

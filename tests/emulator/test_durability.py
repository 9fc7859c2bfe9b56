"""State survives the emulator: a real ``kill -9`` in the middle of creates and dispatches."""

from __future__ import annotations

import threading

import requests
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2

from tests.emulator.harness import PARENT, http_task, queue_name, start_emulator, wait_until

CONFIG = """
[[queues]]
name = "durable"
retry_config = { min_backoff_s = 0.1, max_backoff_s = 0.5 }

[[queues]]
name = "held"
paused = true
"""


def test_kill_9_loses_no_accepted_task(tmp_path, receiver):
    db = str(tmp_path / "state.db")
    em = start_emulator(tmp_path, CONFIG, db=db)
    try:
        client = em.client()
        q = queue_name("durable")
        receiver.delay("/work", 1.0)  # keeps dispatches in flight when the kill comes
        certs_before = requests.get(f"{em.http_url}/oauth2/v1/certs", timeout=5).json()
        acknowledged: list[str] = []
        stop = threading.Event()

        def create(worker: int) -> None:
            i = 0
            while not stop.is_set():
                task = http_task(receiver.url + "/work", name=f"{q}/tasks/w{worker}-{i}")
                try:
                    client.create_task(parent=q, task=task, timeout=5)
                except gexc.GoogleAPICallError:
                    return  # the emulator is gone; this create was not acknowledged
                acknowledged.append(task.name.rsplit("/", 1)[1])
                i += 1

        threads = [threading.Thread(target=create, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        receiver.wait_for(lambda rs: len(rs) >= 20 and len(acknowledged) >= 150, timeout=20)
        em.kill9()
        stop.set()
        for t in threads:
            t.join(10)
    finally:
        em.stop()

    em = start_emulator(tmp_path, CONFIG, db=db)
    try:
        client = em.client()
        expected = set(acknowledged)
        got = receiver.wait_for(
            lambda rs: expected <= {r.header("X-CloudTasks-TaskName") for r in rs},
            timeout=30,
        )
        assert len(expected) >= 150 and len(got) >= len(expected)
        # What was in flight at the kill is sent again, so the queue drains completely.
        wait_until(lambda: not list(client.list_tasks(parent=q)), timeout=20, what="drained")
        # The signing key is kept with the state: tokens from before still verify.
        assert requests.get(f"{em.http_url}/oauth2/v1/certs", timeout=5).json() == certs_before
        assert client.get_queue(name=queue_name("held")).state == tasks_v2.Queue.State.PAUSED
    finally:
        assert em.stop() == 0


def test_tasks_and_queues_survive_a_restart(tmp_path, receiver):
    db = str(tmp_path / "state.db")
    em = start_emulator(tmp_path, db=db)
    try:
        client = em.client()
        q = client.create_queue(parent=PARENT, queue={
            "name": queue_name("kept"), "rate_limits": {"max_dispatches_per_second": 3}}).name
        client.pause_queue(name=q)
        names = {client.create_task(parent=q, task=http_task(receiver.url + "/kept")).name
                 for _ in range(5)}
    finally:
        em.kill9()
    em = start_emulator(tmp_path, db=db)
    try:
        client = em.client()
        queue = client.get_queue(name=q)
        assert queue.state == tasks_v2.Queue.State.PAUSED
        assert queue.rate_limits.max_dispatches_per_second == 3
        assert {t.name for t in client.list_tasks(parent=q)} == names
        assert receiver.requests == []
        client.resume_queue(name=q)
        receiver.at("/kept", 5)
    finally:
        assert em.stop() == 0

"""Queue and task actions through the official client, against the real emulator."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf import timestamp_pb2

from enqueuer_core.actions import delete_tasks, pause_queue, purge_queue, resume_queue, run_task
from enqueuer_core.errors import QueueNotFound, TaskNotFound
from enqueuer_core.inspect import queue_snapshot
from tests.acting import as_admin
from tests.emulator.harness import PARENT, http_task, wait_until


def later(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds))
    return ts


def add(client, queue: str, url: str, n: int = 1, **fields) -> list[str]:
    return [client.create_task(parent=queue, task=http_task(url, **fields)).name
            for _ in range(n)]


def test_pause_resume_and_purge_change_the_queue(client, make_queue, receiver):
    queue = make_queue()
    paused = pause_queue(client, queue, as_admin())
    assert paused.state == "PAUSED" and paused.name == queue
    add(client, queue, receiver.url + "/held", 3)
    assert queue_snapshot(client, queue).tasks_count == 3
    assert receiver.requests == []

    purged = purge_queue(client, queue, as_admin())
    assert purged.tasks_count == 0 and purged.state == "PAUSED"

    add(client, queue, receiver.url + "/after", 1)
    resumed = resume_queue(client, queue, as_admin())
    assert resumed.state == "RUNNING"
    receiver.at("/after")
    assert not [r for r in receiver.requests if r.path == "/held"]


def test_run_task_dispatches_a_scheduled_task_now(client, make_queue, receiver):
    queue = make_queue()
    (name,) = add(client, queue, receiver.url + "/now", schedule_time=later(3600))
    snapshot = run_task(client, name, as_admin())
    assert snapshot.name == name
    (got,) = receiver.at("/now", timeout=5)
    assert got.header("X-CloudTasks-TaskName") == name.rsplit("/", 1)[1]
    # It succeeded, so it is gone: running it again says so.
    wait_until(lambda: not list(client.list_tasks(parent=queue)), what="task done")
    with pytest.raises(TaskNotFound, match=name):
        run_task(client, name, as_admin())


def test_delete_tasks_deletes_each_and_reports_the_missing(client, make_queue):
    queue = make_queue(paused=True)
    names = add(client, queue, "http://127.0.0.1:9/x", 3)
    missing = f"{queue}/tasks/never-there"
    result = delete_tasks(client, [names[0], missing, *names[1:]], as_admin())
    assert list(result) == [names[0], missing, *names[1:]]
    assert {result[n] for n in names} == {None}
    assert "never-there" in result[missing] and "does not exist" in result[missing]
    assert list(client.list_tasks(parent=queue)) == []
    # Deleted already: a second delete reports each, and raises nothing.
    again = delete_tasks(client, names, as_admin())
    assert all(again[n] for n in names)


def test_actions_on_a_missing_queue_say_how_to_create_it(client):
    queue = f"{PARENT}/queues/no-such-queue"
    with pytest.raises(QueueNotFound, match="gcloud tasks queues create no-such-queue"):
        pause_queue(client, queue, as_admin())
    with pytest.raises(QueueNotFound):
        purge_queue(client, queue, as_admin())
    # Cloud Tasks does not say which is missing, the task or its queue.
    with pytest.raises(TaskNotFound):
        run_task(client, f"{queue}/tasks/t1", as_admin())

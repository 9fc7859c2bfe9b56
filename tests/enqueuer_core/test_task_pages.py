"""Pages, filters and one task in full, as the dashboard shows them, from the real emulator."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest
from google.cloud import tasks_v2
from google.protobuf import timestamp_pb2

from enqueuer_core.errors import TaskNotFound
from enqueuer_core.inspect import TaskPage, filter_tasks, task_detail, task_page
from tests.emulator.harness import PARENT, http_task

NOW = dt.datetime.now(dt.UTC)


def at(when: dt.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when)
    return ts


def keyed(url: str, key: str, body: bytes = b'{"job": 1}', **fields) -> tasks_v2.Task:
    return http_task(url, body=body, headers={"Content-Type": "application/json",
                                              "X-Idempotency-Key": key}, **fields)


@pytest.fixture(scope="module")
def full_queue(client) -> tuple[str, list[str]]:
    """A paused queue of 120 tasks; every third is scheduled an hour ahead."""
    queue = f"{PARENT}/queues/pages-{NOW.timestamp():.0f}"
    client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=queue))
    client.pause_queue(name=queue)
    names = []
    for i in range(120):
        fields = {"schedule_time": at(NOW + dt.timedelta(hours=1))} if i % 3 == 0 else {}
        task = keyed("http://127.0.0.1:9/p", f"Order-{i:03d}", **fields)
        names.append(client.create_task(parent=queue, task=task).name)
    return queue, names


def test_task_page_walks_the_queue_page_by_page(client, full_queue):
    queue, names = full_queue
    pages: list[TaskPage] = []
    token = None
    while True:
        page = task_page(client, queue, token, page_size=50)
        pages.append(page)
        token = page.next_page_token
        if token is None:
            break
        assert len(pages) < 5, "the pages never end"
    assert [len(p.tasks) for p in pages] == [50, 50, 20]
    seen = [t.name for p in pages for t in p.tasks]
    assert len(set(seen)) == 120 and set(seen) == set(names)
    assert pages[0].tasks[0].idempotency_key is not None


def test_task_page_refuses_a_page_size_cloud_tasks_would_not_serve(client, full_queue):
    with pytest.raises(ValueError, match="page_size"):
        task_page(client, full_queue[0], page_size=0)


def test_filter_tasks_by_schedule_text_and_failure(client, full_queue):
    queue, _ = full_queue
    tasks = task_page(client, queue, page_size=120).tasks
    # Unscheduled tasks are due at their creation: "future" means past the next minutes.
    soon = NOW + dt.timedelta(minutes=30)
    future = filter_tasks(tasks, future=True, now=soon)
    assert len(future) == 40
    assert all(t.schedule_time > soon for t in future)
    assert len(filter_tasks(tasks, future=True, now=NOW - dt.timedelta(minutes=1))) == 120
    assert {t.idempotency_key for t in filter_tasks(tasks, text="order-01")} == {
        f"Order-01{d}" for d in range(10)}
    one = tasks[7]
    assert filter_tasks(tasks, text=one.task_id) == [one]
    assert filter_tasks(tasks, failing=True) == []
    failed = [dataclasses.replace(tasks[0], last_response_code="500"),
              dataclasses.replace(tasks[1], last_response_code="200"), tasks[2]]
    assert filter_tasks(failed, failing=True) == failed[:1]
    assert filter_tasks(failed, failing=True, future=True, text="order-000", now=soon) == [
        failed[0]]
    assert filter_tasks(failed, failing=True, text="order-001") == []


def test_task_detail_decodes_the_payload_and_the_attempts(client, make_queue, receiver):
    queue = make_queue()
    receiver.respond("/fail", [500] * 20)
    payload = {"text": "ñandú", "n": [1, 2]}
    name = client.create_task(parent=queue, task=keyed(
        receiver.url + "/fail", "detail-1", json.dumps(payload).encode())).name
    receiver.at("/fail", 2)
    client.pause_queue(name=queue)

    detail = task_detail(client, name)
    assert detail.payload == payload
    assert detail.headers["X-Idempotency-Key"] == "detail-1"
    assert detail.snapshot.name == name and detail.snapshot.failing
    assert detail.first_attempt_time is not None
    last = detail.last_attempt
    assert last["code"] == "500" and "500" in last["message"]
    assert last["dispatch_time"] >= detail.first_attempt_time
    assert last["response_time"] >= last["dispatch_time"]


def test_task_detail_of_a_text_body_and_of_a_missing_task(client, make_queue):
    queue = make_queue(paused=True)
    name = client.create_task(parent=queue, task=keyed(
        "http://127.0.0.1:9/t", "text", b"not json, just text")).name
    detail = task_detail(client, name)
    assert detail.payload == "not json, just text"
    assert detail.first_attempt_time is None
    assert detail.last_attempt == {"schedule_time": None, "dispatch_time": None,
                                   "response_time": None, "code": None, "message": None}
    client.delete_task(name=name)
    with pytest.raises(TaskNotFound, match=name):
        task_detail(client, name)

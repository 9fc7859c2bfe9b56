"""Changes made while tasks are being dispatched: the emulator keeps its promises."""

from __future__ import annotations

import datetime as dt

import pytest
from google.api_core import exceptions as gexc
from google.protobuf import duration_pb2, field_mask_pb2

from tests.emulator.harness import fast_retry, http_task, wait_until


def test_rate_change_applies_to_a_running_queue(client, make_queue, receiver):
    q = make_queue(paused=True, rate_limits={"max_dispatches_per_second": 1})
    for _ in range(20):
        client.create_task(parent=q, task=http_task(receiver.url + "/r"))
    client.resume_queue(name=q)
    receiver.at("/r", 1)
    # At 1/s the rest would take 19 s; at 500/s they arrive at once.
    client.update_queue(
        queue={"name": q, "rate_limits": {"max_dispatches_per_second": 500}},
        update_mask=field_mask_pb2.FieldMask(paths=["rate_limits.max_dispatches_per_second"]),
    )
    receiver.at("/r", 20, timeout=5)


def test_delete_queue_with_dispatches_in_flight(client, make_queue, receiver):
    q = make_queue()
    receiver.delay("/slow", 1.0)
    for _ in range(5):
        client.create_task(parent=q, task=http_task(receiver.url + "/slow"))
    receiver.at("/slow", 5)
    client.delete_queue(name=q)
    with pytest.raises(gexc.NotFound):
        list(client.list_tasks(parent=q))
    # The emulator goes on dispatching for other queues.
    other = make_queue()
    client.create_task(parent=other, task=http_task(receiver.url + "/other"))
    receiver.at("/other")


def test_delete_task_while_in_flight_is_not_retried(client, make_queue, receiver):
    q = make_queue()
    receiver.delay("/failing", 0.5)
    receiver.respond("/failing", [500] * 10)
    name = client.create_task(parent=q, task=http_task(receiver.url + "/failing")).name
    receiver.at("/failing")
    client.delete_task(name=name)
    wait_until(lambda: receiver.active == 0, what="the 500 answered after the delete")
    # A retry would come after 0.1 s, before a task due in 0.5 s on the same queue.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.5)
    client.create_task(parent=q, task=http_task(receiver.url + "/marker", schedule_time=later))
    receiver.at("/marker")
    assert len([r for r in receiver.requests if r.path == "/failing"]) == 1


def test_task_retry_config_overrides_the_queue(client, make_queue, receiver):
    q = make_queue(retry_config=fast_retry(max_attempts=10))
    receiver.respond("/once", [500] * 10)
    task = http_task(receiver.url + "/once")
    task.retry_config = fast_retry(max_attempts=2,
                                   min_backoff=duration_pb2.Duration(nanos=50_000_000))
    client.create_task(parent=q, task=task)
    receiver.at("/once", 2)
    wait_until(lambda: not list(client.list_tasks(parent=q)), what="given up after 2")
    assert len([r for r in receiver.requests if r.path == "/once"]) == 2

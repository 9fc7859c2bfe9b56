"""Queue methods, queue IAM and stats through the official clients."""

from __future__ import annotations

import datetime as dt

import pytest
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2
from google.iam.v1 import policy_pb2
from google.protobuf import duration_pb2, field_mask_pb2

from tests.emulator.harness import PARENT, http_task, queue_name, wait_until

RUNNING, PAUSED = tasks_v2.Queue.State.RUNNING, tasks_v2.Queue.State.PAUSED


def test_create_fills_google_defaults(client):
    q = client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=queue_name("defaults")))
    assert q.state == RUNNING
    assert q.rate_limits.max_dispatches_per_second == 500
    assert q.rate_limits.max_burst_size == 100
    assert q.rate_limits.max_concurrent_dispatches == 1000
    assert q.retry_config.max_attempts == 100
    assert q.retry_config.min_backoff == dt.timedelta(milliseconds=100)
    assert q.retry_config.max_backoff == dt.timedelta(hours=1)
    assert q.retry_config.max_doublings == 16
    assert client.get_queue(name=q.name) == q
    with pytest.raises(gexc.AlreadyExists, match="Queue already exists"):
        client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=q.name))


def test_list_queues_is_ordered_and_paginated(client):
    parent = "projects/paging-project/locations/europe-west1"
    ids = [f"page-{i:02}" for i in range(12)]
    for i in reversed(ids):
        client.create_queue(parent=parent, queue=tasks_v2.Queue(name=f"{parent}/queues/{i}"))
    pages = list(client.list_queues(request={"parent": parent, "page_size": 5}).pages)
    assert [len(p.queues) for p in pages] == [5, 5, 2]
    assert [q.name.rsplit("/", 1)[1] for p in pages for q in p.queues] == ids
    client.pause_queue(name=f"{parent}/queues/page-03")
    paused = list(client.list_queues(request={"parent": parent, "filter": "state: PAUSED"}))
    assert [q.name.rsplit("/", 1)[1] for q in paused] == ["page-03"]


@pytest.mark.parametrize(
    ("queue", "message"),
    [
        ({"rate_limits": {"max_dispatches_per_second": 501}},
         "RateLimits.maxDispatchesPerSecond must be less than or equal to 500."),
        ({"rate_limits": {"max_dispatches_per_second": -1}},
         "RateLimits.maxDispatchesPerSecond cannot be negative."),
        ({"rate_limits": {"max_concurrent_dispatches": 5001}},
         "RateLimits.maxConcurrentDispatches must be less than or equal to 5000."),
        ({"retry_config": {"max_attempts": -2}},
         "RetryConfig.maxAttempts must be greater or equal to -1."),
        ({"retry_config": {"min_backoff": {"seconds": 10}, "max_backoff": {"seconds": 5}}},
         "RetryConfig.minBackoff must be less than or equal to RetryConfig.maxBackoff."),
    ],
)
def test_invalid_limits_are_refused(client, queue, message):
    name = queue_name(f"bad-{abs(hash(message)) % 10**8}")
    with pytest.raises(gexc.InvalidArgument) as e:
        client.create_queue(parent=PARENT, queue={"name": name, **queue})
    assert e.value.message == message
    with pytest.raises(gexc.NotFound):
        client.get_queue(name=name)


@pytest.mark.parametrize("name", [f"{PARENT}/queues/has_underscore",
                                  f"{PARENT}/queues/" + "q" * 101, "queues/x"])
def test_queue_name_format(client, name):
    with pytest.raises(gexc.InvalidArgument) as e:
        client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name))
    assert e.value.message == (
        'Queue name must be formatted: "projects/<PROJECT_ID>/locations/<LOCATION_ID>/queues/'
        '<QUEUE_ID>".'
    )


def test_missing_queue_answers_not_found(client):
    missing = queue_name("nowhere")
    for call in (client.get_queue, client.pause_queue, client.resume_queue, client.purge_queue):
        with pytest.raises(gexc.NotFound, match="Queue does not exist"):
            call(name=missing)
    with pytest.raises(gexc.NotFound, match="Requested entity was not found"):
        client.delete_queue(name=missing)
    with pytest.raises(gexc.NotFound, match="Queue does not exist"):
        list(client.list_tasks(parent=missing))


def test_update_queue_with_mask_and_upsert(client, make_queue):
    q = make_queue()
    before = client.get_queue(name=q)
    updated = client.update_queue(
        queue={"name": q, "rate_limits": {"max_dispatches_per_second": 7,
                                          "max_concurrent_dispatches": 3}},
        update_mask=field_mask_pb2.FieldMask(paths=["rate_limits.max_dispatches_per_second"]),
    )
    assert updated.rate_limits.max_dispatches_per_second == 7
    assert updated.rate_limits.max_burst_size == 2  # recomputed from the rate
    # Not in the mask: unchanged.
    assert updated.rate_limits.max_concurrent_dispatches == (
        before.rate_limits.max_concurrent_dispatches
    )
    assert updated.retry_config == before.retry_config
    assert client.get_queue(name=q) == updated

    created = client.update_queue(
        queue={"name": queue_name("made-by-update"), "retry_config": {"max_attempts": 3}}
    )
    assert created.retry_config.max_attempts == 3 and created.state == RUNNING
    with pytest.raises(gexc.InvalidArgument, match="state"):
        client.update_queue(queue={"name": q, "state": PAUSED},
                            update_mask=field_mask_pb2.FieldMask(paths=["state"]))


def test_pause_resume_purge_delete(client, make_queue, receiver):
    q = make_queue(paused=True)
    assert client.get_queue(name=q).state == PAUSED
    for i in range(3):
        client.create_task(parent=q, task=http_task(receiver.url, name=f"{q}/tasks/p{i}"))
    purged = client.purge_queue(name=q)
    assert purged.purge_time.timestamp() > 0
    assert list(client.list_tasks(parent=q)) == []
    with pytest.raises(gexc.AlreadyExists, match="existed too recently"):
        client.create_task(parent=q, task=http_task(receiver.url, name=f"{q}/tasks/p0"))

    client.create_task(parent=q, task=http_task(receiver.url + "/after-resume"))
    assert client.resume_queue(name=q).state == RUNNING
    receiver.at("/after-resume")
    client.delete_queue(name=q)
    with pytest.raises(gexc.NotFound):
        client.get_queue(name=q)
    assert q not in [x.name for x in client.list_queues(parent=PARENT)]


def test_queue_iam_policy(client, make_queue):
    q = make_queue()
    empty = client.get_iam_policy(resource=q)
    assert list(empty.bindings) == [] and empty.etag == b"ACAB"
    binding = policy_pb2.Binding(role="roles/cloudtasks.enqueuer",
                                 members=["serviceAccount:api@p.iam.gserviceaccount.com"])
    saved = client.set_iam_policy(request={"resource": q,
                                           "policy": policy_pb2.Policy(bindings=[binding])})
    assert list(saved.bindings) == [binding] and saved.etag != b"ACAB"
    assert client.get_iam_policy(resource=q) == saved
    with pytest.raises(gexc.Aborted, match="concurrent policy changes"):
        client.set_iam_policy(request={"resource": q, "policy": policy_pb2.Policy(etag=b"stale")})
    with pytest.raises(gexc.InvalidArgument, match="Invalid member"):
        client.set_iam_policy(request={"resource": q, "policy": policy_pb2.Policy(
            bindings=[policy_pb2.Binding(role="roles/cloudtasks.enqueuer", members=["bob"])])})
    granted = client.test_iam_permissions(
        resource=q, permissions=["cloudtasks.tasks.create", "cloudtasks.queues.get"]
    )
    assert list(granted.permissions) == ["cloudtasks.tasks.create", "cloudtasks.queues.get"]
    with pytest.raises(gexc.InvalidArgument, match="not valid for this resource"):
        client.test_iam_permissions(resource=q, permissions=["storage.objects.get"])
    with pytest.raises(gexc.NotFound):
        client.get_iam_policy(resource=queue_name("no-such-queue"))


def test_stats_through_v2beta3_read_mask(emulator, client, make_queue, receiver):
    beta = emulator.beta_client()
    q = make_queue(paused=True)
    assert not beta.get_queue(name=q).stats.tasks_count  # no read_mask: no stats
    empty = beta.get_queue(request={"name": q, "read_mask": {"paths": ["stats"]}}).stats
    assert empty.tasks_count == 0 and not empty.oldest_estimated_arrival_time
    first = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    client.create_task(parent=q, task=http_task(receiver.url + "/later", schedule_time=first))
    receiver.delay("/slow", 1.5)
    for _ in range(2):
        client.create_task(parent=q, task=http_task(receiver.url + "/slow"))
    stats = beta.get_queue(request={"name": q, "read_mask": {"paths": ["stats"]}}).stats
    assert stats.tasks_count == 3
    assert stats.oldest_estimated_arrival_time < first
    assert stats.effective_execution_rate == 0  # paused
    client.resume_queue(name=q)

    def inflight():
        s = beta.get_queue(request={"name": q, "read_mask": {"paths": ["stats"]}}).stats
        return s if s.concurrent_dispatches_count == 2 else None

    during = wait_until(inflight, what="two dispatches in flight")
    assert during.effective_execution_rate == 500
    receiver.at("/slow", 2)

    def executed():
        s = beta.get_queue(request={"name": q, "read_mask": {"paths": ["stats"]}}).stats
        return s if s.executed_last_minute_count == 2 and s.tasks_count == 1 else None

    after = wait_until(executed, what="two executed in the last minute")
    assert after.concurrent_dispatches_count == 0
    listed = beta.list_queues(request={"parent": PARENT, "read_mask": {"paths": ["stats"]}})
    assert {x.name: x.stats.tasks_count for x in listed}[q] == 1


def test_methods_not_emulated_answer_unimplemented(client):
    with pytest.raises(gexc.MethodNotImplemented):
        client.get_cmek_config(request={"name": f"{PARENT}/cmekConfig"})
    # (The locations mixin is served: test_rest_tasks.py::test_locations.)
    with pytest.raises(gexc.MethodNotImplemented):
        client.get_operation(request={"name": f"{PARENT}/operations/op-1"})


def test_retry_config_durations_survive(client):
    q = client.create_queue(parent=PARENT, queue={
        "name": queue_name("retry-durations"),
        "retry_config": {"max_retry_duration": duration_pb2.Duration(seconds=90),
                         "max_doublings": 3}})
    assert q.retry_config.max_retry_duration == dt.timedelta(seconds=90)
    assert client.get_queue(name=q.name).retry_config.max_doublings == 3

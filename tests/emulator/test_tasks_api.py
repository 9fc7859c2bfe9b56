"""Task methods through the official client: what they return and how they refuse bad input."""

from __future__ import annotations

import datetime as dt

import pytest
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2
from google.protobuf import duration_pb2, timestamp_pb2

from tests.emulator.harness import PARENT, http_task, queue_name

BASIC, FULL = tasks_v2.Task.View.BASIC, tasks_v2.Task.View.FULL
FAR_FUTURE = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)


def test_create_get_list_delete(client, make_queue, receiver):
    q = make_queue(paused=True)
    created = client.create_task(
        parent=q, task=http_task(receiver.url + "/a", name=f"{q}/tasks/job-1")
    )
    assert created.name == f"{q}/tasks/job-1"
    assert created.view == BASIC and created.http_request.body == b""  # BASIC omits the body
    assert created.dispatch_deadline == dt.timedelta(minutes=10)  # the default is stored
    assert created.http_request.headers["User-Agent"] == "Google-Cloud-Tasks"
    assert created.create_time.timestamp() == int(created.create_time.timestamp())

    full = client.get_task(request={"name": created.name, "response_view": FULL})
    assert full.http_request.body == b'{"job": 1}' and full.view == FULL
    assert full.http_request.headers["Content-Type"] == "application/json"

    unnamed = client.create_task(parent=q, task=http_task(receiver.url + "/b"))
    assert unnamed.name.startswith(f"{q}/tasks/") and unnamed.name.rsplit("/", 1)[1].isdigit()

    listed = list(client.list_tasks(parent=q))
    assert {t.name for t in listed} == {created.name, unnamed.name}
    client.delete_task(name=created.name)
    assert [t.name for t in client.list_tasks(parent=q)] == [unnamed.name]
    assert receiver.requests == []  # the queue is paused


def test_list_tasks_pages_of_up_to_1000(client, make_queue, receiver):
    q = make_queue(paused=True)
    names = {
        client.create_task(parent=q, task=http_task(receiver.url, name=f"{q}/tasks/t{i:04}")).name
        for i in range(1205)
    }
    pages = list(client.list_tasks(request={"parent": q, "page_size": 5000}).pages)
    assert [len(p.tasks) for p in pages] == [1000, 205]
    small = client.list_tasks(request={"parent": q, "page_size": 500})
    seen = [t.name for page in small.pages for t in page.tasks]
    assert len(seen) == 1205 and set(seen) == names  # no task twice, none missed
    request = {"parent": q, "page_size": 1, "response_view": FULL}
    full = next(iter(client.list_tasks(request=request)))
    assert full.http_request.body == b'{"job": 1}'


def test_page_token_that_was_not_given_is_refused(client, make_queue):
    q = make_queue()
    with pytest.raises(gexc.InvalidArgument, match="page_token"):
        client.list_tasks(request={"parent": q, "page_token": "%%%not-a-token"})


@pytest.mark.parametrize(
    ("task_id", "ok"),
    [("a" * 500, True), ("a" * 501, False), ("has space", False), ("dot.ted", False),
     ("ok_Id-09", True), ("ünï", False)],
)
def test_task_id_charset_and_length(client, make_queue, receiver, task_id, ok):
    q = make_queue(paused=True)
    task = http_task(receiver.url, name=f"{q}/tasks/{task_id}")
    if ok:
        assert client.create_task(parent=q, task=task).name.endswith(task_id)
        return
    with pytest.raises(gexc.InvalidArgument) as e:
        client.create_task(parent=q, task=task)
    assert e.value.message == (
        f'Task ID "{task_id}" can contain only letters ([A-Za-z]), numbers ([0-9]), '
        "hyphens (-), or underscores (_). Task ID must between 1 and 500 characters."
    )
    assert list(client.list_tasks(parent=q)) == []


def test_task_name_format(client, make_queue, receiver):
    q = make_queue()
    with pytest.raises(gexc.InvalidArgument, match="Task name must be formatted"):
        client.create_task(parent=q, task=http_task(receiver.url, name="tasks/x"))


def test_named_task_of_another_queue(client, make_queue, receiver):
    q, other = make_queue(), make_queue()
    with pytest.raises(gexc.InvalidArgument) as e:
        client.create_task(parent=q, task=http_task(receiver.url, name=f"{other}/tasks/x"))
    assert e.value.message == (
        f"The queue name from request ('{q}') must be the same as the queue name in the "
        f"named task ('{other}')."
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [("", "HttpRequest.url is required."),
     ("ftp://host/x", "HttpTarget.url must start with 'http://' or 'https://'."),
     ("host/x", "HttpTarget.url must start with 'http://' or 'https://'.")],
)
def test_url_is_required_and_http(client, make_queue, url, message):
    q = make_queue()
    with pytest.raises(gexc.InvalidArgument) as e:
        client.create_task(parent=q, task=http_task(url))
    assert e.value.message == message


def test_schedule_more_than_30_days_ahead(client, make_queue, receiver):
    q = make_queue(paused=True)
    ok = dt.datetime.now(dt.UTC) + dt.timedelta(days=29)
    client.create_task(parent=q, task=http_task(receiver.url, schedule_time=ok))
    too_far = timestamp_pb2.Timestamp()
    too_far.FromDatetime(dt.datetime(2099, 12, 31, 16, tzinfo=dt.UTC))
    with pytest.raises(gexc.InvalidArgument) as e:
        client.create_task(parent=q, task=http_task(receiver.url, schedule_time=too_far))
    assert e.value.message == (
        "The Task.scheduleTime, 2099-12-31T08:00:00-08:00, is too far in the future. "
        "Schedule time must be no more than 720h in the future."
    )
    assert len(list(client.list_tasks(parent=q))) == 1


@pytest.mark.parametrize(("deadline_s", "ok"), [(14, False), (15, True), (1800, True),
                                                 (1801, False)])
def test_dispatch_deadline_between_15s_and_30m(client, make_queue, receiver, deadline_s, ok):
    q = make_queue(paused=True)
    task = http_task(receiver.url, dispatch_deadline=duration_pb2.Duration(seconds=deadline_s))
    if ok:
        assert client.create_task(parent=q, task=task).dispatch_deadline.total_seconds() == (
            deadline_s
        )
        return
    with pytest.raises(gexc.InvalidArgument) as e:
        client.create_task(parent=q, task=task)
    assert e.value.message == "Task.dispatchDeadline must be between [15s, 30m]."


def test_oversized_task(client, make_queue, receiver):
    q = make_queue(paused=True)
    with pytest.raises(gexc.InvalidArgument) as e:
        client.create_task(parent=q, task=http_task(receiver.url, body=b"x" * (1024 * 1024)))
    assert e.value.message == "Task size too large"
    client.create_task(parent=q, task=http_task(receiver.url, body=b"x" * (1000 * 1024)))
    assert len(list(client.list_tasks(parent=q))) == 1


def test_missing_queue(client, receiver):
    with pytest.raises(gexc.NotFound) as e:
        client.create_task(parent=queue_name("never-created"), task=http_task(receiver.url))
    assert e.value.message.startswith("Queue does not exist.")


def test_recently_deleted_queue(client, make_queue, receiver):
    q = make_queue()
    client.delete_queue(name=q)
    with pytest.raises(gexc.NotFound, match="Queue does not exist"):
        client.create_task(parent=q, task=http_task(receiver.url))
    with pytest.raises(gexc.FailedPrecondition) as e:
        client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=q))
    assert e.value.message == (
        "The queue cannot be created because a queue with this name existed too recently."
    )


def test_duplicate_name_live_then_reserved(client, make_queue, receiver):
    q = make_queue(paused=True)
    name = f"{q}/tasks/dedupe-me"
    client.create_task(parent=q, task=http_task(receiver.url, name=name))
    with pytest.raises(gexc.AlreadyExists) as e:
        client.create_task(parent=q, task=http_task(receiver.url, name=name))
    assert e.value.message == "Requested entity already exists"

    client.delete_task(name=name)
    with pytest.raises(gexc.AlreadyExists) as e:
        client.create_task(parent=q, task=http_task(receiver.url, name=name))
    assert e.value.message.startswith(
        "The task cannot be created because a task with this name existed too recently."
    )
    with pytest.raises(gexc.NotFound) as e:
        client.get_task(name=name)
    assert e.value.message == (
        "The task no longer exists, though a task with this name existed recently. The task "
        "either successfully completed or was deleted."
    )
    with pytest.raises(gexc.NotFound) as e:
        client.get_task(name=f"{q}/tasks/never-was")
    assert e.value.message == "Requested entity was not found."
    with pytest.raises(gexc.NotFound, match="Requested entity was not found"):
        client.delete_task(name=f"{q}/tasks/never-was")
    with pytest.raises(gexc.NotFound, match="Requested entity was not found"):
        client.run_task(name=f"{q}/tasks/never-was")


def test_page_token_of_the_wrong_shape_is_refused(client, make_queue):
    q = make_queue()
    with pytest.raises(gexc.InvalidArgument, match="page_token"):
        client.list_tasks(request={"parent": q, "page_token": "YWJj"})  # base64 of "abc"

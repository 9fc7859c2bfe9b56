"""Cloud Tasks over HTTP/JSON: the official client with ``transport="rest"`` against the
emulator's HTTP port, over every method, and its errors as the gRPC port gives them."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator

import pytest
from google.api_core import exceptions as gexc
from google.auth.transport.requests import Request
from google.cloud import tasks_v2, tasks_v2beta3
from google.cloud.location import locations_pb2
from google.iam.v1 import iam_policy_pb2, options_pb2, policy_pb2
from google.oauth2 import id_token
from google.protobuf import duration_pb2, field_mask_pb2

from tests.emulator.harness import (
    LOCATION,
    PARENT,
    PROJECT,
    RunningEmulator,
    fast_retry,
    http_task,
    start_emulator,
)

CALLER = f"caller@{PROJECT}.iam.gserviceaccount.com"
FULL = tasks_v2.Task.View.FULL
_ids = itertools.count()


@pytest.fixture(scope="module")
def rest(emulator: RunningEmulator) -> tasks_v2.CloudTasksClient:
    return emulator.rest_client()


def new_queue(rest: tasks_v2.CloudTasksClient, **fields: object) -> str:
    name = f"{PARENT}/queues/rest-{next(_ids)}"
    fields.setdefault("retry_config", fast_retry())
    rest.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name, **fields))
    return name


def test_rest_client_accepts_the_http_endpoint(emulator, rest):
    assert rest.transport.kind == "rest"
    assert rest.transport._host == emulator.http_url  # http://, not https://


def test_queue_methods(rest, client):
    name = f"{PARENT}/queues/rest-queue-{next(_ids)}"
    created = rest.create_queue(parent=PARENT, queue=tasks_v2.Queue(
        name=name, rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=7),
        retry_config=tasks_v2.RetryConfig(min_backoff=duration_pb2.Duration(nanos=500_000_000))))
    assert created.name == name and created.state == tasks_v2.Queue.State.RUNNING
    assert created.rate_limits.max_dispatches_per_second == 7
    assert created.retry_config.min_backoff == dt.timedelta(milliseconds=500)
    assert rest.get_queue(name=name) == client.get_queue(name=name) == created
    assert name in {q.name for q in rest.list_queues(parent=PARENT)}

    updated = rest.update_queue(
        queue=tasks_v2.Queue(name=name,
                             rate_limits=tasks_v2.RateLimits(max_concurrent_dispatches=3),
                             retry_config=tasks_v2.RetryConfig(max_attempts=4)),
        update_mask=field_mask_pb2.FieldMask(paths=["rate_limits.max_concurrent_dispatches",
                                                    "retry_config.max_attempts"]))
    assert updated.rate_limits.max_concurrent_dispatches == 3
    assert updated.retry_config.max_attempts == 4
    assert updated.rate_limits.max_dispatches_per_second == 7  # outside the mask: kept

    assert rest.pause_queue(name=name).state == tasks_v2.Queue.State.PAUSED
    assert client.get_queue(name=name).state == tasks_v2.Queue.State.PAUSED
    assert rest.resume_queue(name=name).state == tasks_v2.Queue.State.RUNNING
    rest.pause_queue(name=name)
    rest.create_task(parent=name, task=http_task("https://example.com/purged"))
    purged = rest.purge_queue(name=name)
    assert purged.purge_time and list(rest.list_tasks(parent=name)) == []

    assert rest.delete_queue(name=name) is None
    with pytest.raises(gexc.NotFound):
        client.get_queue(name=name)


def test_list_queues_pages_and_filter(rest):
    names = {new_queue(rest) for _ in range(3)}
    pages = list(rest.list_queues(request={"parent": PARENT, "page_size": 1}).pages)
    assert all(len(p.queues) == 1 for p in pages) and len(pages) >= 3
    assert names <= {p.queues[0].name for p in pages}
    paused = new_queue(rest)
    rest.pause_queue(name=paused)
    listed = rest.list_queues(request={"parent": PARENT, "filter": "state: PAUSED"})
    assert paused in {q.name for q in listed} and not names & {q.name for q in listed}


def test_task_methods(rest, client, worker):
    q = new_queue(rest)
    rest.pause_queue(name=q)
    body = bytes(range(256))  # every byte survives base64 in JSON, both ways
    task = http_task(worker.url + "/rest", body=body, name=f"{q}/tasks/named-1",
                     headers={"Content-Type": "application/octet-stream", "X-Kept": "yes"},
                     schedule_time=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
                     dispatch_deadline=duration_pb2.Duration(seconds=700))
    created = rest.create_task(request={"parent": q, "task": task, "response_view": FULL})
    assert created.name == f"{q}/tasks/named-1" and created.http_request.body == body
    assert created.dispatch_deadline == dt.timedelta(seconds=700)
    assert created.http_request.headers["X-Kept"] == "yes"
    basic = rest.get_task(name=created.name)
    assert basic.view == tasks_v2.Task.View.BASIC and basic.http_request.body == b""
    full = rest.get_task(request={"name": created.name, "response_view": FULL})
    assert full == client.get_task(request={"name": created.name, "response_view": FULL})
    assert full.schedule_time == created.schedule_time

    unnamed = rest.create_task(parent=q, task=http_task(worker.url + "/rest"))
    for i in range(3):
        rest.create_task(parent=q, task=http_task(worker.url + "/rest", name=f"{q}/tasks/p{i}"))
    pages = list(rest.list_tasks(request={"parent": q, "page_size": 2}).pages)
    assert [len(p.tasks) for p in pages] == [2, 2, 1]
    listed = {t.name for p in pages for t in p.tasks}
    assert {created.name, unnamed.name} <= listed and len(listed) == 5

    ran = rest.run_task(name=created.name)  # dispatched although the queue is paused
    assert ran.name == created.name
    got = next(r for r in worker.wait_for(lambda rs: any(r.path == "/rest" for r in rs))
               if r.path == "/rest")
    assert got.body == body and got.header("X-Kept") == "yes"
    rest.delete_task(name=unnamed.name)
    assert unnamed.name not in {t.name for t in rest.list_tasks(parent=q)}


def test_http_task_reaches_the_worker_with_its_token(emulator, rest, worker):
    q = new_queue(rest)
    audience = "https://worker.example.com"
    rest.create_task(parent=q, task=http_task(
        worker.url + "/signed", body=b'{"job": "rest"}',
        oidc={"service_account_email": CALLER, "audience": audience}))
    got = worker.wait_for(lambda rs: any(r.path == "/signed" for r in rs))
    (r,) = [r for r in got if r.path == "/signed"]
    assert r.method == "POST" and r.body == b'{"job": "rest"}'
    scheme, token = r.header("Authorization").split(" ", 1)
    claims = id_token.verify_token(token, Request(), audience=audience,
                                   certs_url=f"{emulator.http_url}/oauth2/v1/certs")
    assert scheme == "Bearer" and claims["email"] == CALLER
    assert r.header("X-CloudTasks-QueueName") == q.rsplit("/", 1)[1]


def test_iam_policy_methods(rest, client):
    q = new_queue(rest)
    member = "user:rest@example.com"
    policy = policy_pb2.Policy(bindings=[policy_pb2.Binding(
        role="roles/cloudtasks.enqueuer", members=[member])])
    set_ = rest.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
        resource=q, policy=policy))
    assert [(b.role, list(b.members)) for b in set_.bindings] == [
        ("roles/cloudtasks.enqueuer", [member])]
    got = rest.get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(
        resource=q, options=options_pb2.GetPolicyOptions(requested_policy_version=3)))
    assert got == client.get_iam_policy(request={"resource": q}) and got.etag == set_.etag
    tested = rest.test_iam_permissions(request=iam_policy_pb2.TestIamPermissionsRequest(
        resource=q, permissions=["cloudtasks.tasks.create", "cloudtasks.queues.get"]))
    assert list(tested.permissions) == ["cloudtasks.tasks.create", "cloudtasks.queues.get"]


def test_locations(rest, client):
    (location,) = rest.list_locations(locations_pb2.ListLocationsRequest(
        name=f"projects/{PROJECT}")).locations
    assert location.name == PARENT and location.location_id == LOCATION
    assert dict(location.labels) == {"cloud.googleapis.com/region": LOCATION}
    assert rest.get_location(locations_pb2.GetLocationRequest(name=PARENT)) == location
    assert client.get_location(locations_pb2.GetLocationRequest(name=PARENT)) == location
    with pytest.raises(gexc.NotFound, match="europe-west1"):
        rest.get_location(locations_pb2.GetLocationRequest(
            name=f"projects/{PROJECT}/locations/europe-west1"))


def test_v2beta3_queue_stats(emulator, rest):
    q = new_queue(rest)
    rest.pause_queue(name=q)
    for _ in range(3):
        rest.create_task(parent=q, task=http_task("https://example.com/later"))
    beta = emulator.beta_rest_client()
    stats = beta.get_queue(request={"name": q, "read_mask": {"paths": ["stats"]}}).stats
    assert stats.tasks_count == 3 and stats.oldest_estimated_arrival_time
    assert not beta.get_queue(name=q).stats.tasks_count  # no read mask: no stats
    listed = beta.list_queues(request={"parent": PARENT, "read_mask": {"paths": ["stats"]}})
    (mine,) = [x for x in listed if x.name == q]
    assert mine.stats.tasks_count == 3 and mine.type_ == tasks_v2beta3.Queue.Type.PUSH


def _same_error(rest_call, grpc_call, rest_kind: type, status: str, http: int) -> str:
    """Call both ports; assert the REST error is the gRPC one in Google's JSON shape."""
    with pytest.raises(gexc.GoogleAPICallError) as g:
        grpc_call()
    with pytest.raises(rest_kind) as r:
        rest_call()
    error = r.value.response.json()["error"]
    assert error == {"code": http, "message": g.value.message, "status": status}
    assert r.value.code == http
    return g.value.message


def test_errors_are_the_grpc_ones(rest, client):
    missing = f"{PARENT}/queues/never-created"
    message = _same_error(lambda: rest.get_queue(name=missing),
                          lambda: client.get_queue(name=missing),
                          gexc.NotFound, "NOT_FOUND", 404)
    assert "does not exist" in message or "not found" in message.lower()

    q = new_queue(rest)
    # The REST client raises Conflict for 409, of which AlreadyExists is a kind (api_core
    # picks the class by HTTP status); the JSON still says ALREADY_EXISTS.
    _same_error(lambda: rest.create_queue(parent=PARENT, queue={"name": q}),
                lambda: client.create_queue(parent=PARENT, queue={"name": q}),
                gexc.Conflict, "ALREADY_EXISTS", 409)
    rest.pause_queue(name=q)
    rest.create_task(parent=q, task=http_task("https://example.com/x", name=f"{q}/tasks/dup"))
    dup = http_task("https://example.com/x", name=f"{q}/tasks/dup")
    _same_error(lambda: rest.create_task(parent=q, task=dup),
                lambda: client.create_task(parent=q, task=dup),
                gexc.Conflict, "ALREADY_EXISTS", 409)
    bad = http_task("https://example.com/x", name=f"{q}/tasks/has space")
    message = _same_error(lambda: rest.create_task(parent=q, task=bad),
                          lambda: client.create_task(parent=q, task=bad),
                          gexc.BadRequest, "INVALID_ARGUMENT", 400)
    assert message.startswith('Task ID "has space" can contain only letters')
    _same_error(lambda: rest.get_task(name=f"{q}/tasks/nope"),
                lambda: client.get_task(name=f"{q}/tasks/nope"),
                gexc.NotFound, "NOT_FOUND", 404)


STRANGER = "user:stranger@example.com"
ADMIN = f"serviceAccount:enqueuer@{PROJECT}.iam.gserviceaccount.com"
ENFORCED = f"""
[iam]
enforce = true
principal = "{ADMIN}"
bindings = [{{ role = "roles/cloudtasks.admin", members = ["{ADMIN}"] }}]

[[queues]]
name = "guarded"
"""


@pytest.fixture(scope="module")
def enforcing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    em = start_emulator(tmp_path_factory.mktemp("rest-iam"), ENFORCED)
    yield em
    assert em.stop() == 0, "".join(em.stderr)


def test_permission_denied_for_the_principal_header(enforcing):
    rest, client = enforcing.rest_client(), enforcing.client()
    q = f"{PARENT}/queues/guarded"
    assert rest.get_queue(name=q).name == q  # the configured principal is an admin
    as_stranger = [("x-emulator-principal", STRANGER)]
    new = {"name": f"{PARENT}/queues/not-for-strangers"}
    message = _same_error(
        lambda: rest.create_queue(parent=PARENT, queue=new, metadata=as_stranger),
        lambda: client.create_queue(parent=PARENT, queue=new, metadata=as_stranger),
        gexc.Forbidden, "PERMISSION_DENIED", 403)
    assert '"cloudtasks.queues.create"' in message
    _same_error(
        lambda: rest.list_locations(locations_pb2.ListLocationsRequest(
            name=f"projects/{PROJECT}"), metadata=as_stranger),
        lambda: client.list_locations(locations_pb2.ListLocationsRequest(
            name=f"projects/{PROJECT}"), metadata=as_stranger),
        gexc.Forbidden, "PERMISSION_DENIED", 403)
    with pytest.raises(gexc.PermissionDenied):  # as a subclass of Forbidden, by gRPC code
        client.delete_queue(name=q, metadata=as_stranger)

"""Dispatch as Cloud Tasks does it, seen from a real HTTP receiver."""

from __future__ import annotations

import datetime as dt
import itertools
import time

import pytest
import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.auth import jwt
from google.auth.transport.requests import Request
from google.cloud import tasks_v2
from google.oauth2 import id_token
from google.protobuf import duration_pb2

from tests.emulator.harness import fast_retry, http_task, wait_until

CALLER = "caller@test-project.iam.gserviceaccount.com"


def test_503_404_200_headers_and_counts(client, make_queue, receiver):
    q = make_queue()
    receiver.respond("/job", [503, 404])
    task = client.create_task(parent=q, task=http_task(
        receiver.url + "/job", name=f"{q}/tasks/retried",
        headers={"X-Mixed-Case": "kept", "content-type": "application/json"},
    ))
    got = receiver.at("/job", 3)
    first, second, third = got
    for r in got:
        assert r.method == "POST" and r.body == b'{"job": 1}'
        assert r.header("User-Agent") == "Google-Cloud-Tasks"
        assert r.header("X-CloudTasks-QueueName") == q.rsplit("/", 1)[1]
        assert r.header("X-CloudTasks-TaskName") == "retried"
        assert ("X-Mixed-Case", "kept") in r.headers  # the task's headers keep their casing
        assert ("content-type", "application/json") in r.headers
        eta = float(r.header("X-CloudTasks-TaskETA"))
        assert abs(eta - r.at) < 5
    assert [r.header("X-CloudTasks-TaskRetryCount") for r in got] == ["0", "1", "2"]
    # 5xx answers do not count as executions.
    assert [r.header("X-CloudTasks-TaskExecutionCount") for r in got] == ["0", "0", "1"]
    assert first.header("X-CloudTasks-TaskPreviousResponse") is None
    assert first.header("X-CloudTasks-TaskRetryReason") is None
    assert second.header("X-CloudTasks-TaskPreviousResponse") == "503"
    assert third.header("X-CloudTasks-TaskPreviousResponse") == "404"
    assert second.header("X-CloudTasks-TaskRetryReason") == ""
    # Backoff: 0.1 s then 0.2 s between attempts (min_backoff 0.1 s, doubling).
    assert second.at - first.at >= 0.09 and third.at - second.at >= 0.19

    # Success removes the task and keeps its name reserved.
    def gone():
        try:
            client.get_task(name=task.name)
        except gexc.NotFound as e:
            return "existed recently" in e.message
        return False

    wait_until(gone, what="task removed after its 200")


def test_attempt_records_while_retrying(client, make_queue, receiver):
    q = make_queue(retry_config=fast_retry(min_backoff=duration_pb2.Duration(seconds=30),
                                           max_backoff=duration_pb2.Duration(seconds=30)))
    receiver.respond("/nf", [404])
    name = client.create_task(parent=q, task=http_task(receiver.url + "/nf")).name
    receiver.at("/nf")
    task = wait_until(lambda: (t := client.get_task(name=name)).response_count == 1 and t,
                      what="the 404 recorded")
    assert task.dispatch_count == 1
    assert task.first_attempt.dispatch_time == task.last_attempt.dispatch_time
    last = task.last_attempt
    assert last.response_status.code == 5  # NOT_FOUND
    assert last.response_status.message == "NOT_FOUND(5): HTTP status code 404"
    assert last.schedule_time <= last.dispatch_time <= last.response_time
    # Next attempt after min_backoff.
    delay = task.schedule_time - last.response_time
    assert dt.timedelta(seconds=29) < delay <= dt.timedelta(seconds=31)


def test_no_content_type_is_added(client, make_queue, receiver):
    q = make_queue()
    client.create_task(parent=q, task=http_task(receiver.url + "/raw", headers={}))
    (r,) = receiver.at("/raw")
    assert r.header("Content-Type") is None and r.body == b'{"job": 1}'


def test_reserved_headers_are_not_passed_through(client, make_queue, receiver):
    q = make_queue()
    client.create_task(parent=q, task=http_task(receiver.url + "/h", headers={
        "user-agent": "mine", "X-CloudTasks-TaskRetryCount": "99", "X-Google-Thing": "x",
    }, oidc={"service_account_email": CALLER}))
    (r,) = receiver.at("/h")
    assert r.header("User-Agent") == "Google-Cloud-Tasks"
    assert r.header("X-CloudTasks-TaskRetryCount") == "0"
    assert r.header("X-Google-Thing") is None


def test_schedule_time_delays_dispatch(client, make_queue, receiver):
    q = make_queue()
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)
    client.create_task(parent=q, task=http_task(receiver.url + "/later", schedule_time=when))
    client.create_task(parent=q, task=http_task(receiver.url + "/now"))
    (now,) = receiver.at("/now")
    assert not [r for r in receiver.requests if r.path == "/later"]
    (later,) = receiver.at("/later", timeout=10)
    assert later.at >= when.timestamp() - 0.01
    assert later.at - when.timestamp() < 2.0
    assert float(later.header("X-CloudTasks-TaskETA")) == pytest.approx(when.timestamp(), abs=1e-5)
    assert now.at < later.at


def test_paused_queue_holds_tasks_until_resumed(client, make_queue, receiver):
    q = make_queue(paused=True)
    for i in range(3):
        client.create_task(parent=q, task=http_task(receiver.url + "/held", name=f"{q}/tasks/h{i}"))
    # Held: none arrives while a task on a running queue does.
    other = make_queue()
    client.create_task(parent=other, task=http_task(receiver.url + "/control"))
    receiver.at("/control")
    assert not [r for r in receiver.requests if r.path == "/held"]
    client.resume_queue(name=q)
    got = receiver.at("/held", 3)
    assert {r.header("X-CloudTasks-TaskName") for r in got} == {"h0", "h1", "h2"}


def test_run_task_dispatches_on_paused_queue_and_replaces_the_attempt(
    client, make_queue, receiver
):
    q = make_queue(paused=True)
    receiver.respond("/run", [503])
    name = client.create_task(parent=q, task=http_task(receiver.url + "/run")).name
    ran = client.run_task(name=name)
    assert ran.dispatch_count == 1 and ran.last_attempt.dispatch_time
    (first,) = receiver.at("/run")
    assert first.header("X-CloudTasks-TaskRetryCount") == "0"
    failed = wait_until(lambda: (t := client.get_task(name=name)).response_count == 1 and t,
                        what="the 503 recorded")
    assert failed.dispatch_count == 1  # one attempt, not the RunTask plus the scheduled one
    assert failed.schedule_time > failed.last_attempt.response_time  # retry delay applied
    client.resume_queue(name=q)
    got = receiver.at("/run", 2)
    assert got[1].header("X-CloudTasks-TaskRetryCount") == "1"
    wait_until(lambda: not list(client.list_tasks(parent=q)), what="task done")
    assert len([r for r in receiver.requests if r.path == "/run"]) == 2


def test_run_task_on_a_future_task_then_success_removes_it(client, make_queue, receiver):
    q = make_queue()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    name = client.create_task(parent=q, task=http_task(receiver.url + "/now",
                                                       schedule_time=later)).name
    client.run_task(name=name)
    receiver.at("/now")
    wait_until(lambda: not list(client.list_tasks(parent=q)), what="task removed")
    with pytest.raises(gexc.NotFound, match="existed recently"):
        client.run_task(name=name)


def test_max_dispatches_per_second(client, make_queue, receiver):
    q = make_queue(paused=True, rate_limits={"max_dispatches_per_second": 5})
    assert client.get_queue(name=q).rate_limits.max_burst_size == 1
    for _ in range(8):
        client.create_task(parent=q, task=http_task(receiver.url + "/rated"))
    client.resume_queue(name=q)
    got = receiver.at("/rated", 8, timeout=15)
    span = got[-1].at - got[0].at
    assert span >= 7 / 5 * 0.9, f"8 tasks at 5/s took only {span:.2f}s"
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    assert min(gaps) > 0.1


def test_max_concurrent_dispatches(client, make_queue, receiver):
    q = make_queue(paused=True, rate_limits={"max_concurrent_dispatches": 2})
    receiver.delay("/slow", 0.4)
    for _ in range(6):
        client.create_task(parent=q, task=http_task(receiver.url + "/slow"))
    client.resume_queue(name=q)
    receiver.at("/slow", 6, timeout=15)
    assert receiver.max_concurrent == 2


def test_dispatch_deadline_is_the_request_timeout(client, make_queue, receiver):
    q = make_queue(retry_config=fast_retry(min_backoff=duration_pb2.Duration(seconds=60),
                                           max_backoff=duration_pb2.Duration(seconds=60)))
    receiver.delay("/hangs", 17)
    start = time.monotonic()
    name = client.create_task(parent=q, task=http_task(
        receiver.url + "/hangs", dispatch_deadline=duration_pb2.Duration(seconds=15))).name
    receiver.at("/hangs")  # arrives at once; the answer comes too late

    def timed_out():
        t = client.get_task(name=name)
        return t.last_attempt.response_time and t

    task = wait_until(timed_out, timeout=25, interval=0.1, what="attempt recorded")
    waited = time.monotonic() - start
    assert 15 <= waited < 17
    assert task.last_attempt.response_status.code == 4  # DEADLINE_EXCEEDED
    assert task.response_count == 0  # no answer came
    assert "DEADLINE_EXCEEDED(4)" in task.last_attempt.response_status.message
    assert task.schedule_time - task.last_attempt.response_time >= dt.timedelta(seconds=59)


def test_max_attempts_gives_up(client, make_queue, receiver):
    q = make_queue(retry_config=fast_retry(max_attempts=3))
    receiver.respond("/fails", [500] * 10)
    name = client.create_task(parent=q, task=http_task(receiver.url + "/fails")).name
    receiver.at("/fails", 3)
    wait_until(lambda: not list(client.list_tasks(parent=q)), what="given up")
    assert len([r for r in receiver.requests if r.path == "/fails"]) == 3
    with pytest.raises(gexc.NotFound, match="existed recently"):
        client.get_task(name=name)


def test_max_retry_duration_and_max_attempts_both_reached(client, make_queue, receiver):
    q = make_queue(retry_config=fast_retry(
        max_attempts=2, max_retry_duration=duration_pb2.Duration(seconds=1),
        min_backoff=duration_pb2.Duration(nanos=200_000_000),
        max_backoff=duration_pb2.Duration(nanos=200_000_000)))
    receiver.respond("/fails", [500] * 50)
    client.create_task(parent=q, task=http_task(receiver.url + "/fails"))
    wait_until(lambda: not list(client.list_tasks(parent=q)), timeout=10, what="given up")
    got = [r for r in receiver.requests if r.path == "/fails"]
    # Two attempts were allowed, but retries went on until a second had passed.
    assert len(got) >= 4
    assert got[-1].at - got[0].at >= 1.0
    assert got[-2].at - got[0].at < 1.0


def test_oidc_token_verifies_with_google_auth(emulator, client, make_queue, receiver):
    q = make_queue()
    aud = receiver.url
    client.create_task(parent=q, task=http_task(receiver.url + "/secure", oidc={
        "service_account_email": CALLER, "audience": aud}))
    client.create_task(parent=q, task=http_task(receiver.url + "/default-aud", oidc={
        "service_account_email": CALLER}))
    (r,) = receiver.at("/secure")
    scheme, token = r.header("Authorization").split(" ", 1)
    assert scheme == "Bearer"
    certs = f"{emulator.http_url}/oauth2/v1/certs"
    claims = id_token.verify_token(token, Request(), audience=aud, certs_url=certs)
    assert claims["iss"] == "https://accounts.google.com"
    assert claims["email"] == CALLER and claims["email_verified"] is True
    assert claims["sub"] == claims["azp"] and claims["sub"].isdigit()
    assert claims["exp"] - claims["iat"] == 3600
    with pytest.raises(auth_exc.GoogleAuthError, match="audience"):
        id_token.verify_token(token, Request(), audience="https://other.example",
                              certs_url=certs)
    # Without an audience, the task's URL is the audience.
    (d,) = receiver.at("/default-aud")
    token = d.header("Authorization").split(" ", 1)[1]
    assert id_token.verify_token(token, Request(), audience=receiver.url + "/default-aud",
                                 certs_url=certs)["email"] == CALLER


def test_oidc_discovery_and_jwks(emulator):
    disco = requests.get(f"{emulator.http_url}/.well-known/openid-configuration", timeout=5)
    assert disco.json()["issuer"] == "https://accounts.google.com"
    jwks = requests.get(disco.json()["jwks_uri"], timeout=5).json()
    v1 = requests.get(f"{emulator.http_url}/oauth2/v1/certs", timeout=5).json()
    assert [k["kid"] for k in jwks["keys"]] == list(v1)
    assert jwks["keys"][0]["alg"] == "RS256" and jwks["keys"][0]["kty"] == "RSA"
    # The PEM certificate verifies a token signed with the key the JWKS describes.
    assert next(iter(v1.values())).startswith("-----BEGIN CERTIFICATE-----")


def test_token_header_names_the_key(emulator, client, make_queue, receiver):
    q = make_queue()
    client.create_task(parent=q, task=http_task(receiver.url + "/kid",
                                                oidc={"service_account_email": CALLER}))
    (r,) = receiver.at("/kid")
    header = jwt.decode_header(r.header("Authorization").split(" ", 1)[1])
    v1 = requests.get(f"{emulator.http_url}/oauth2/v1/certs", timeout=5).json()
    assert header["alg"] == "RS256" and header["kid"] in v1


def test_unreachable_target_is_retried_with_unavailable(client, make_queue, receiver):
    q = make_queue(retry_config=fast_retry(min_backoff=duration_pb2.Duration(seconds=60),
                                           max_backoff=duration_pb2.Duration(seconds=60)))
    name = client.create_task(parent=q, task=http_task("http://127.0.0.1:9/closed")).name
    task = wait_until(lambda: (t := client.get_task(name=name)).last_attempt.response_time and t,
                      what="attempt recorded")
    assert task.last_attempt.response_status.code == 14  # UNAVAILABLE
    assert task.response_count == 0 and task.dispatch_count == 1


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_http_method(client, make_queue, receiver, method):
    q = make_queue()
    task = http_task(receiver.url + "/m", body=b"" if method == "GET" else b"x")
    task.http_request.http_method = tasks_v2.HttpMethod[method]
    client.create_task(parent=q, task=task)
    (r,) = receiver.at("/m")
    assert r.method == method

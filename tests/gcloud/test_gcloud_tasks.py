"""The real ``gcloud tasks`` against the emulator, as ``eval "$(enqueuer --local gcloud-env)"``
sets it up: each command's effect is read back through the official gRPC client, a task
gcloud creates reaches a worker with a token the worker can verify, and ``gcloud logging
read`` finds its attempt in the queue's task-operation log.

Each gcloud run costs most of a second of Python start-up: every command runs once.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import os

import pytest
from google.api_core import exceptions as gexc
from google.auth.transport.requests import Request
from google.cloud import tasks_v2
from google.oauth2 import id_token
from google.protobuf import duration_pb2, timestamp_pb2

from enqueuer_core.clients import logging_client
from enqueuer_core.config import load_settings
from tests.emulator.harness import LOCATION, PARENT, PROJECT, http_task, queue_name, wait_until
from tests.gcloud.harness import LOCATION_FLAG, Gcloud, require_gcloud

CALLER = f"caller@{PROJECT}.iam.gserviceaccount.com"
_ids = itertools.count()


def new_queue_id() -> str:
    return f"gc{next(_ids)}-{os.getpid()}"


def make_queue(client: tasks_v2.CloudTasksClient, **fields: object) -> str:
    queue_id = new_queue_id()
    client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=queue_name(queue_id),
                                                            **fields))
    return queue_id


def test_queues_create_list_describe_update_pause_resume_purge_delete(gcloud: Gcloud, client):
    queue_id = new_queue_id()
    name = queue_name(queue_id)
    created = gcloud.run("tasks", "queues", "create", queue_id, LOCATION_FLAG,
                         "--max-attempts=5", "--max-dispatches-per-second=10",
                         "--max-concurrent-dispatches=2", "--min-backoff=1s",
                         "--max-backoff=10s", "--log-sampling-ratio=0.5")
    assert created.stderr == f"Created queue [{LOCATION}/{queue_id}].\n"
    queue = client.get_queue(name=name)
    assert queue.retry_config.max_attempts == 5
    assert queue.rate_limits.max_dispatches_per_second == 10
    assert queue.rate_limits.max_concurrent_dispatches == 2
    assert queue.retry_config.min_backoff.seconds == 1  # type: ignore[attr-defined]
    assert queue.retry_config.max_backoff.seconds == 10  # type: ignore[attr-defined]
    assert queue.stackdriver_logging_config.sampling_ratio == 0.5

    assert name in {q["name"] for q in gcloud.json("tasks", "queues", "list", LOCATION_FLAG)}
    described = gcloud.json("tasks", "queues", "describe", queue_id, LOCATION_FLAG)
    assert described["state"] == "RUNNING"
    assert described["retryConfig"] == {"maxAttempts": 5, "minBackoff": "1s",
                                        "maxBackoff": "10s", "maxDoublings": 16}
    assert described["rateLimits"]["maxConcurrentDispatches"] == 2

    # An update changes what it names and only that (gcloud sends an update mask).
    gcloud.run("tasks", "queues", "update", queue_id, LOCATION_FLAG, "--max-attempts=7",
               "--clear-max-backoff")
    queue = client.get_queue(name=name)
    assert queue.retry_config.max_attempts == 7
    assert queue.retry_config.max_backoff.seconds == 3600  # type: ignore[attr-defined]
    assert queue.rate_limits.max_concurrent_dispatches == 2

    gcloud.run("tasks", "queues", "pause", queue_id, LOCATION_FLAG)
    assert client.get_queue(name=name).state == tasks_v2.Queue.State.PAUSED
    # A task waits in the paused queue; purge removes it.
    client.create_task(parent=name, task=http_task("http://127.0.0.1:9/never"))
    gcloud.run("tasks", "queues", "purge", queue_id, LOCATION_FLAG)
    wait_until(lambda: not list(client.list_tasks(parent=name)), timeout=10,
               what="the purge removed the task")
    gcloud.run("tasks", "queues", "resume", queue_id, LOCATION_FLAG)
    assert client.get_queue(name=name).state == tasks_v2.Queue.State.RUNNING

    gcloud.run("tasks", "queues", "delete", queue_id, LOCATION_FLAG)
    with pytest.raises(gexc.NotFound):
        client.get_queue(name=name)


def test_an_http_task_from_gcloud_reaches_the_worker_with_a_verifiable_token(
        gcloud: Gcloud, client, emulator, receiver):
    # Every task operation logged: gcloud logging read shows the attempt afterwards.
    queue_id = make_queue(client, stackdriver_logging_config=tasks_v2.StackdriverLoggingConfig(
        sampling_ratio=1.0))
    body = '{"job": "doc-1", "note": "é/+?"}'  # URL-safe base64 differs on these bytes
    audience = receiver.url
    gcloud.run("tasks", "create-http-task", "from-gcloud-1", f"--queue={queue_id}",
               LOCATION_FLAG, f"--url={receiver.url}/work", "--method=POST",
               "--header=Content-Type:application/json", "--header=X-Trace: abc, def",
               f"--body-content={body}", f"--oidc-service-account-email={CALLER}",
               f"--oidc-token-audience={audience}")
    (got,) = receiver.at("/work")
    assert got.method == "POST" and got.body.decode() == body
    assert got.header("Content-Type") == "application/json"
    assert got.header("X-Trace") == "abc, def"
    assert got.header("X-CloudTasks-TaskName") == "from-gcloud-1"
    assert got.header("X-CloudTasks-QueueName") == queue_id
    scheme, token = (got.header("Authorization") or "").split(" ", 1)
    assert scheme == "Bearer"
    claims = id_token.verify_token(token, Request(), audience=audience,
                                   certs_url=f"{emulator.http_url}/oauth2/v1/certs")
    assert claims["email"] == CALLER and claims["aud"] == audience

    # What happened to it, from Cloud Logging, as gcloud reads Google's.
    task = f"{queue_name(queue_id)}/tasks/from-gcloud-1"
    where = (f'logName="projects/{PROJECT}/logs/cloudtasks.googleapis.com%2Ftask_operations_log"'
             f' AND jsonPayload.task="{task}" AND jsonPayload.attemptResponseLog.status="OK"')
    logs = logging_client(load_settings(cloud_tasks_emulator_host=emulator.target,
                                        project_id=PROJECT))
    wait_until(lambda: list(logs.list_log_entries(request={
        "resource_names": [f"projects/{PROJECT}"], "filter": where})), timeout=10,
        what="the attempt is in the task-operation log")
    (entry,) = gcloud.json("logging", "read", where, "--limit=5")
    assert entry["resource"] == {"type": "cloud_tasks_queue", "labels": {
        "project_id": PROJECT, "location": LOCATION, "queue_id": queue_id,
        "target_type": "HTTP"}}
    assert entry["jsonPayload"]["attemptResponseLog"]["targetAddress"] == (
        f"POST {receiver.url}/work")


def test_tasks_list_describe_run_delete(gcloud: Gcloud, client, receiver):
    queue_id = make_queue(client)
    parent = queue_name(queue_id)
    later = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(hours=1)
    when = timestamp_pb2.Timestamp()
    when.FromDatetime(later)
    for task_id in ("t-run", "t-delete"):
        client.create_task(parent=parent, task=http_task(
            f"{receiver.url}/{task_id}", body=b'{"n": 1}', name=f"{parent}/tasks/{task_id}",
            schedule_time=when, dispatch_deadline=duration_pb2.Duration(seconds=30)))

    listed = gcloud.json("tasks", "list", f"--queue={queue_id}", LOCATION_FLAG)
    assert sorted(t["name"] for t in listed) == [f"{parent}/tasks/t-delete",
                                                 f"{parent}/tasks/t-run"]
    # The FULL view carries the body (BASIC, gcloud's default, leaves it out, as on Google).
    described = gcloud.json("tasks", "describe", "t-run", f"--queue={queue_id}", LOCATION_FLAG,
                            "--response-view=full")
    assert described["httpRequest"]["url"] == f"{receiver.url}/t-run"
    assert base64.b64decode(described["httpRequest"]["body"]) == b'{"n": 1}'
    assert described["scheduleTime"] == later.isoformat().replace("+00:00", "Z")
    assert described["dispatchDeadline"] == "30s"

    # Run now, an hour early: the worker gets it, and once it answered 200 the task is done.
    ran = gcloud.json("tasks", "run", "t-run", f"--queue={queue_id}", LOCATION_FLAG)
    assert ran["name"] == f"{parent}/tasks/t-run"
    (got,) = receiver.at("/t-run")
    assert json.loads(got.body) == {"n": 1}

    def gone(name: str) -> bool:
        try:
            client.get_task(name=name)
        except gexc.NotFound:
            return True
        return False

    wait_until(lambda: gone(f"{parent}/tasks/t-run"), timeout=10, what="t-run is done")
    gcloud.run("tasks", "delete", "t-delete", f"--queue={queue_id}", LOCATION_FLAG)
    assert gone(f"{parent}/tasks/t-delete")
    assert [t.name for t in client.list_tasks(parent=parent)] == []


def test_a_missing_queue_is_reported_as_gcloud_reports_googles_answer(gcloud: Gcloud):
    done = gcloud.run("tasks", "queues", "describe", "no-such-queue", LOCATION_FLAG, ok=False)
    assert done.returncode == 1 and done.stdout == ""
    # Google's 404 for GetQueue (its REST answer, recorded in cloud-custodian's
    # cloudtasks-queue-delete flight), then the note gcloud adds to a 404 on a command that
    # runs without credentials.
    assert done.stderr == (
        "ERROR: (gcloud.tasks.queues.describe) NOT_FOUND: Queue does not exist. If you just "
        "created the queue, wait at least a minute for the queue to initialize. This command "
        "is unauthenticated because the [auth/disable_credentials] property is True.\n")


def test_without_gcloud_the_tests_fail_with_the_install_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # a folder with no gcloud in it
    with pytest.raises(pytest.fail.Exception, match="install the Google Cloud CLI"):
        require_gcloud()

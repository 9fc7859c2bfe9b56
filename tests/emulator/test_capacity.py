"""A Cloud Run service's capacity: max instances x concurrency, read through the official
Admin v2 client, enforced by the front door with Cloud Run's 429, and met by Cloud Tasks,
which retries the 429s until every slow job is done."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import grpc
import pytest
import requests
from google.cloud import run_v2
from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
from google.cloud.logging_v2.services.logging_service_v2.transports import (
    LoggingServiceV2GrpcTransport,
)
from google.cloud.run_v2.services.services.transports import ServicesGrpcTransport

from emulator.config import ConfigError, load_config
from tests.emulator.harness import (
    PARENT,
    PROJECT,
    RunningEmulator,
    http_task,
    queue_name,
    start_emulator,
    wait_until,
)

CONFIG = """
[[queues]]
name = "q-busy"   # pushes up to 10 at once at a service that takes 1
rate_limits = { max_dispatches_per_second = 100, max_concurrent_dispatches = 10 }
retry_config = { max_attempts = 200, min_backoff_s = 0.1, max_backoff_s = 0.2, max_doublings = 1 }
log_sampling_ratio = 1.0

[[services]]
name = "pair"     # 1 instance x 2 requests at once
port = 0
paths = ["/work"]
timeout_s = 1
max_instances = 1
concurrency = 2
invokers = ["allUsers"]

[[services]]
name = "single"   # 1 x 1: one job at a time
port = 0
paths = ["/job"]
max_instances = 1
concurrency = 1
invokers = ["allUsers"]

[[services]]
name = "plain"    # Cloud Run's defaults
port = 0
"""
TASK_LOG = f"projects/{PROJECT}/logs/cloudtasks.googleapis.com%2Ftask_operations_log"
BUSY = queue_name("q-busy")


@pytest.fixture(scope="module")
def em(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    em = start_emulator(tmp_path_factory.mktemp("capacity"), CONFIG)
    try:
        yield em
    finally:
        assert em.stop() == 0, "".join(em.stderr)
        assert "Traceback" not in "".join(em.stderr), "".join(em.stderr)


@pytest.fixture(scope="module")
def run(em: RunningEmulator) -> run_v2.ServicesClient:
    channel = grpc.insecure_channel(em.target)
    return run_v2.ServicesClient(transport=ServicesGrpcTransport(channel=channel))


@pytest.fixture(scope="module")
def url(run: run_v2.ServicesClient) -> dict[str, str]:
    return {s: run.get_service(name=f"{PARENT}/services/{s}").uri
            for s in ("pair", "single", "plain")}


def post_all(target: str, bodies: list[object]) -> list[requests.Response]:
    """POST every body at once (a barrier starts them together); the answers, in order."""
    answers: list[requests.Response | None] = [None] * len(bodies)
    start = threading.Barrier(len(bodies))

    def send(i: int) -> None:
        start.wait(5)
        answers[i] = requests.post(target, json=bodies[i], timeout=10)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert all(a is not None for a in answers)
    return answers  # type: ignore[return-value]


def fits_twice(target: str) -> bool:
    """Both slots of ``pair`` are free: two overlapping requests both get through."""
    slow = {"_simulate": {"delay_s": 0.3}}
    return [r.status_code for r in post_all(target, [slow, slow])] == [200, 200]


def test_admin_v2_serves_max_instances_and_concurrency(run):
    pair = run.get_service(name=f"{PARENT}/services/pair")
    assert pair.template.scaling.max_instance_count == 1
    assert pair.template.max_instance_request_concurrency == 2
    plain = run.get_service(name=f"{PARENT}/services/plain")
    assert plain.template.scaling.max_instance_count == 100
    assert plain.template.max_instance_request_concurrency == 80


@pytest.mark.parametrize("field, value, says", [
    ("max_instances", 0, "max_instances = 0: Cloud Run takes 1 to 1000 instances"),
    ("max_instances", 1001, "leave it out for Cloud Run's default, 100"),
    ("concurrency", 0, "concurrency = 0: Cloud Run takes 1 to 1000 requests per instance"),
    ("concurrency", 5000, "leave it out for Cloud Run's default, 80"),
])
def test_capacity_out_of_cloud_runs_bounds_is_refused_with_the_range(tmp_path, field, value,
                                                                     says):
    cfg = tmp_path / "emulator.toml"
    cfg.write_text(f'[[services]]\nname = "w"\nport = 0\n{field} = {value}\n')
    with pytest.raises(ConfigError, match="services.0." + field) as e:
        load_config(cfg)
    assert says in str(e.value)


def test_beyond_capacity_the_door_answers_429_and_the_rest_get_through(url):
    target = url["pair"] + "/work"
    before = len(requests.get(url["pair"] + "/_requests", timeout=5).json())
    answers = post_all(target, [{"_simulate": {"delay_s": 0.6}, "n": i} for i in range(5)])
    codes = sorted(r.status_code for r in answers)
    assert codes == [200, 200, 429, 429, 429]
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.text == "Rate exceeded."
    reason = refused.headers["X-Emulator-Reason"]
    assert "no available instance" in reason
    assert "max_instances 1 x concurrency 2 = 2" in reason
    assert "--max-instances=" in reason and "max_concurrent_dispatches" in reason
    # Only what reached an instance is listed, and the slots are free once it answered.
    listed = requests.get(url["pair"] + "/_requests", timeout=5).json()[before:]
    assert [r["status"] for r in listed] == [200, 200]
    assert fits_twice(target)


def test_a_request_cut_off_at_the_timeout_frees_its_slot(url):
    target = url["pair"] + "/work"
    cut = requests.post(target, json={"_simulate": {"delay_s": 3}}, timeout=10)
    assert cut.status_code == 504 and cut.text == "upstream request timeout"
    assert fits_twice(target)


def test_a_caller_that_hangs_up_frees_the_slot_once_the_instance_is_done(url):
    target = url["pair"] + "/work"
    # Gone while the worker works: the instance finishes (0.5 s), then the slot is free.
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(target, json={"_simulate": {"delay_s": 0.5}}, timeout=0.1)
    # Gone in the middle of its body: reading it fails inside the instance.
    host = urlsplit(url["pair"])
    with socket.create_connection((host.hostname, host.port), timeout=5) as sock:
        sock.sendall(b"POST /work HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"half\": ")
    wait_until(lambda: fits_twice(target), timeout=10, interval=0.2,
               what="both slots free after the callers left")


def attempt_responses(logs: LoggingServiceV2Client, task: str) -> list[dict]:
    got = logs.list_log_entries(request={
        "resource_names": [f"projects/{PROJECT}"],
        "filter": f'logName="{TASK_LOG}" AND jsonPayload.task="{task}"'})
    return [dict(e.json_payload)["attemptResponseLog"] for e in got
            if "attemptResponseLog" in e.json_payload]


def test_cloud_tasks_retries_the_429s_of_slow_jobs_until_every_one_succeeds(em, url):
    tasks = em.client()
    channel = grpc.insecure_channel(em.target)
    logs = LoggingServiceV2Client(transport=LoggingServiceV2GrpcTransport(channel=channel))
    names = []
    for i in range(4):
        body = json.dumps({"job": i, "_simulate": {"delay_s": 0.25}}).encode()
        names.append(tasks.create_task(parent=BUSY,
                                       task=http_task(url["single"] + "/job", body)).name)

    def done() -> bool:
        return not list(tasks.list_tasks(parent=BUSY))

    wait_until(done, timeout=30, interval=0.1, what="every task done")
    # Cloud Tasks' record of each task: 429s (RESOURCE_EXHAUSTED), each followed by a retry,
    # then one OK; the 10 dispatches at once met a service taking one.
    outcomes = {n: wait_until(lambda n=n: (r := attempt_responses(logs, n))
                              and r[-1]["status"] == "OK" and r, timeout=10,
                              what=f"the logged attempts of {n}") for n in names}
    refused = [a for attempts in outcomes.values() for a in attempts
               if a["status"] == "RESOURCE_EXHAUSTED"]
    assert refused, outcomes
    assert all("retryTime" in a for a in refused)
    assert all([a["status"] for a in attempts].count("OK") == 1
               for attempts in outcomes.values())
    assert sum(len(a) for a in outcomes.values()) == len(names) + len(refused)
    # The instance ran each job once, one at a time, and retried jobs came back to it.
    ran = [r for r in requests.get(url["single"] + "/_requests", timeout=5).json()
           if r["path"] == "/job"]
    task_ids = {n.rsplit("/", 1)[1] for n in names}
    headers = [dict(r["headers"]) for r in ran]
    assert sorted(h["X-CloudTasks-TaskName"] for h in headers) == sorted(task_ids)
    assert {r["status"] for r in ran} == {200}
    assert any(int(h["X-CloudTasks-TaskRetryCount"]) > 0 for h in headers)

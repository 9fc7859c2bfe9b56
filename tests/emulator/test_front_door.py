"""The front door's rules and the sample worker's knobs, without a process."""

from __future__ import annotations

import asyncio

import pytest

from emulator.front_door import audience_matches, error_page, from_cloud_tasks
from emulator.sample_worker import SampleWorker, SimulationError, knobs

URL = "http://127.0.0.1:8081"


@pytest.mark.parametrize("aud, ok", [
    (URL, True),
    (URL + "/", True),
    (URL + "/process", True),
    ("HTTP://127.0.0.1:8081", True),
    ("myservice", True),                    # a custom audience, as configured
    (URL + "/process?id=1", False),         # Cloud Run refuses a query in the audience
    (URL + "#x", False),
    ("http://127.0.0.1:8082", False),       # another service
    ("http://localhost:8081", False),       # not one of the service's URLs
    ("https://127.0.0.1:8081", False),
    ("myservice/", False),                  # custom audiences match exactly
])
def test_audiences(aud, ok):
    assert audience_matches(aud, URL, ["myservice"]) is ok


def test_only_cloud_tasks_is_internal():
    assert from_cloud_tasks({"User-Agent": "Google-Cloud-Tasks", "X-CloudTasks-QueueName": "q"})
    assert not from_cloud_tasks({"User-Agent": "curl/8"})
    assert not from_cloud_tasks({"User-Agent": "Google-Cloud-Tasks"})


def test_error_pages_escape_the_path():
    assert "<code>/a&lt;b&gt;</code>" in error_page(401, "/a<b>")
    assert "<title>403 Forbidden</title>" in error_page(403, "/")


@pytest.mark.parametrize("received, expected", [
    (None, (0, None, 0.0)),
    ({"job": 1}, (0, None, 0.0)),
    ({"_simulate": {"fail_first": 2}}, (2, 500, 0.0)),
    ({"_simulate": {"fail_first": 1, "status": 503, "delay_s": 0.5}}, (1, 503, 0.5)),
    ({"_simulate": {"status": 429}}, (-1, 429, 0.0)),  # always
])
def test_knobs(received, expected):
    assert knobs(received) == expected


@pytest.mark.parametrize("sim", [
    "fail", {"fail_first": -1}, {"fail_first": True}, {"status": 99}, {"delay_s": "1"},
    {"retries": 1},
])
def test_bad_knobs_say_which(sim):
    with pytest.raises(SimulationError):
        knobs({"_simulate": sim})


def test_attempts_count_by_retry_header_then_key_then_path():
    worker = SampleWorker("brain", ["/process"])
    assert worker.attempt("/process", {"X-CloudTasks-TaskRetryCount": "3"}) == 3
    assert [worker.attempt("/process", {"X-Idempotency-Key": "k"}) for _ in range(2)] == [0, 1]
    assert [worker.attempt("/process", {}) for _ in range(2)] == [0, 1]


def test_worker_answers():
    worker = SampleWorker("brain", ["/process"])
    body = {"_simulate": {"fail_first": 1, "status": 503}}
    run = asyncio.run
    assert run(worker.handle("/x", {}, None))[0] == 404
    assert run(worker.handle("/process", {}, {"_simulate": 3}))[0] == 400
    assert run(worker.handle("/process", {"X-Idempotency-Key": "a"}, body))[0] == 503
    status, answer = run(worker.handle("/process", {"X-Idempotency-Key": "a"}, body))
    assert status == 200
    assert answer == {"ok": True, "service": "brain", "path": "/process", "received": body,
                      "attempt": 1}

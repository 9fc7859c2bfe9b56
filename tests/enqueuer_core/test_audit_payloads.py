"""What an enqueue's audit line keeps of the job: its size and hash by default, the payload
itself with ``AUDIT_PAYLOADS=full`` (what replaying a dead job reads back), and ``replay_of``,
the task a replay links to. Through the library and the API, on the real emulator."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from google.cloud import tasks_v2

from app import create_app
from enqueuer_core.access import Acting
from enqueuer_core.access.audit import MAX_CONTENT_BYTES
from enqueuer_core.build import EnqueueRequest, body_of
from enqueuer_core.config import load_settings
from enqueuer_core.enqueue import Enqueuer
from enqueuer_core.errors import ConfigError, Forbidden
from tests.emulator.harness import RunningEmulator
from tests.serving import serving
from tests.test_app import make_queues, operator_token, settings_for

OPERATOR = "user:operator@local-project.test"
PAYLOAD = {"n": 1, "text": "ünïcode ✓", "nested": {"ids": ["a", "b"], "ok": True}}
OLD_TASK = "projects/test-project/locations/us-central1/queues/q/tasks/dead-one"


def enqueue_lines(out: str) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    return [x for x in lines if x.get("audit", {}).get("action") == "enqueue"]


@pytest.fixture(scope="module")
def queues(emulator: RunningEmulator) -> dict[str, str]:
    """Paused: what is enqueued here stays put, nothing reaches a worker."""
    return make_queues(emulator, f"audit-{uuid.uuid4().hex[:8]}", paused=True)


def enqueuer(emulator: RunningEmulator, queues: dict[str, str], **settings: object) -> Enqueuer:
    return Enqueuer(settings_for(emulator, "http://127.0.0.1:9", queues, **settings))


def acting(e: Enqueuer) -> Acting:
    return Acting(OPERATOR, e.access, "dashboard")


# -- the setting ------------------------------------------------------------------------------


def test_hash_is_the_default_and_anything_but_full_or_hash_stops_the_start(monkeypatch):
    monkeypatch.delenv("AUDIT_PAYLOADS", raising=False)
    assert load_settings(cloud_tasks_emulator_host="127.0.0.1:1").audit_payloads == "hash"
    monkeypatch.setenv("AUDIT_PAYLOADS", "full")
    assert load_settings(cloud_tasks_emulator_host="127.0.0.1:1").audit_payloads == "full"
    for wrong in ("FULL", "none", ""):
        monkeypatch.setenv("AUDIT_PAYLOADS", wrong)
        with pytest.raises(ConfigError, match=rf"AUDIT_PAYLOADS={wrong!r} is not a choice: "
                                              r"set hash .* or full"):
            load_settings(cloud_tasks_emulator_host="127.0.0.1:1")


# -- through the library ----------------------------------------------------------------------


def test_with_hash_the_line_has_size_and_hash_and_never_the_content(emulator, queues, capfd):
    e = enqueuer(emulator, queues)
    result = e.enqueue(EnqueueRequest(service="testimonios", payload=PAYLOAD), acting(e))
    out = capfd.readouterr().out
    (line,) = enqueue_lines(out)
    body = body_of(PAYLOAD)
    assert line["audit"]["payload"] == {"bytes": len(body),
                                        "sha256": hashlib.sha256(body).hexdigest()}
    assert line["audit"]["task"] == result.task
    assert "ünïcode" not in out and "replay_of" not in line["audit"]


def test_with_full_the_line_carries_the_payload_as_json(emulator, queues, capfd):
    e = enqueuer(emulator, queues, audit_payloads="full")
    result = e.enqueue(EnqueueRequest(service="testimonios", payload=PAYLOAD), acting(e))
    (line,) = enqueue_lines(capfd.readouterr().out)
    payload = line["audit"]["payload"]
    body = body_of(PAYLOAD)
    assert payload == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                       "content": PAYLOAD}
    # The content is what the worker will receive, byte for byte.
    task = e.client.get_task(request=tasks_v2.GetTaskRequest(
        name=result.task, response_view=tasks_v2.Task.View.FULL))  # FULL: the body included
    assert task.http_request.body == body_of(payload["content"])


def test_a_payload_too_big_for_a_log_entry_keeps_its_hash_and_says_why(emulator, queues,
                                                                      capfd):
    e = enqueuer(emulator, queues, audit_payloads="full")
    big = {"blob": "x" * (MAX_CONTENT_BYTES + 1)}
    e.enqueue(EnqueueRequest(service="testimonios", payload=big), acting(e))
    (line,) = enqueue_lines(capfd.readouterr().out)
    payload = line["audit"]["payload"]
    assert "content" not in payload and payload["bytes"] == len(body_of(big))
    assert "Cloud Logging refuses entries over 256 KB" in payload["content_omitted"]


def test_a_replay_names_the_task_it_replays_in_both_enqueues(emulator, queues, capfd):
    e = enqueuer(emulator, queues, audit_payloads="full")
    e.enqueue(EnqueueRequest(service="testimonios", payload=PAYLOAD), acting(e),
              replay_of=OLD_TASK)
    asyncio.run(e.enqueue_async(EnqueueRequest(service="testimonios", payload=PAYLOAD),
                                Acting(OPERATOR, e.access, "api"), replay_of=OLD_TASK))
    lines = enqueue_lines(capfd.readouterr().out)
    assert [(x["audit"]["via"], x["audit"]["replay_of"], x["audit"]["outcome"])
            for x in lines] == [("dashboard", OLD_TASK, "ok"), ("api", OLD_TASK, "ok")]


def test_a_refused_replay_is_on_record_with_what_it_replays_and_no_payload(emulator, queues,
                                                                          capfd):
    e = enqueuer(emulator, queues, audit_payloads="full")
    with pytest.raises(Forbidden, match="is a viewer"):
        e.enqueue(EnqueueRequest(service="testimonios", payload=PAYLOAD),
                  Acting("user:viewer@local-project.test", e.access, "dashboard"),
                  replay_of=OLD_TASK)
    (line,) = enqueue_lines(capfd.readouterr().out)
    assert line["audit"]["outcome"] == "refused" and line["audit"]["replay_of"] == OLD_TASK
    assert "payload" not in line["audit"]  # nothing was built: nothing of the job is kept


# -- through the API --------------------------------------------------------------------------


@pytest.fixture
def full_api(emulator: RunningEmulator, queues: dict[str, str],
             monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, dict[str, str]]]:
    """The API started with AUDIT_PAYLOADS=full in its environment."""
    monkeypatch.setenv("AUDIT_PAYLOADS", "full")
    settings = settings_for(emulator, "http://127.0.0.1:9", queues)
    with serving(create_app(settings)) as url:
        yield url, operator_token(emulator, settings)


def test_the_api_with_full_puts_the_payload_in_its_line(full_api, capsys):
    url, headers = full_api
    r = httpx.post(url + "/enqueue", json={"service": "testimonios", "payload": PAYLOAD},
                   headers=headers, timeout=20)
    assert r.status_code == 200, r.text
    (line,) = enqueue_lines(capsys.readouterr().out)
    assert line["audit"]["via"] == "api" and line["audit"]["task"] == r.json()["task"]
    assert line["audit"]["payload"]["content"] == PAYLOAD

"""The HTTP API as a client program uses it: a real uvicorn server, the real emulator, a
real worker (the receiver), the real ``curl``. Nothing is patched. Callers send an operator's
ID token from the emulator's issuer (who may do what: ``test_api_auth.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import google.auth.transport.requests
import httpx
import pytest
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2
from google.oauth2 import id_token

from app import MAX_BODY_BYTES, create_app
from enqueuer_core.build import MAX_SCHEDULE_S, MAX_TASK_BYTES, EnqueueRequest
from enqueuer_core.config import Settings, load_settings
from enqueuer_core.enqueue import Enqueuer
from enqueuer_core.workers import BRAIN_FIELDS, BRAIN_SCHEMA
from tests.emulator.harness import (
    PARENT,
    READY,
    ROOT,
    RunningEmulator,
    fast_retry,
    start_emulator,
    wait_until,
)
from tests.receiver import Received, Receiver
from tests.serving import serving
from tests.tokens import bearer

PROJECT, REGION = "test-project", "us-central1"
CALLER_SA = "caller@test-project.iam.gserviceaccount.com"
PATHS = {"brain": "/process", "testimonios": "/generate-testimony",
         "transcripciones": "/api/transcribe"}
SHORT = {"brain": "BRAIN", "testimonios": "TESTI", "transcripciones": "TRANS"}
ANSWER_KEYS = ["ok", "task", "service", "queue", "deadline_s", "idempotency_key"]
OPERATOR = "operator@local-project.test"  # an operator of the local stack's users
BRAIN_PAYLOAD = {"system_instructions_doc_id": "doc-sys", "base_prompt_doc_id": "doc-prompt",
                 "input_doc_id": "doc-in", "output_doc_id": "doc-out"}
# The README's example, read from the README itself: only the address is replaced.
README_CURL = next(
    line for line in (Path(__file__).resolve().parents[1] / "README.md").read_text().splitlines()
    if line.startswith("curl ") and "/enqueue" in line
)


@dataclass
class Api:
    url: str
    http: httpx.Client
    settings: Settings
    queues: dict[str, str]  # service -> full queue name
    tasks: tasks_v2.CloudTasksClient

    def enqueue(self, service: str, payload: dict, **fields: object) -> httpx.Response:
        return self.http.post("/enqueue", json={"service": service, "payload": payload,
                                                **fields})

    def queued(self) -> dict[str, list[str]]:
        return {s: [t.name for t in self.tasks.list_tasks(parent=q)]
                for s, q in self.queues.items()}


def make_queues(emulator: RunningEmulator, prefix: str, paused: bool) -> dict[str, str]:
    client = emulator.client()
    queues = {}
    for service in PATHS:
        name = f"{PARENT}/queues/{prefix}-{service}"
        client.create_queue(parent=PARENT,
                            queue=tasks_v2.Queue(name=name, retry_config=fast_retry()))
        if paused:
            client.pause_queue(name=name)
        queues[service] = name
    return queues


def settings_for(emulator: RunningEmulator, worker_url: str, queues: dict[str, str],
                 **more: object) -> Settings:
    fields: dict[str, object] = {"cloud_tasks_emulator_host": emulator.target,
                                 "emulator_http_url": emulator.http_url, "project_id": PROJECT,
                                 "tasks_region": REGION, "caller_sa": CALLER_SA, **more}
    for service, short in SHORT.items():
        fields[f"url_{short.lower()}"] = worker_url + PATHS[service]
        fields[f"queue_{short.lower()}"] = queues[service].rsplit("/", 1)[1]
    return load_settings(**fields)


def operator_token(emulator: RunningEmulator, settings: Settings) -> dict[str, str]:
    assert settings.api_audience
    return bearer(emulator.http_url, OPERATOR, settings.api_audience)


@contextmanager
def running_api(emulator: RunningEmulator, worker_url: str, paused: bool) -> Iterator[Api]:
    queues = make_queues(emulator, f"app-{uuid.uuid4().hex[:8]}", paused)
    settings = settings_for(emulator, worker_url, queues)
    with serving(create_app(settings)) as url, httpx.Client(
            base_url=url, timeout=20, headers=operator_token(emulator, settings)) as http:
        yield Api(url, http, settings, queues, emulator.client())


@pytest.fixture(scope="module")
def api(emulator: RunningEmulator, worker: Receiver) -> Iterator[Api]:
    """The API over running queues, whose tasks reach ``worker``."""
    with running_api(emulator, worker.url, paused=False) as a:
        yield a


@pytest.fixture(scope="module")
def idle_api(emulator: RunningEmulator) -> Iterator[Api]:
    """The API over paused queues: whatever it enqueued would stay there to be seen."""
    with running_api(emulator, "http://127.0.0.1:9", paused=True) as a:
        yield a


def key_of(r: Received) -> str | None:
    # HTTP header values travel as bytes: the emulator sends the key in UTF-8, and the
    # receiver (http.server) decodes every header as latin-1; undo that to compare.
    value = r.header("X-Idempotency-Key")
    return value.encode("latin-1").decode("utf-8") if value is not None else None


def deliveries(worker: Receiver, service: str, key: str, n: int = 1,
               timeout: float = 10) -> list[Received]:
    """Wait until ``worker`` got ``n`` requests for ``key`` at ``service``'s path."""
    def mine(r: Received) -> bool:
        return r.path == PATHS[service] and key_of(r) == key

    got = worker.wait_for(lambda rs: sum(map(mine, rs)) >= n, timeout)
    return [r for r in got if mine(r)]


def new_key(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


# -- the contract as the README shows it ---------------------------------------------------


def test_readme_curl_example_enqueues_a_signed_job(api, worker, emulator, tmp_path):
    command = README_CURL.replace("http://localhost:8080", api.url)
    # Only the address may differ from the README; the status code comes from a curlrc
    # that curl reads by itself, so the command stays the README's. Its token comes from
    # `enqueuer --local token`, pointed at this test's emulator (and at no stack's profile).
    (tmp_path / ".curlrc").write_text('write-out = "\\n%{http_code}"\n')
    local = {"CLOUD_TASKS_EMULATOR_HOST": emulator.target, "EMULATOR_HTTP_URL": emulator.http_url,
             "API_AUDIENCE": api.settings.api_audience, "PROJECT_ID": PROJECT,
             "TASKS_REGION": REGION, "CALLER_SA": CALLER_SA, "ENQUEUER_STATE": str(tmp_path)}
    out = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30,
                         cwd=ROOT, env={**os.environ, "CURL_HOME": str(tmp_path), **local},
                         check=True)
    body, status = out.stdout.rsplit("\n", 1)
    assert status == "200", out.stdout
    answer = json.loads(body)
    assert list(answer) == ANSWER_KEYS
    assert answer["ok"] is True and answer["service"] == "brain"
    assert answer["queue"] == api.queues["brain"].rsplit("/", 1)[1]
    assert answer["deadline_s"] == 700
    assert answer["task"].startswith(api.queues["brain"] + "/tasks/")
    key = answer["idempotency_key"]
    uuid.UUID(key)  # made for the caller, who sent none

    (got,) = deliveries(worker, "brain", key)
    assert got.method == "POST"
    assert got.header("Content-Type") == "application/json"
    assert json.loads(got.body) == BRAIN_PAYLOAD
    auth = got.header("Authorization") or ""
    assert auth.startswith("Bearer ")
    claims = id_token.verify_token(
        auth.removeprefix("Bearer "), google.auth.transport.requests.Request(),
        audience=worker.url, certs_url=emulator.http_url + "/oauth2/v1/certs",
    )
    assert claims["email"] == CALLER_SA and claims["aud"] == api.settings.aud_brain


def test_schedule_delays_the_dispatch(api, worker):
    key = new_key("later")
    sent = time.time()
    r = api.enqueue("testimonios", {"job": "later"}, schedule_in_s=2, idempotency_key=key)
    answered = time.time()
    assert r.status_code == 200, r.text
    assert answered - sent < 2
    (got,) = deliveries(worker, "testimonios", key, timeout=10)
    # Two seconds from when the API took the request, which the answer cannot precede.
    assert got.at >= sent + 2.0


def test_a_repeated_key_is_a_duplicate_while_queued_and_after_it_ran(api, worker):
    key = new_key("once")
    first = api.enqueue("testimonios", {"n": 1}, idempotency_key=key)
    assert first.status_code == 200, first.text
    task = first.json()["task"]

    again = api.enqueue("testimonios", {"n": 2}, idempotency_key=key)
    assert again.status_code == 409
    assert again.json()["ok"] is False
    assert again.json()["error"]["code"] == "duplicate"
    assert task in again.json()["error"]["message"]

    deliveries(worker, "testimonios", key)

    def gone() -> bool:
        try:
            api.tasks.get_task(name=task)
        except gexc.NotFound:
            return True
        return False

    wait_until(gone, timeout=10, what="the task completed and was removed")
    later = api.enqueue("testimonios", {"n": 3}, idempotency_key=key)
    assert later.status_code == 409
    error = later.json()["error"]
    assert error["code"] == "duplicate"
    assert task in error["message"] and "existed recently" in error["message"]


def test_fifty_concurrent_requests_with_one_key_enqueue_one_job(api, worker):
    key = new_key("race")
    body = {"service": "testimonios", "payload": {"race": True}, "idempotency_key": key}
    start = threading.Barrier(50)

    def one(_: int) -> httpx.Response:
        start.wait(10)
        return api.http.post("/enqueue", json=body)

    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(one, range(50)))
    assert Counter(a.status_code for a in answers) == {200: 1, 409: 49}
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 409} == {"duplicate"}

    deliveries(worker, "testimonios", key)
    # A job enqueued afterwards on the same queue, once delivered, leaves no room for a
    # second delivery of the key to be on its way.
    marker = new_key("marker")
    assert api.enqueue("testimonios", {"marker": True}, idempotency_key=marker).status_code == 200
    deliveries(worker, "testimonios", marker)
    assert len(deliveries(worker, "testimonios", key)) == 1


def test_a_key_with_spaces_and_unicode_works(api, worker):
    key = "pedido 42 / ñandú ✓"
    r = api.enqueue("transcripciones", {"audio": "gs://bucket/a.ogg"}, idempotency_key=key)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["idempotency_key"] == key
    task_id = answer["task"].rsplit("/", 1)[1]
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,500}", task_id)
    assert task_id.startswith(hashlib.sha256(key.encode()).hexdigest()[:32] + "-")
    (got,) = deliveries(worker, "transcripciones", key)  # compares the header as UTF-8
    assert json.loads(got.body) == {"audio": "gs://bucket/a.ogg"}


# -- bad input: a clear 4xx, and nothing enqueued ------------------------------------------

FULL_BRAIN_BUT_OUTPUT = {k: "doc" for k in BRAIN_FIELDS if k != "output_doc_id"}
JSON = {"Content-Type": "application/json"}
BAD_INPUT = {
    "unknown service": ({"json": {"service": "brian", "payload": {}}}, 422,
                        "unknown_service", ["brian", "brain", "testimonios", "transcripciones"]),
    "bad JSON": ({"content": b'{"service": "brain", "payload": ', "headers": JSON}, 422,
                 "invalid_request", ["not valid JSON"]),
    "body not an object": ({"json": ["brain", {}]}, 422, "invalid_request",
                           ["JSON object", "not an array"]),
    "payload not an object": ({"json": {"service": "testimonios", "payload": "hello"}}, 422,
                              "invalid_request", ["payload", "JSON object", "not a string"]),
    "missing payload": ({"json": {"service": "testimonios"}}, 422, "invalid_request",
                        ["payload is required"]),
    "brain payload missing a field": (
        {"json": {"service": "brain", "payload": FULL_BRAIN_BUT_OUTPUT}}, 422,
        "invalid_request", ["'output_doc_id' is a required property"]),
    "payload over 1 MiB": (
        {"json": {"service": "testimonios", "payload": {"blob": "x" * (1 << 20)}}}, 413,
        "payload_too_large", [f"{MAX_TASK_BYTES:,}"]),
    "body far over the limit": (
        {"content": b"{" + b" " * MAX_BODY_BYTES + b"}", "headers": JSON}, 413,
        "payload_too_large", [f"{MAX_BODY_BYTES:,}"]),
    "negative schedule": ({"json": {"service": "testimonios", "payload": {},
                                    "schedule_in_s": -1}}, 422, "invalid_request",
                          ["schedule_in_s", "from 0"]),
    "schedule beyond 30 days": ({"json": {"service": "testimonios", "payload": {},
                                          "schedule_in_s": MAX_SCHEDULE_S + 1}}, 422,
                                "invalid_request", ["schedule_in_s", "30 days"]),
    "bad key": ({"json": {"service": "testimonios", "payload": {},
                          "idempotency_key": "two\nlines"}}, 422, "invalid_request",
                ["idempotency_key", "control characters"]),
    # JSON is UTF-8 (RFC 8259): anything else is bad JSON, said like any other.
    "body not UTF-8": ({"content": b'{"service": "testimonios", "payload": {"n": "\xf1"}}',
                        "headers": JSON}, 422, "invalid_request",
                       ["not valid JSON", "as UTF-8: byte 0xf1 is not at character 45"]),
    "body in UTF-16": ({"content": '{"service": "testimonios", "payload": {}}'.encode("utf-16"),
                        "headers": JSON}, 422, "invalid_request",
                       ["not valid JSON", "as UTF-8: byte 0xff is not at character 0"]),
    # What Python's json takes but JSON has not: the worker would get something not JSON.
    "NaN in the payload": ({"content": b'{"service": "testimonios", "payload": {"x": NaN}}',
                            "headers": JSON}, 422, "invalid_request",
                           ["not valid JSON", "NaN is not a JSON value"]),
    "a number too large": ({"content": b'{"service": "testimonios", "payload": {"x": 1e999}}',
                            "headers": JSON}, 422, "invalid_request",
                           ["not valid JSON", "1e999 is too large"]),
    "half a surrogate pair": ({"content": b'{"service": "testimonios", "payload": {}, '
                               b'"idempotency_key": "k\\ud800"}', "headers": JSON}, 422,
                              "invalid_request", ["not valid JSON", "\\ud800 is half"]),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_refused_and_enqueues_nothing(idle_api, case):
    request, status, code, words = BAD_INPUT[case]
    r = idle_api.http.post("/enqueue", **request)
    assert r.status_code == status, r.text
    assert r.json() == {"ok": False, "error": {"code": code, "message": r.json()["error"]
                                               ["message"]}}
    message = r.json()["error"]["message"]
    for word in words:
        assert word in message
    if case == "brain payload missing a field":
        assert "input_doc_id" not in message  # only what is wrong
    assert idle_api.queued() == {s: [] for s in PATHS}


def test_an_unexpected_failure_is_a_502_with_its_traceback_logged(idle_api, caplog):
    class Broken(Enqueuer):
        async def enqueue_async(self, request, acting, now=None):
            raise RuntimeError("boom")

    with serving(create_app(enqueuer=Broken(idle_api.settings))) as url:
        r = httpx.post(url + "/enqueue", json={"service": "testimonios", "payload": {}},
                       headers=idle_api.http.headers)
    assert r.status_code == 502
    assert r.json()["ok"] is False and r.json()["error"]["code"] == "internal"
    assert "RuntimeError: boom" in caplog.text


# -- Cloud Tasks down, and back --------------------------------------------------------------

OUTAGE_CONFIG = "".join(f'[[queues]]\nname = "{q}"\npaused = true\n\n' for q in
                        ("queue-brain", "queue-testimonios", "queue-transcripciones"))


def restart_on_same_port(before: RunningEmulator, tmp: Path) -> RunningEmulator:
    """The emulator again, on ``before``'s ports and database (the harness picks port 0)."""
    cfg = tmp / "again.toml"
    cfg.write_text(f'project = "{PROJECT}"\nlocation = "{REGION}"\n' + OUTAGE_CONFIG)
    http_port = before.http_url.rsplit(":", 1)[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--port", str(before.port), "--http-port", http_port,
         "--db", before.db, "--config", str(cfg)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    stderr: list[str] = []
    threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True).start()  # type: ignore[arg-type]
    line = proc.stdout.readline()  # type: ignore[union-attr]
    m = READY.search(line)
    if not m:
        proc.kill()
        proc.wait(5)
        raise RuntimeError(f"emulator did not restart: {line} {''.join(stderr)}")
    return RunningEmulator(proc, int(m["port"]), m["http"], before.db, stderr)


def test_cloud_tasks_down_is_503_and_the_api_recovers_by_itself(tmp_path):
    first = start_emulator(tmp_path, OUTAGE_CONFIG, db=str(tmp_path / "s.db"))
    started = [first]
    try:
        settings = load_settings(cloud_tasks_emulator_host=first.target, project_id=PROJECT,
                                 tasks_region=REGION, caller_sa=CALLER_SA,
                                 emulator_http_url=first.http_url)
        with serving(create_app(settings)) as url, httpx.Client(
                base_url=url, headers=operator_token(first, settings)) as http:
            job = {"service": "testimonios", "payload": {}}
            assert http.post("/enqueue", json=job).status_code == 200
            assert http.get("/readyz").json() == {"ok": True}

            assert first.stop() == 0
            down = http.post("/enqueue", json=job)
            assert down.status_code == 503, down.text
            assert down.json()["error"]["code"] == "unavailable"
            assert "retry" in down.json()["error"]["message"]
            ready = http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["ok"] is False
            assert ready.json()["error"]["code"] == "unavailable"
            assert http.get("/healthz").json() == {"ok": True}

            started.append(restart_on_same_port(first, tmp_path))
            wait_until(lambda: http.get("/readyz").status_code == 200, timeout=15,
                       interval=0.1, what="/readyz is 200 again")
            back = http.post("/enqueue", json=job)
            assert back.status_code == 200, back.text
    finally:
        for em in started:
            em.stop()


# -- read-outs ------------------------------------------------------------------------------


def test_workers_healthz_and_openapi(api, worker):
    workers = {w["name"]: w for w in api.http.get("/workers").json()["workers"]}
    assert list(workers) == ["brain", "testimonios", "transcripciones"]
    for service, w in workers.items():
        assert w["queue"] == api.queues[service].rsplit("/", 1)[1]
        assert w["url"] == worker.url + PATHS[service]
        assert w["audience"] == worker.url
    assert [w["deadline_s"] for w in workers.values()] == [700, 390, 880]
    assert workers["brain"]["payload_schema"] == BRAIN_SCHEMA

    assert api.http.get("/healthz").json() == {"ok": True}
    assert api.http.get("/readyz").json() == {"ok": True}

    doc = api.http.get("/openapi.json").json()
    assert doc["info"]["title"] == "Enqueuer"
    example = EnqueueRequest.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]
    assert doc["components"]["schemas"]["EnqueueRequest"]["examples"] == [example]
    responses = doc["paths"]["/enqueue"]["post"]["responses"]
    assert set(responses) == {"200", "401", "403", "409", "413", "422", "502", "503"}
    assert list(responses["200"]["content"]["application/json"]["example"]) == ANSWER_KEYS
    for status in ("401", "403", "409", "413", "422", "502", "503"):
        for example in responses[status]["content"]["application/json"]["examples"].values():
            value = example["value"]
            assert value["ok"] is False and set(value["error"]) == {"code", "message"}

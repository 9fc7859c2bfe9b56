"""``Enqueuer.enqueue`` against a real emulator, with a real receiver as the worker."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import logging

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from google.auth.transport.requests import Request
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcAsyncIOTransport
from google.oauth2 import id_token

from enqueuer_core.build import EnqueueRequest, body_of, build_task
from enqueuer_core.clients import principal, tasks_async
from enqueuer_core.config import load_settings
from enqueuer_core.enqueue import Enqueuer
from enqueuer_core.errors import (
    DuplicateTask,
    EnqueuerError,
    PayloadTooLarge,
    QueueNotFound,
    Unavailable,
    UnknownService,
)
from enqueuer_core.workers import load_registry
from tests.acting import as_admin
from tests.emulator.harness import PARENT, PROJECT

CALLER = f"caller@{PROJECT}.iam.gserviceaccount.com"
BRAIN = {"system_instructions_doc_id": "s", "base_prompt_doc_id": "b", "input_doc_id": "i",
         "output_doc_id": "o"}
_ids = itertools.count()


@pytest.fixture
def enqueuer(emulator, receiver):
    n = next(_ids)
    queues = {f"queue_{s}": f"core-{s}-{n}" for s in ("brain", "testi", "trans")}
    client = emulator.client()
    for q in queues.values():
        client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=f"{PARENT}/queues/{q}"))
    settings = load_settings(
        cloud_tasks_emulator_host=emulator.target, project_id=PROJECT,
        tasks_region="us-central1", caller_sa=CALLER, url_brain=receiver.url + "/process",
        url_testi=receiver.url + "/generate-testimony",
        url_trans=receiver.url + "/api/transcribe", **queues,
    )
    return Enqueuer(settings)


def test_enqueue_reaches_the_worker_signed(emulator, enqueuer, receiver):
    result = enqueuer.enqueue(EnqueueRequest(service="brain", payload=BRAIN,
                                             idempotency_key="job 1/ñ"), as_admin())
    assert result.queue == enqueuer.settings.queue_brain and result.deadline_s == 700
    assert result.task.startswith(enqueuer.settings.queue_path(result.queue) + "/tasks/")
    (got,) = receiver.at("/process")
    assert got.method == "POST" and json.loads(got.body) == BRAIN
    assert got.header("Content-Type") == "application/json"
    # Header bytes are UTF-8; the test receiver reads them as latin-1.
    assert got.header("X-Idempotency-Key").encode("latin-1").decode() == "job 1/ñ"
    token = got.header("Authorization").removeprefix("Bearer ")
    claims = id_token.verify_token(token, Request(), audience=receiver.url,
                                   certs_url=f"{emulator.http_url}/oauth2/v1/certs")
    assert claims["email"] == CALLER


def test_same_key_is_a_duplicate_live_and_after_it_ran(enqueuer, receiver):
    req = EnqueueRequest(service="testimonios", payload={"a": 1}, idempotency_key="k")
    first = enqueuer.enqueue(req, as_admin())
    with pytest.raises(DuplicateTask, match=r"already queued|existed recently") as e:
        enqueuer.enqueue(req, as_admin())
    assert first.task in e.value.message
    receiver.at("/generate-testimony")
    with pytest.raises(DuplicateTask):
        enqueuer.enqueue(req, as_admin())


def test_without_a_key_a_uuid_names_the_task(enqueuer, receiver):
    a = enqueuer.enqueue(EnqueueRequest(service="transcripciones", payload={}), as_admin())
    b = enqueuer.enqueue(EnqueueRequest(service="transcripciones", payload={}), as_admin())
    assert a.idempotency_key != b.idempotency_key and len(a.idempotency_key) == 36
    got = receiver.at("/api/transcribe", 2)
    assert {r.header("X-Idempotency-Key") for r in got} == {a.idempotency_key,
                                                             b.idempotency_key}


def test_schedule_in_s_delays_the_dispatch(enqueuer, receiver):
    before = dt.datetime.now(dt.UTC)
    result = enqueuer.enqueue(EnqueueRequest(service="testimonios", payload={},
                                             schedule_in_s=1.5), as_admin())
    assert result.schedule_time >= before + dt.timedelta(seconds=1.5)
    (got,) = receiver.at("/generate-testimony", timeout=10)
    assert got.at >= result.schedule_time.timestamp() - 0.01


def test_unknown_service_and_oversized_payload_call_nothing(enqueuer, emulator):
    with pytest.raises(UnknownService):
        enqueuer.enqueue(EnqueueRequest(service="nope", payload={}), as_admin())
    with pytest.raises(PayloadTooLarge, match="1,048,569"):
        enqueuer.enqueue(EnqueueRequest(service="testimonios", payload={"x": "a" * 1_100_000}),
                         as_admin())
    queue = enqueuer.settings.queue_path(enqueuer.settings.queue_testi)
    assert list(emulator.client().list_tasks(parent=queue)) == []


def test_missing_queue_says_how_to_create_it(emulator, receiver):
    settings = load_settings(cloud_tasks_emulator_host=emulator.target, project_id=PROJECT,
                             queue_brain="never-made")
    with pytest.raises(QueueNotFound, match="gcloud tasks queues create never-made"):
        Enqueuer(settings).enqueue(EnqueueRequest(service="brain", payload=BRAIN), as_admin())


def test_unreachable_cloud_tasks_is_unavailable():
    settings = load_settings(cloud_tasks_emulator_host="127.0.0.1:9")
    enqueuer = Enqueuer(settings)
    with pytest.raises(Unavailable, match="Nothing was enqueued"):
        enqueuer.enqueue(EnqueueRequest(service="testimonios", payload={}), as_admin())
    with pytest.raises(Unavailable):
        enqueuer.check_reachable()


def _refusal(enqueuer: Enqueuer, request: EnqueueRequest, asyncio_: bool) -> EnqueuerError:
    with pytest.raises(EnqueuerError) as e:
        if asyncio_:
            asyncio.run(enqueuer.enqueue_async(request, as_admin()))
        else:
            enqueuer.enqueue(request, as_admin())
    return e.value


@pytest.mark.parametrize("case", ["duplicate", "missing queue", "unreachable"])
def test_both_paths_translate_googles_refusals_alike(emulator, enqueuer, case):
    """Both send raw protobuf messages on the client's own stub (``clients.CreateTask``):
    Google's refusals must still come back as the same errors, saying the same."""
    # An hour ahead: the first task stays queued while the others are refused.
    request = EnqueueRequest(service="brain", payload=BRAIN, idempotency_key=f"refused-{case}",
                             schedule_in_s=3600)
    if case == "duplicate":
        enqueuer.enqueue(request, as_admin())
        cls, words = DuplicateTask, "already queued"
    elif case == "missing queue":
        enqueuer = Enqueuer(load_settings(cloud_tasks_emulator_host=emulator.target,
                                          project_id=PROJECT, queue_brain="never-made"))
        cls, words = QueueNotFound, "gcloud tasks queues create never-made"
    else:
        enqueuer = Enqueuer(load_settings(cloud_tasks_emulator_host="127.0.0.1:9"))
        cls, words = Unavailable, "Nothing was enqueued"
    blocking = _refusal(enqueuer, request, asyncio_=False)
    on_asyncio = _refusal(enqueuer, request, asyncio_=True)
    assert type(blocking) is type(on_asyncio) is cls
    assert words in on_asyncio.message
    assert on_asyncio.message == blocking.message


def test_the_created_task_is_the_built_one(emulator, enqueuer):
    """What reaches Cloud Tasks is the builder's task, field for field, on both paths."""
    now = dt.datetime.now(dt.UTC)
    client = emulator.client()
    for name, run in (("blocking", enqueuer.enqueue), ("asyncio", lambda *a, **k: asyncio.run(
            enqueuer.enqueue_async(*a, **k)))):
        request = EnqueueRequest(service="testimonios", payload={"ñ": [1, 2.5]},
                                 idempotency_key=f"same-{name}", schedule_in_s=3600)
        result = run(request, as_admin(), now=now)
        built = build_task(request, enqueuer.registry.get("testimonios"), enqueuer.settings,
                           result.idempotency_key, now)
        stored = client.get_task(request={"name": result.task,
                                          "response_view": tasks_v2.Task.View.FULL})
        assert stored.name == built.task.name == result.task
        sent, made = stored.http_request, built.task.http_request
        assert (sent.url, sent.http_method, sent.body, sent.oidc_token) == (
            made.url, made.http_method, made.body, made.oidc_token)
        # Cloud Tasks adds its own headers (User-Agent); the built ones are there as built.
        assert dict(made.headers).items() <= dict(sent.headers).items()
        assert stored.schedule_time == built.task.schedule_time
        assert stored.dispatch_deadline == built.task.dispatch_deadline


def test_build_task_is_pure_and_complete():
    settings = load_settings(cloud_tasks_emulator_host="127.0.0.1:9")
    worker = load_registry(settings).get("brain")
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    built = build_task(EnqueueRequest(service="brain", payload=BRAIN, schedule_in_s=60),
                       worker, settings, "key-1", now)
    t = built.task
    assert built.queue == "projects/local-project/locations/us-central1/queues/queue-brain"
    assert t.name.startswith(built.queue + "/tasks/") and t.name.endswith("-key-1")
    assert t.http_request.url == "http://127.0.0.1:8081/process"
    assert t.http_request.http_method == tasks_v2.HttpMethod.POST
    assert dict(t.http_request.headers) == {"Content-Type": "application/json",
                                            "X-Idempotency-Key": "key-1"}
    assert json.loads(t.http_request.body) == BRAIN
    assert t.http_request.oidc_token.service_account_email == settings.caller_sa
    assert t.http_request.oidc_token.audience == "http://127.0.0.1:8081"
    assert t.dispatch_deadline == dt.timedelta(seconds=700)
    assert t.schedule_time == now + dt.timedelta(seconds=60)
    assert build_task(EnqueueRequest(service="brain", payload=BRAIN), worker, settings,
                      "key-1", now).task == build_task(
        EnqueueRequest(service="brain", payload=BRAIN), worker, settings, "key-1", now).task


def test_with_the_clients_debug_logging_on_a_create_is_logged_as_other_calls(enqueuer, caplog):
    """CreateTask skips the asyncio client's logging interceptor only while it has nothing to
    log (``clients.tasks_async``): turned on, the create is in the client's debug log."""
    logger = CloudTasksGrpcAsyncIOTransport.__module__
    caplog.set_level(logging.DEBUG, logger=logger)
    asyncio.run(enqueuer.enqueue_async(EnqueueRequest(service="testimonios", payload={}),
                                       as_admin()))
    assert any("CreateTask" in r.getMessage() for r in caplog.records if r.name == logger)


def test_on_google_the_asyncio_client_is_built_from_application_default_credentials(
        tmp_path, monkeypatch):
    """The asyncio client and its CreateTask channel come from the same resolved endpoint
    and credentials; errors name the account. No call is made (no Google here)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    account = "enqueuer@acme.iam.gserviceaccount.com"
    path = tmp_path / "key.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "acme", "private_key_id": "k1",
        "private_key": key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8,
                                         NoEncryption()).decode(),
        "client_email": account, "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    monkeypatch.delenv("CLOUD_TASKS_EMULATOR_HOST", raising=False)
    settings = load_settings(project_id="acme", tasks_region="europe-west1",
                             caller_sa="caller@acme.iam.gserviceaccount.com",
                             **{f"url_{s}": "https://w.example.com/x"
                                for s in ("brain", "testi", "trans")})
    assert not settings.on_emulator

    async def build() -> tuple[str, str | None]:
        client, create = tasks_async(settings)
        assert callable(create)
        return client.api_endpoint, principal(client)

    assert asyncio.run(build()) == ("cloudtasks.googleapis.com", account)


def test_the_body_is_compact_utf8_json_as_ever():
    """The worker gets these bytes, and the audit line keeps their hash: the same as ever."""
    payload = {"ñ": "snow ☃ and 😀", "n": [1, 2.5, 1e300, -0.0, 10**30, None, True],
               "nested": {"a": {"b": []}}, "quote": '"\\/\n'}
    assert body_of(payload) == json.dumps(payload, ensure_ascii=False,
                                          separators=(",", ":")).encode("utf-8")


@pytest.mark.parametrize("schedule", [-1, 30 * 24 * 3600 + 1])
def test_schedule_outside_0_to_30_days_is_refused(schedule):
    with pytest.raises(ValueError, match="schedule_in_s"):
        EnqueueRequest(service="brain", payload={}, schedule_in_s=schedule)

"""The preview is the task ``Enqueuer.enqueue`` creates, and its shell commands say the same
job: checked against the real emulator, a real uvicorn-served API and the real ``curl``."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import shlex
import subprocess

import pytest
from google.cloud import tasks_v2

from app import create_app
from enqueuer_core.build import EnqueueRequest, body_of
from enqueuer_core.config import load_settings
from enqueuer_core.enqueue import Enqueuer
from enqueuer_core.errors import InvalidRequest, UnknownService
from enqueuer_core.preview import (
    TaskPreview,
    curl_command,
    gcloud_command,
    pinned_request,
    preview_task,
)
from tests.acting import as_admin
from tests.emulator.harness import PARENT, PROJECT
from tests.enqueuer_core.test_cli import ENQUEUER, clean_env
from tests.serving import serving

CALLER = f"caller@{PROJECT}.iam.gserviceaccount.com"
BRAIN = {"system_instructions_doc_id": "s", "base_prompt_doc_id": "b", "input_doc_id": "i",
         "output_doc_id": "o"}
# Everything a shell could get wrong: quotes of both kinds, $, backticks, unicode, newlines.
NASTY = {"text": "it's \"quoted\" $HOME `id` \\ ñandú 🚀\nline 2", "n": [1, 2.5, None]}
_ids = itertools.count()
API_AUDIENCE = "http://api.preview.test"
# The shell runs this for the caller's token: the emulator's issuer, for the API's audience.
TOKEN = f"{ENQUEUER} token --as operator@local-project.test --audience {API_AUDIENCE}"


@pytest.fixture
def enqueuer(emulator):
    """An Enqueuer over paused queues: what it creates stays there to be read back."""
    n = next(_ids)
    queues = {f"queue_{s}": f"preview-{s}-{n}" for s in ("brain", "testi", "trans")}
    client = emulator.client()
    for q in queues.values():
        client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=f"{PARENT}/queues/{q}"))
        client.pause_queue(name=f"{PARENT}/queues/{q}")
    settings = load_settings(
        cloud_tasks_emulator_host=emulator.target, project_id=PROJECT,
        tasks_region="us-central1", caller_sa=CALLER,
        url_brain="http://127.0.0.1:9/process", url_testi="http://127.0.0.1:9/testi",
        url_trans="http://127.0.0.1:9/trans", aud_trans="https://trans.example", **queues,
        emulator_http_url=emulator.http_url, api_audience=API_AUDIENCE,
    )
    return Enqueuer(settings, client=client)


def created(enqueuer: Enqueuer, name: str) -> tasks_v2.Task:
    return enqueuer.client.get_task(request=tasks_v2.GetTaskRequest(
        name=name, response_view=tasks_v2.Task.View.FULL))


def assert_matches(preview: TaskPreview, task: tasks_v2.Task) -> None:
    http = task.http_request
    assert task.name == preview.task_name
    assert http.url == preview.url and tasks_v2.HttpMethod(http.http_method).name == "POST"
    # Cloud Tasks adds its User-Agent to the headers it stores; nothing else differs.
    assert dict(http.headers) == {**preview.headers, "User-Agent": "Google-Cloud-Tasks"}
    assert http.body.decode() == preview.body
    assert http.oidc_token.audience == preview.audience
    assert http.oidc_token.service_account_email == preview.service_account == CALLER
    assert task.dispatch_deadline.total_seconds() == preview.deadline_s


def test_preview_is_the_task_enqueue_creates(enqueuer):
    now = dt.datetime.now(dt.UTC)
    request = EnqueueRequest(service="transcripciones", payload=NASTY, schedule_in_s=3600,
                             idempotency_key="job 7/ñ")
    preview = preview_task(enqueuer, request, now=now)
    assert preview.queue == enqueuer.settings.queue_path(enqueuer.settings.queue_trans)
    assert preview.queue_id == enqueuer.settings.queue_trans
    assert preview.method == "POST" and preview.deadline_s == 880
    assert preview.audience == "https://trans.example"
    assert preview.headers == {"Content-Type": "application/json",
                               "X-Idempotency-Key": "job 7/ñ"}
    assert json.loads(preview.body) == NASTY
    assert preview.schedule_time == now + dt.timedelta(hours=1)

    result = enqueuer.enqueue(pinned_request(request, preview), as_admin(), now=now)
    assert result.task == preview.task_name
    task = created(enqueuer, result.task)
    assert_matches(preview, task)
    assert task.schedule_time == preview.schedule_time


def test_preview_without_a_key_makes_one_the_enqueue_then_uses(enqueuer):
    request = EnqueueRequest(service="brain", payload=BRAIN)
    first, second = preview_task(enqueuer, request), preview_task(enqueuer, request)
    assert first.idempotency_key != second.idempotency_key
    assert len(first.idempotency_key) == 36 and first.schedule_time is None
    assert first.headers["X-Idempotency-Key"] == first.idempotency_key

    result = enqueuer.enqueue(pinned_request(request, first), as_admin())
    assert result.idempotency_key == first.idempotency_key
    task = created(enqueuer, result.task)
    assert_matches(first, task)
    assert first.audience == "http://127.0.0.1:9" and first.deadline_s == 700


def test_preview_refuses_what_enqueue_refuses(enqueuer):
    with pytest.raises(UnknownService):
        preview_task(enqueuer, EnqueueRequest(service="nope", payload={}))
    with pytest.raises(InvalidRequest, match="output_doc_id"):
        preview_task(enqueuer, EnqueueRequest(service="brain", payload={"x": 1}))


def test_curl_command_enqueues_the_same_job_through_the_api(enqueuer):
    request = EnqueueRequest(service="testimonios", payload=NASTY, schedule_in_s=600,
                             idempotency_key="curl-it's-ñ")
    with serving(create_app(enqueuer=enqueuer)) as url:
        command = curl_command(url + "/", request, TOKEN)
        assert command.startswith(f'curl -s -X POST {url}/enqueue -H "Authorization: Bearer '
                                  f'$({TOKEN})" -H ')
        env = {**clean_env(), "CLOUD_TASKS_EMULATOR_HOST": enqueuer.settings.
               cloud_tasks_emulator_host, "EMULATOR_HTTP_URL": enqueuer.settings.emulator_http_url}
        out = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=20,
                             check=True, env=env)
    answer = json.loads(out.stdout)
    assert answer["ok"] is True and answer["idempotency_key"] == "curl-it's-ñ"
    task = created(enqueuer, answer["task"])
    assert task.http_request.body == body_of(NASTY)
    assert task.name == preview_task(enqueuer, request).task_name


def test_curl_command_parses_back_to_the_request():
    request = EnqueueRequest(service="brain", payload=NASTY)
    args = shlex.split(curl_command("http://localhost:8080", request, "enqueuer --local token"))
    assert args[:6] == ["curl", "-s", "-X", "POST", "http://localhost:8080/enqueue", "-H"]
    assert args[6] == "Authorization: Bearer $(enqueuer --local token)"
    assert args[7:10] == ["-H", "Content-Type: application/json", "-d"]
    assert json.loads(args[10]) == {"service": "brain", "payload": NASTY}


def test_gcloud_command_names_every_part_of_the_task(enqueuer):
    now = dt.datetime(2030, 1, 2, 3, 4, 5, 600000, tzinfo=dt.UTC)
    preview = preview_task(enqueuer, EnqueueRequest(
        service="transcripciones", payload=NASTY, schedule_in_s=60,
        idempotency_key="k:1 'x'"), now=now)
    args = shlex.split(gcloud_command(preview))
    assert args[:4] == ["gcloud", "tasks", "create-http-task", preview.task_id]
    flags = args[4:]
    assert flags == [
        f"--queue={enqueuer.settings.queue_trans}", "--location=us-central1",
        f"--project={PROJECT}", "--url=http://127.0.0.1:9/trans", "--method=POST",
        "--header=Content-Type:application/json", "--header=X-Idempotency-Key:k:1 'x'",
        f"--body-content={preview.body}", f"--oidc-service-account-email={CALLER}",
        "--oidc-token-audience=https://trans.example",
        "--schedule-time=2030-01-02T03:05:05.600000Z",
    ]
    assert json.loads(flags[7].removeprefix("--body-content=")) == NASTY
    # gcloud has no dispatch-deadline flag; without a schedule there is no schedule flag.
    unscheduled = preview_task(enqueuer, EnqueueRequest(service="brain", payload=BRAIN))
    assert not [a for a in shlex.split(gcloud_command(unscheduled))
                if a.startswith(("--schedule-time", "--dispatch-deadline"))]

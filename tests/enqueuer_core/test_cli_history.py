"""``enqueuer history|dead|replay|activity`` against the real emulator: in this process
(Typer's runner, for speed), and the replay as the console script run as a process."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import uuid
from pathlib import Path

import pytest
from google.cloud import tasks_v2
from google.cloud.logging_v2.types import WriteLogEntriesRequest
from typer.testing import CliRunner, Result

from enqueuer_core import history
from enqueuer_core.access import audit
from enqueuer_core.build import EnqueueRequest
from enqueuer_core.cli import app
from enqueuer_core.clients import logging_client
from enqueuer_core.config import load_settings
from enqueuer_core.enqueue import Enqueuer
from enqueuer_core.log_shipping import entry_from_line
from tests.acting import as_admin
from tests.emulator.harness import LOCATION, PARENT, PROJECT, fast_retry, queue_name, wait_until
from tests.enqueuer_core.test_cli import CALLER, SETTING_NAMES, SETTING_PREFIXES, Stack, clean_env

BRAIN = {"system_instructions_doc_id": "s", "base_prompt_doc_id": "b", "input_doc_id": "i",
         "output_doc_id": "o"}
_ids = itertools.count()


@pytest.fixture
def stack(emulator, worker, tmp_path: Path) -> Stack:
    """brain on a fresh queue that logs every task operation and gives up after 2 attempts;
    the receiver is the worker, at a path of its own."""
    client = emulator.client()
    n = f"{next(_ids)}-{os.getpid()}"
    queue_id = f"clih{n}"
    client.create_queue(parent=PARENT, queue=tasks_v2.Queue(
        name=queue_name(queue_id), retry_config=fast_retry(max_attempts=2),
        stackdriver_logging_config=tasks_v2.StackdriverLoggingConfig(sampling_ratio=1.0)))
    env = clean_env() | {
        "CLOUD_TASKS_EMULATOR_HOST": emulator.target, "PROJECT_ID": PROJECT,
        "TASKS_REGION": LOCATION, "CALLER_SA": CALLER, "QUEUE_BRAIN": queue_id,
        "URL_BRAIN": f"{worker.url}/cli-{n}", "AUDIT_PAYLOADS": "full",
    }
    return Stack(env, {"BRAIN": queue_id}, client, tmp_path)


def run(stack: Stack, *args: str, check: int, env: dict[str, str] | None = None) -> Result:
    """``enqueuer ARGS`` in this process, with the stack's settings and nobody else's."""
    others = {k: None for k in os.environ
              if k in SETTING_NAMES or k.startswith(SETTING_PREFIXES) or k == "AUDIT_PAYLOADS"}
    done = CliRunner().invoke(app, list(args), env=others | stack.env | (env or {}))
    assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
    assert done.exit_code == check, (done.exit_code, done.stdout, done.stderr)
    return done


def as_json(stack: Stack, *args: str) -> dict:
    return json.loads(run(stack, *args, "--json", check=0).stdout)


def enqueuer_of(stack: Stack) -> Enqueuer:
    names = ("CLOUD_TASKS_EMULATOR_HOST", "PROJECT_ID", "TASKS_REGION", "CALLER_SA",
             "QUEUE_BRAIN", "URL_BRAIN", "AUDIT_PAYLOADS")
    settings = load_settings(**{name.lower(): stack.env[name] for name in names})
    return Enqueuer(settings, client=stack.client)


def ship(enqueuer: Enqueuer, stderr: str) -> None:
    """The enqueue's audit line into Logging, as the dev stack ships the API's stdout."""
    entries = [entry_from_line(line, project=PROJECT, location=LOCATION,
                               service="enqueuer-api", revision="enqueuer-api-00001")
               for line in stderr.splitlines() if '"audit"' in line]
    logging_client(enqueuer.settings).write_log_entries(
        request=WriteLogEntriesRequest(entries=entries))


def dead_job(stack: Stack, worker, capsys, key: str, payloads: str = "full") -> str:
    """A brain job that fails for good (404 twice), its enqueue line in Logging."""
    enqueuer = enqueuer_of(stack)
    if payloads != "full":
        enqueuer = Enqueuer(enqueuer.settings.model_copy(update={"audit_payloads": payloads}),
                            client=stack.client)
    path = stack.env["URL_BRAIN"].removeprefix(worker.url)
    worker.respond(path, [404, 404])
    task = enqueuer.enqueue(EnqueueRequest(service="brain", payload=BRAIN,
                                           idempotency_key=key), as_admin()).task
    ship(enqueuer, capsys.readouterr().err)
    logs = logging_client(enqueuer.settings)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    wait_until(lambda: any(d.task == task for d in history.dead_letters(
        logs, stack.path("BRAIN"), since).items), what="the dead letter")
    return task


def test_history_and_dead_show_what_happened_in_text_and_json(stack, worker, capsys) -> None:
    task = dead_job(stack, worker, capsys, "nightly-1")
    short = f"brain/{task.rsplit('/', 1)[1]}"
    text = run(stack, "history", short, check=0).stdout
    assert task in text and "NOT_FOUND" in text and "never (final)" in text
    assert "Failed for good" in text and "404" in text
    assert "Set URL_BRAIN to the real endpoint of brain" in text  # its worker's fix
    assert f"enqueuer replay {short}" in text
    answer = as_json(stack, "history", short)
    assert answer["task"] == task
    assert [a["event"] for a in answer["attempts"]] == [
        "created", "dispatched", "response", "dispatched", "response"]
    assert answer["attempts"][-1]["final"] is True
    # The key it was enqueued with names it as well: what an operator usually has at hand.
    assert as_json(stack, "history", "brain/nightly-1")["attempts"] == answer["attempts"]

    dead = run(stack, "dead", "brain", check=0).stdout
    assert task.rsplit("/", 1)[1] in dead and "Likely causes" in dead
    assert "NOT_FOUND" in dead and "URL_" in dead and "enqueuer replay brain/TASK" in dead
    listed = as_json(stack, "dead", stack.queues["BRAIN"], "--since", "30m")
    assert [d["task"] for d in listed["dead_letters"]] == [task]
    assert listed["dead_letters"][0]["max_attempts"] == 2 and listed["next_page_token"] == ""
    # Nothing failed after it.
    later = history.rfc3339(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    assert "No job of" in run(stack, "dead", "brain", "--since", later, check=0).stdout


def test_replay_reaches_the_worker_and_twice_is_refused(stack, worker, capsys) -> None:
    task = dead_job(stack, worker, capsys, "nightly-2")
    path = stack.env["URL_BRAIN"].removeprefix(worker.url)
    done = stack.run("replay", f"brain/{task.rsplit('/', 1)[1]}", check=0)
    assert "Replayed " + task in done.stdout and "nightly-2-r1" in done.stdout
    got = worker.at(path, 3)[-1]
    assert json.loads(got.body) == BRAIN and got.header("X-Idempotency-Key") == "nightly-2-r1"
    line = json.loads(done.stderr.splitlines()[-1])["audit"]
    assert (line["replay_of"], line["idempotency_key"]) == (task, "nightly-2-r1")

    again = stack.run("replay", task, "--json", check=3)
    error = json.loads(again.stdout)["error"]
    assert error["code"] == "duplicate" and "replayed already" in error["message"]
    assert "nightly-2-r1" in error["message"]


def test_replay_edit_sends_what_the_editor_saved(stack, worker, capsys, tmp_path) -> None:
    # Enqueued with the payload's hash only: a plain replay says why it cannot, --edit works.
    task = dead_job(stack, worker, capsys, "nightly-3", payloads="hash")
    refused = run(stack, "replay", task, check=2)
    assert "AUDIT_PAYLOADS=full" in refused.stderr and "--edit" in refused.stderr
    edited = {**BRAIN, "input_doc_id": "from-my-records"}
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps(edited))
    # click runs `$EDITOR "file"`: this editor saves the payload from the operator's records.
    answer = json.loads(run(stack, "replay", task, "--edit", "--json",
                            env={"EDITOR": f"cp {saved}"}, check=0).stdout)
    assert answer["idempotency_key"] == "nightly-3-r1" and answer["replay_of"] == task
    path = stack.env["URL_BRAIN"].removeprefix(worker.url)
    got = worker.at(path, 3)[-1]
    assert json.loads(got.body) == edited

    broken = tmp_path / "broken.json"
    broken.write_text('{"input_doc_id": ')
    bad = run(stack, "replay", task, "--edit", env={"EDITOR": f"cp {broken}"}, check=2)
    assert "not valid JSON" in bad.stderr and "Nothing was enqueued" in bad.stderr


def test_activity_filters_by_who_action_and_queue(stack) -> None:
    enqueuer = enqueuer_of(stack)
    ana, bob = (f"user:{n}-{uuid.uuid4().hex[:8]}@example.com" for n in ("ana", "bob"))
    queue = stack.path("BRAIN")
    now = dt.datetime.now(dt.UTC)
    lines = [audit.audit_line(principal=who, role="operator", via="dashboard", action=action,
                              target=target, outcome="ok", request_id="r",
                              now=now - dt.timedelta(seconds=ago), **details)
             for who, action, target, ago, details in [
                 (ana, "enqueue", queue, 30, {"worker": "brain", "idempotency_key": "k-a"}),
                 (ana, "delete", f"{queue}/tasks/t1", 20, {}),
                 (bob, "pause", queue, 10, {})]]
    ship(enqueuer, "\n".join(json.dumps(line) for line in lines))
    text = run(stack, "activity", "--who", ana, check=0).stdout
    assert "enqueue" in text and "delete" in text and "pause" not in text
    assert f"{stack.queues['BRAIN']}/t1" in text and "key k-a" in text
    mine = as_json(stack, "activity", "--who", ana.removeprefix("user:"), "--action",
                   "enqueue", "--queue", "brain", "--since", "1h")
    assert [(a["principal"], a["action"], a["idempotency_key"]) for a in mine["actions"]] == [
        (ana, "enqueue", "k-a")]
    nothing = run(stack, "activity", "--who", bob, "--action", "enqueue", check=0)
    assert "No action on record matches" in nothing.stdout


def test_bad_input_exits_2_saying_what_to_write(stack) -> None:
    since = run(stack, "dead", "brain", "--since", "yesterday", check=2)
    assert "30m, 24h, 7d" in since.stderr and "RFC 3339" in since.stderr
    refused = json.loads(run(stack, "activity", "--since", "2026-12-01", "--json",
                             check=2).stdout)
    assert refused["ok"] is False and refused["error"]["code"] == "invalid_request"
    task = run(stack, "history", "0b1c-report-1", check=2)
    assert "QUEUE/TASK_ID" in task.stderr

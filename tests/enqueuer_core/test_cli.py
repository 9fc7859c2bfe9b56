"""The ``enqueuer`` console script, run as a process against the real emulator."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.cloud import tasks_v2
from google.protobuf import duration_pb2

from enqueuer_core import inspect
from tests.emulator.harness import LOCATION, PARENT, PROJECT, queue_name, wait_until
from tests.receiver import Receiver

ENQUEUER = Path(sys.executable).parent / "enqueuer"
CALLER = f"caller@{PROJECT}.iam.gserviceaccount.com"
BRAIN = {"system_instructions_doc_id": "1a", "base_prompt_doc_id": "1b",
         "input_doc_id": "1c", "output_doc_id": "1d"}
SETTING_PREFIXES = ("QUEUE_", "URL_", "AUD_", "DEADLINE_")
SETTING_NAMES = ("PROJECT_ID", "TASKS_REGION", "CALLER_SA", "WORKERS_FILE",
                 "CLOUD_TASKS_EMULATOR_HOST")
_ids = itertools.count()


def clean_env() -> dict[str, str]:
    """This process's environment without any of Enqueuer's settings."""
    return {k: v for k, v in os.environ.items()
            if k not in SETTING_NAMES and not k.startswith(SETTING_PREFIXES)}


@dataclass
class Stack:
    env: dict[str, str]
    queues: dict[str, str]  # short name (BRAIN, TESTI, TRANS) -> queue ID
    client: tasks_v2.CloudTasksClient
    cwd: Path

    def run(self, *args: str, env: dict[str, str] | None = None,
            check: int | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(ENQUEUER), *args], env=env or self.env, cwd=self.cwd,
                              capture_output=True, text=True, timeout=30)
        assert "Traceback" not in done.stderr, done.stderr
        if check is not None:
            assert done.returncode == check, (done.returncode, done.stdout, done.stderr)
        return done

    def json(self, *args: str) -> object:
        return json.loads(self.run(*args, "--json", check=0).stdout)

    def path(self, short: str) -> str:
        return queue_name(self.queues[short])


@pytest.fixture
def stack(emulator, receiver: Receiver, tmp_path: Path) -> Stack:
    """Three fresh queues and the environment that points the CLI at them and the receiver."""
    client = emulator.client()
    n = next(_ids)
    queues = {short: f"cli{n}-{os.getpid()}-{short.lower()}" for short in ("BRAIN", "TESTI",
                                                                           "TRANS")}
    for queue_id in queues.values():
        client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=queue_name(queue_id)))
    env = clean_env() | {
        "CLOUD_TASKS_EMULATOR_HOST": emulator.target, "PROJECT_ID": PROJECT,
        "TASKS_REGION": LOCATION, "CALLER_SA": CALLER,
        "URL_BRAIN": receiver.url + "/process",
        "URL_TESTI": receiver.url + "/generate-testimony",
        "URL_TRANS": receiver.url + "/api/transcribe",
    } | {f"QUEUE_{short}": queue_id for short, queue_id in queues.items()}
    return Stack(env, queues, client, tmp_path)


def test_enqueue_json_answers_like_the_api_and_the_worker_gets_the_job(stack, receiver):
    answer = stack.json("enqueue", "brain", "--payload", json.dumps(BRAIN))
    assert set(answer) == {"ok", "task", "service", "queue", "deadline_s", "idempotency_key"}
    assert answer["ok"] is True and answer["service"] == "brain"
    assert answer["queue"] == stack.queues["BRAIN"] and answer["deadline_s"] == 700
    assert answer["task"].startswith(stack.path("BRAIN") + "/tasks/")
    [got] = receiver.at("/process")
    assert got.method == "POST" and json.loads(got.body) == BRAIN
    assert got.header("X-Idempotency-Key") == answer["idempotency_key"]


def test_enqueue_reads_the_payload_from_a_file_and_prints_a_summary(stack, receiver, tmp_path):
    (tmp_path / "job.json").write_text(json.dumps({"audio": "gs://b/a.mp3"}))
    done = stack.run("enqueue", "transcripciones", "--payload", "@job.json", "--key", "k-1",
                     check=0)
    assert "k-1" in done.stdout and stack.queues["TRANS"] in done.stdout
    assert "880 s" in done.stdout
    [got] = receiver.at("/api/transcribe")
    assert json.loads(got.body) == {"audio": "gs://b/a.mp3"}
    assert got.header("X-Idempotency-Key") == "k-1"


def test_the_same_key_twice_is_a_duplicate(stack):
    args = ("enqueue", "testimonios", "--payload", "{}", "--key", "once", "--in", "600")
    stack.run(*args, check=0)
    again = stack.run(*args, "--json", check=3)
    assert json.loads(again.stdout)["error"]["code"] == "duplicate"
    *audit, message = again.stderr.splitlines()
    assert message.startswith("error: ") and "idempotency key" in message
    # The refused change is on record (stderr: stdout is the command's answer).
    line = json.loads(audit[-1])["audit"]
    assert (line["action"], line["outcome"], line["error_code"], line["via"]) == (
        "enqueue", "failed", "duplicate", "cli")


def test_bad_input_exits_2_saying_what_to_change(stack, tmp_path):
    unknown = stack.run("enqueue", "nope", "--payload", "{}", check=2)
    assert "brain, testimonios, transcripciones" in unknown.stderr
    bad_json = stack.run("enqueue", "brain", "--payload", '{"input_doc_id": ', check=2)
    assert "not valid JSON" in bad_json.stderr and "column 18" in bad_json.stderr
    (tmp_path / "bad.json").write_text("{\n  'x': 1\n}")
    bad_file = stack.run("enqueue", "brain", "--payload", "@bad.json", "--json", check=2)
    assert "line 2" in bad_file.stderr
    assert json.loads(bad_file.stdout)["error"]["code"] == "invalid_request"
    schema = stack.run("enqueue", "brain", "--payload", '{"input_doc_id": "1"}', check=2)
    assert "output_doc_id" in schema.stderr
    negative = stack.run("enqueue", "testimonios", "--payload", "{}", "--in", "-1", check=2)
    assert "--in" in negative.stderr
    assert stack.client.list_tasks(parent=stack.path("BRAIN")).tasks == []


def test_enqueue_in_2_seconds_is_delivered_2_seconds_later(stack, receiver):
    start = time.time()
    stack.run("enqueue", "testimonios", "--payload", '{"n": 1}', "--in", "2", check=0)
    [got] = receiver.at("/generate-testimony", timeout=10)
    assert got.at - start >= 2.0


def test_workers_lists_the_three(stack, receiver):
    workers = stack.json("workers")
    assert [w["name"] for w in workers] == ["brain", "testimonios", "transcripciones"]
    brain = workers[0]
    assert brain["queue"] == stack.queues["BRAIN"]
    assert brain["url"] == receiver.url + "/process" and brain["audience"] == receiver.url
    assert "output_doc_id" in brain["payload_schema"]["required"]
    table = stack.run("workers", check=0).stdout
    assert stack.queues["TESTI"] in table and "390 s" in table


def test_queues_show_their_state_count_and_a_missing_one(stack):
    stack.run("enqueue", "brain", "--payload", json.dumps(BRAIN), "--in", "600", check=0)
    stack.client.pause_queue(name=stack.path("BRAIN"))
    env = stack.env | {"QUEUE_TRANS": "never-created"}
    done = stack.run("queues", "--json", env=env, check=0)
    queues = {q["queue_id"]: q for q in json.loads(done.stdout)}
    brain, testi = queues[stack.queues["BRAIN"]], queues[stack.queues["TESTI"]]
    assert brain["state"] == "PAUSED" and brain["tasks_count"] == 1
    assert brain["workers"] == ["brain"]
    assert testi["state"] == "RUNNING" and testi["tasks_count"] == 0
    assert queues["never-created"]["state"] == "MISSING"
    assert "gcloud tasks queues create never-created" in queues["never-created"]["error"]
    table = stack.run("queues", env=env, check=0).stdout
    assert "PAUSED" in table and "MISSING" in table


def test_tasks_failing_lists_only_the_task_whose_last_attempt_failed(stack, receiver):
    slow_retry = tasks_v2.RetryConfig(
        min_backoff=duration_pb2.Duration(seconds=60),
        max_backoff=duration_pb2.Duration(seconds=120))
    stack.client.update_queue(queue=tasks_v2.Queue(name=stack.path("BRAIN"),
                                                   retry_config=slow_retry))
    receiver.respond("/process", [500])
    failed = stack.json("enqueue", "brain", "--payload", json.dumps(BRAIN), "--key", "fails")
    receiver.at("/process")
    wait_until(lambda: stack.client.get_task(name=failed["task"]).response_count == 1,
               what="the 500 recorded")
    stack.run("enqueue", "brain", "--payload", json.dumps(BRAIN), "--key", "later",
              "--in", "600", check=0)

    failing = stack.json("tasks", stack.queues["BRAIN"], "--failing")
    [task] = failing["tasks"]
    assert task["name"] == failed["task"] and task["idempotency_key"] == "fails"
    assert task["last_response_code"] == "500" and task["failing"] is True
    assert task["dispatch_count"] == 1 and task["response_count"] == 1
    assert "HTTP status code 500" in task["last_response_message"]

    every = stack.json("tasks", "brain", "--limit", "5")  # a worker name: its queue
    assert sorted(t["idempotency_key"] for t in every["tasks"]) == ["fails", "later"]
    assert every["more"] is False
    assert len(stack.json("tasks", "brain", "--limit", "1")["tasks"]) == 1
    table = stack.run("tasks", "brain", "--failing", check=0).stdout
    assert "fails" in table and "500" in table and "later" not in table


def test_tasks_of_a_missing_queue_exit_5_with_the_fix(stack):
    done = stack.run("tasks", "nowhere", check=5)
    assert "gcloud tasks queues create nowhere" in done.stderr


def test_emulator_passes_its_arguments_through(stack):
    done = stack.run("emulator", "--help", check=0)
    assert "python -m emulator" in done.stdout and "--http-port" in done.stdout


def test_missing_caller_sa_outside_the_emulator_exits_2_naming_it(stack):
    env = clean_env() | {"PROJECT_ID": "p", "TASKS_REGION": "us-central1",
                         "URL_BRAIN": "https://b.example/process",
                         "URL_TESTI": "https://t.example/generate-testimony",
                         "URL_TRANS": "https://x.example/api/transcribe"}
    done = stack.run("enqueue", "brain", "--payload", json.dumps(BRAIN), env=env, check=2)
    assert done.stderr.startswith("error: ") and "CALLER_SA" in done.stderr
    assert "PROJECT_ID" not in done.stderr


def test_listing_pages_and_stops_at_the_limit(stack):
    """The library under ``tasks`` and ``queues``: pages through, never past what it needs.

    (Belongs in a test_inspect.py; here because this change may add only this file.)
    """
    path = stack.path("TESTI")
    for i in range(7):
        stack.client.create_task(parent=path, task=tasks_v2.Task(
            name=f"{path}/tasks/t{i}",
            http_request=tasks_v2.HttpRequest(url="http://127.0.0.1:1/x",
                                              headers={"X-Idempotency-Key": f"k{i}"}),
            schedule_time={"seconds": int(time.time()) + 600}))
    some = inspect.list_tasks(stack.client, path, page_size=2, limit=5)
    assert [t.idempotency_key for t in some.tasks] == [f"k{i}" for i in range(5)]
    assert some.more and some.scanned == 5
    every = inspect.list_tasks(stack.client, path, page_size=2, limit=7)
    assert len(every.tasks) == 7 and not every.more
    none_failing = inspect.list_tasks(stack.client, path, failing_only=True, page_size=2,
                                      scan_cap=4)
    assert none_failing.tasks == [] and none_failing.more and none_failing.scanned == 4
    assert inspect.count_tasks(stack.client, path, cap=5) == (5, True)
    assert inspect.count_tasks(stack.client, path, cap=7) == (7, False)
    assert inspect.queue_snapshot(stack.client, path, count_cap=3).tasks_count_text == "3+"


# -- who the CLI acts as, and what the access config lets it do --------------------------

ANA = "user:ana@example.com"  # the CLI's principal here: EMULATOR_OPERATOR


def with_access(stack: Stack, tmp_path: Path, text: str) -> dict[str, str]:
    """The stack's environment, a workers file holding ``text``, and ana acting."""
    workers = tmp_path / "workers.toml"
    workers.write_text(text)
    return stack.env | {"WORKERS_FILE": str(workers), "EMULATOR_OPERATOR": ANA}


def audit_lines(stderr: str) -> list[dict]:
    return [json.loads(line)["audit"] for line in stderr.splitlines() if line.startswith("{")]


def test_a_viewer_cannot_enqueue_exit_11_with_the_line_and_one_refused_audit_line(
        stack, tmp_path):
    env = with_access(stack, tmp_path, f'[access]\n"{ANA}" = "viewer"\n')
    done = stack.run("enqueue", "testimonios", "--payload", '{"n": 1}', "--key", "viewer-1",
                     "--json", env=env, check=11)
    assert json.loads(done.stdout)["error"]["code"] == "forbidden"
    message = done.stderr.splitlines()[-1]
    assert message.startswith(f"error: {ANA} is a viewer; enqueuing a job needs the operator "
                              "role")
    assert f'"{ANA}" = "operator"' in message and str(tmp_path / "workers.toml") in message
    [line] = audit_lines(done.stderr)  # one line, on stderr: stdout is the answer
    assert (line["principal"], line["role"], line["action"], line["outcome"],
            line["error_code"], line["via"], line["worker"], line["idempotency_key"]) == (
        ANA, "viewer", "enqueue", "refused", "forbidden", "cli", "testimonios", "viewer-1")
    assert "payload" not in line  # refused before the payload was built
    assert stack.client.list_tasks(parent=stack.path("TESTI")).tasks == []
    # Reading is a viewer's: the same principal lists the queue.
    assert stack.run("tasks", "testimonios", "--json", env=env, check=0)


def test_an_operator_enqueues_and_the_line_says_ok(stack, tmp_path, receiver):
    env = with_access(stack, tmp_path, f'[access]\n"{ANA}" = "operator"\n')
    done = stack.run("enqueue", "testimonios", "--payload", '{"n": 2}', env=env, check=0)
    [line] = audit_lines(done.stderr)
    assert (line["principal"], line["role"], line["outcome"]) == (ANA, "operator", "ok")
    assert f"Enqueued {line['task']}" in done.stdout
    [got] = receiver.at("/generate-testimony")
    # The payload only as its size and hash, of the very body the worker got.
    assert line["payload"] == {"bytes": len(got.body),
                               "sha256": hashlib.sha256(got.body).hexdigest()}
    assert '"n"' not in json.dumps(line)


def test_a_worker_with_enqueuers_refuses_others_even_an_admin(stack, tmp_path):
    intake = "serviceAccount:intake@test-project.iam.gserviceaccount.com"
    env = with_access(stack, tmp_path, f'[access]\n"{ANA}" = "admin"\n\n'
                                       f'[workers.testimonios]\nenqueuers = ["{intake}"]\n')
    done = stack.run("enqueue", "testimonios", "--payload", "{}", "--in", "600", env=env,
                     check=11)
    assert f'only the enqueuers listed for testimonios may enqueue to it ("{intake}")' in (
        done.stderr)
    assert f'[workers.testimonios] enqueuers = ["{intake}", "{ANA}"]' in done.stderr
    assert stack.client.list_tasks(parent=stack.path("TESTI")).tasks == []


def test_setup_apply_by_a_non_admin_exits_11_and_changes_nothing(stack, tmp_path):
    env = with_access(stack, tmp_path, f'[access]\n"{ANA}" = "operator"\n')
    before = json.loads(stack.run("setup", "--json", env=env, check=10).stdout)
    assert before["to_change"] > 0 and before["principal"] == ANA
    done = stack.run("setup", "--apply", env=env, check=11)
    assert f"{ANA} is an operator; applying `enqueuer setup` needs the admin role" in (
        done.stderr)
    assert f'"{ANA}" = "admin"' in done.stderr
    [line] = audit_lines(done.stderr)
    assert (line["action"], line["outcome"], line["principal"], line["target"]) == (
        "setup_apply", "refused", ANA, f"projects/{PROJECT}")
    after = json.loads(stack.run("setup", "--json", env=env, check=10).stdout)
    assert after["changes"] == before["changes"]


@pytest.mark.parametrize(("access", "says"), [
    ('"user:ana@example.com" = "owner"', "line 2 (\"user:ana@example.com\" = \"owner\"): "
     "user:ana@example.com = 'owner': 'owner' is not a role: use viewer, operator or admin"),
    ('"ana@example.com" = "viewer"', "write it as user:ana@example.com (or "
     "serviceAccount:ana@example.com for an account)"),
    ('"group:ops@example.com" = "admin"', "list the group's users (user:...) or their "
     "domain (domain:...)"),
])
def test_a_malformed_access_config_exits_2_naming_the_line_and_the_fix(
        stack, tmp_path, access, says):
    env = with_access(stack, tmp_path, f"[access]\n{access}\n")
    for command in (["enqueue", "testimonios", "--payload", "{}"], ["setup", "--apply"],
                    ["workers"], ["queues"]):
        done = stack.run(*command, env=env, check=2)
        assert done.stderr.startswith(f"error: WORKERS_FILE={tmp_path / 'workers.toml'}"), (
            command, done.stderr)
        assert says in done.stderr, (command, done.stderr)
        assert not audit_lines(done.stderr)  # nothing was attempted
    assert stack.client.list_tasks(parent=stack.path("TESTI")).tasks == []

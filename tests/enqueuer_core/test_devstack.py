"""``enqueuer dev``: start the whole stack, run the README's curl (with its token from
``enqueuer --local token``), see the job arrive verified at the local brain and on record in
the emulator's Logging, run the lines the stack prints, stop with Ctrl-C, and leave no process
behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import httpx
import pytest

from enqueuer_core.clients import logging_client
from enqueuer_core.config import LOCAL_PRINCIPAL, LOCAL_USERS, load_settings
from enqueuer_core.devstack import DevPorts, emulator_config
from tests.emulator.harness import wait_until
from tests.gcloud.harness import require_gcloud

ROOT = Path(__file__).resolve().parents[2]
ENQUEUER = str(Path(sys.executable).with_name("enqueuer"))
README_CURL = next(line for line in (ROOT / "README.md").read_text().splitlines()
                   if line.startswith("curl ") and "/enqueue" in line)


def run_readme_curl(api: str, state: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The README's curl to ``api``, as a developer runs it from the repository's root: its
    ``$(.venv/bin/enqueuer --local token)`` finds the stack through ``ENQUEUER_STATE`` (and
    ``env``, which wins over the stack's settings)."""
    assert "$(.venv/bin/enqueuer --local token)" in README_CURL, README_CURL
    return subprocess.run(README_CURL.replace("http://localhost:8080", api), shell=True,
                          capture_output=True, text=True, timeout=30, check=True, cwd=ROOT,
                          env={**os.environ, "ENQUEUER_STATE": str(state), **env})


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def start_dev(state: Path, *flags: str) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [ENQUEUER, "dev", "--state", str(state), "--ephemeral-ports", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()  # type: ignore[arg-type]
    try:
        wait_until(lambda: any("Ctrl-C stops everything" in line for line in lines) or
                   proc.poll() is not None, timeout=90, interval=0.1, what="the stack is up")
    except TimeoutError:
        proc.kill()
        raise
    assert proc.poll() is None, "".join(lines)
    return proc, lines


def stop_dev(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> int:
    """Stop the stack as Ctrl-C or SIGTERM would; its exit code (killed after 30 s)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise


@pytest.fixture
def dev_stack(tmp_path):
    state = tmp_path / "state"
    proc, lines = start_dev(state, "--no-dashboard")
    try:
        yield proc, lines, state
    finally:
        stop_dev(proc, signal.SIGINT)


def test_dev_stack_runs_the_readme_curl_to_a_verified_delivery(dev_stack):
    proc, lines, state = dev_stack
    profile = json.loads((state / "profile.json").read_text())
    api, brain = profile["api"], profile["services"]["brain"]
    assert any(api in line for line in lines) and any(brain in line for line in lines)
    children = children_of(proc.pid)
    assert len(children) >= 2  # the emulator and the API

    out = run_readme_curl(api, state)
    assert out.stderr == "", out.stderr  # the token was minted: no error from the $(...)
    answer = json.loads(out.stdout)
    assert answer["ok"] is True and answer["service"] == "brain"

    def delivered():
        got = httpx.get(f"{brain}/_requests", timeout=5).json()
        got = got.get("requests", got) if isinstance(got, dict) else got
        return [r for r in got if dict((k.lower(), v) for k, v in r["headers"]).get(
            "x-idempotency-key") == answer["idempotency_key"]]

    (request,) = wait_until(delivered, timeout=20, interval=0.1, what="brain got the job")
    assert request["claims"]["email"] == "enqueuer-caller@local-project.iam.gserviceaccount.com"
    assert request["claims"]["aud"] == brain
    assert request["body"]["input_doc_id"] == "doc-in"

    # The API's audit line went to the emulator's Logging as Cloud Run ships stdout, and the
    # job's attempts are in its task-operation log; a local user reads both (history).
    task = answer["task"]
    logs = logging_client(load_settings(cloud_tasks_emulator_host=profile["emulator_grpc"]),
                          acting_as="user:viewer@local-project.test")

    def entries(flt: str) -> list:
        return list(logs.list_log_entries(request={
            "resource_names": ["projects/local-project"], "filter": flt}))

    (line,) = wait_until(lambda: entries(
        'labels.log="enqueuer-audit" AND jsonPayload.audit.action="enqueue" AND '
        f'jsonPayload.audit.task="{task}" AND jsonPayload.audit.outcome="ok"'),
        timeout=10, interval=0.1, what="the enqueue's audit line in Logging")
    assert line.log_name == "projects/local-project/logs/run.googleapis.com%2Fstdout"
    assert line.resource.type == "cloud_run_revision"
    assert line.resource.labels["service_name"] == "enqueuer-api"
    assert line.json_payload["audit"]["principal"] == "user:operator@local-project.test"
    # The local stack keeps payloads (AUDIT_PAYLOADS=full), so a dead job can be replayed.
    assert line.json_payload["audit"]["payload"]["content"]["input_doc_id"] == "doc-in"
    assert line.severity == 300  # NOTICE
    assert task in (state / "logs" / "api.log").read_text()  # and in the API's log file
    assert any(line.startswith("  Cloud Logging") and profile["emulator_grpc"] in line
               and str(state / "logs") in line for line in lines)
    attempts = wait_until(lambda: [e for e in entries(
        'logName="projects/local-project/logs/cloudtasks.googleapis.com%2Ftask_operations_log"'
        f' AND jsonPayload.task="{task}"') if "attemptResponseLog" in e.json_payload],
        timeout=10, interval=0.1, what="brain's attempt in the task-operation log")
    assert attempts[0].json_payload["attemptResponseLog"]["status"] == "OK"

    # --local reaches the same stack.
    queues = subprocess.run([ENQUEUER, "--local", "queues", "--json"], capture_output=True,
                            text=True, timeout=30, env={**os.environ,
                                                        "ENQUEUER_STATE": str(state)})
    assert queues.returncode == 0, queues.stderr
    assert {q["queue_id"] for q in json.loads(queues.stdout)} >= {"queue-brain"}
    # And proves every worker reachable: a signed GET through each one's door.
    probed = subprocess.run([ENQUEUER, "--local", "diagnose", "--probe", "--json"],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "ENQUEUER_STATE": str(state)})
    assert probed.returncode == 0, probed.stdout + probed.stderr
    proofs = {r["worker"]: r for r in json.loads(probed.stdout) if r["check"] == "probe"}
    assert set(proofs) == set(profile["services"]) and all(
        r["status"] == "pass" and r["evidence"].startswith("proven: ") for r in proofs.values())

    # The lines the stack prints work as printed, pasted into a shell where it was started.
    said = "".join(lines)
    token_line = next(line for line in lines if "callers send an ID token: " in line)
    command = token_line.split("callers send an ID token: ", 1)[1].strip()
    assert command.startswith('curl -H "Authorization: Bearer $(ENQUEUER_STATE=') and (
        command.endswith(f"{api}/workers")), command
    clean = {k: v for k, v in os.environ.items() if k != "ENQUEUER_STATE"}
    workers = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30,
                             env=clean, check=True)
    assert "brain" in {w["name"] for w in json.loads(workers.stdout)["workers"]}
    assert "operator@local-project.test, an operator" in said
    assert f"{profile['emulator_http']}/.well-known/openid-configuration" in said
    assert "log in as" not in said  # no dashboard in this stack
    other = next(line for line in lines if line.startswith("Other commands reach it with `"))
    local = other.split("`")[1].removesuffix(" ...")
    listed = subprocess.run(f"{local} workers --json", shell=True, capture_output=True,
                            text=True, timeout=30, env=clean, check=True)
    (spec,) = [w for w in json.loads(listed.stdout) if w["name"] == "brain"]
    assert spec["url"] == brain + "/process"  # this stack's brain, not the usual port's

    # The gcloud line: pasted as printed, the real gcloud lists this stack's queues over REST,
    # with a gcloud configuration of its own (the user's login is neither needed nor touched).
    gcloud_line = next(line for line in lines if line.startswith("  gcloud "))
    sourcing = gcloud_line.split(None, 1)[1].split("   then: ")[0]
    assert sourcing.startswith('eval "$(ENQUEUER_STATE=') and sourcing.endswith(
        ' --local gcloud-env)"'), sourcing
    require_gcloud()
    no_gcloud_settings = {k: v for k, v in clean.items() if not k.startswith("CLOUDSDK_")}
    listed = subprocess.run(
        f"{sourcing} && gcloud tasks queues list --location=us-central1 --format=json",
        shell=True, capture_output=True, text=True, timeout=60, check=True,
        env=no_gcloud_settings | {"CLOUDSDK_CONFIG": str(state.parent / "gcloud")})
    assert {q["name"].rsplit("/", 1)[1] for q in json.loads(listed.stdout)} == {
        "queue-brain", "queue-testimonios", "queue-transcripciones"}
    assert f"{profile['emulator_http']} (REST)" in said

    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    wait_until(lambda: not any(alive(c) for c in children), timeout=10, what="no child left")
    assert not (state / "profile.json").exists()


def test_state_persists_across_runs_and_no_api_leaves_the_api_out(tmp_path):
    state = tmp_path / "state"
    env = {**os.environ, "ENQUEUER_STATE": str(state)}
    proc, _ = start_dev(state, "--no-api", "--no-dashboard")
    try:
        profile = json.loads((state / "profile.json").read_text())
        assert profile["api"] is None and len(children_of(proc.pid)) == 1  # the emulator only
        out = subprocess.run(
            [ENQUEUER, "--local", "enqueue", "testimonios", "--payload", "{}", "--in", "3600",
             "--key", "kept-across-runs", "--json"],
            capture_output=True, text=True, timeout=30, env=env)
        assert out.returncode == 0, out.stderr
    finally:
        assert stop_dev(proc) == 0

    proc, _ = start_dev(state, "--no-api", "--no-dashboard")
    try:
        listed = subprocess.run([ENQUEUER, "--local", "tasks", "testimonios", "--json"],
                                capture_output=True, text=True, timeout=30, env=env)
        assert listed.returncode == 0, listed.stderr
        keys = [t["idempotency_key"] for t in json.loads(listed.stdout)["tasks"]]
        assert keys == ["kept-across-runs"]
    finally:
        assert stop_dev(proc) == 0


def test_the_dashboards_stdout_is_in_logging_and_the_local_users_may_read_history(tmp_path):
    config = tomllib.loads(emulator_config(DevPorts.ephemeral()))
    assert {q["log_sampling_ratio"] for q in config["queues"]} == {1.0}
    on_project = {b["role"]: set(b["members"]) for b in config["iam"]["bindings"]}
    account = f"serviceAccount:{LOCAL_PRINCIPAL}"  # the API's and the dashboard's
    assert on_project["roles/logging.viewer"] == {account, *LOCAL_USERS}
    assert on_project["roles/logging.logWriter"] == {account}

    state = tmp_path / "state"
    proc, lines = start_dev(state, "--no-api")
    try:
        profile = json.loads((state / "profile.json").read_text())
        logs = logging_client(load_settings(cloud_tasks_emulator_host=profile["emulator_grpc"]),
                              acting_as="user:admin@local-project.test")
        (said, *_) = wait_until(lambda: list(logs.list_log_entries(request={
            "resource_names": ["projects/local-project"],
            "filter": 'resource.labels.service_name="enqueuer-dashboard" AND '
                      'textPayload:"You can now view your Streamlit app"'})),
            timeout=10, interval=0.1, what="the dashboard's first line in Logging")
        assert said.resource.labels["revision_name"].startswith("enqueuer-dashboard-")
    finally:
        assert stop_dev(proc) == 0
    wait_until(lambda: "Enqueuer dev stack stopped." in "".join(lines), timeout=5,
               what="the stack's last line")
    assert "warning:" not in "".join(lines)  # every entry reached Logging before it stopped

"""Diagnostics against a real dev stack: the correct stack passes, and each broken setup,
breaking one thing, is caught by its own check with the right fix, then passes once repaired.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from google.cloud import tasks_v2
from google.iam.v1 import iam_policy_pb2, policy_pb2

from enqueuer_core import clients
from enqueuer_core.build import EnqueueRequest
from enqueuer_core.config import LOCAL_CALLER_SA, LOCAL_PRINCIPAL, load_settings
from enqueuer_core.devstack import LOCAL_ADMIN
from enqueuer_core.diagnose import CHECKS, CheckResult, diagnose, worst
from enqueuer_core.enqueue import Enqueuer
from tests.acting import as_admin
from tests.emulator.harness import start_emulator, wait_until
from tests.enqueuer_core.test_devstack import ENQUEUER, start_dev, stop_dev

PROJECT, REGION = "local-project", "us-central1"
BRAIN_SERVICE = f"projects/{PROJECT}/locations/{REGION}/services/brain"
CALLER_RESOURCE = f"projects/-/serviceAccounts/{LOCAL_CALLER_SA}"
# Someone allowed to change Cloud Run policies, to break and repair the stack.
OPERATOR = LOCAL_ADMIN
AS_OPERATOR = [("x-emulator-principal", OPERATOR)]
BRAIN_JOB = {f: "doc" for f in ("system_instructions_doc_id", "base_prompt_doc_id",
                                "input_doc_id", "output_doc_id")}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    state = tmp_path_factory.mktemp("diagnose") / "state"
    proc, _ = start_dev(state, "--no-dashboard", "--no-api")
    try:
        env = json.loads((state / "profile.json").read_text())["settings"]
        base = {k.lower(): v for k, v in env.items()}
        yield {"state": state, "env": env, "base": base}
    finally:
        stop_dev(proc)


def run(stack, **overrides: object) -> dict[str, CheckResult]:
    settings = load_settings(lenient=True, **{**stack["base"], **overrides})
    return {r.check: r for r in diagnose(settings, ["brain"])}


def failing(results: dict[str, CheckResult]) -> dict[str, str]:
    return {c: r.status for c, r in results.items() if r.status != "pass"}


@pytest.fixture(scope="module")
def settings(stack):
    return load_settings(lenient=True, **stack["base"])


def test_a_refused_api_makes_its_checks_unknown_with_the_reason(tmp_path):
    # An emulator where the enqueuer may create tasks but not read Cloud Run.
    em = start_emulator(tmp_path, f"""
[iam]
enforce = true
principal = "serviceAccount:{LOCAL_PRINCIPAL}"

[[iam.bindings]]
role = "roles/cloudtasks.enqueuer"
members = ["serviceAccount:{LOCAL_PRINCIPAL}"]

[[queues]]
name = "queue-brain"

[[services]]
name = "brain"
port = 0
paths = ["/process"]
""", project=PROJECT)
    try:
        results = {r.check: r for r in diagnose(
            load_settings(lenient=True, cloud_tasks_emulator_host=em.target,
                          project_id=PROJECT, tasks_region=REGION), ["brain"])}
    finally:
        em.stop()
    assert results["service"].status == "unknown"
    assert "run.services.list" in results["service"].evidence
    assert "--role=roles/run.viewer" in (results["service"].fix or "")
    assert results["invoker"].evidence == "needs: service"
    assert results["queue"].status == "pass"


def test_the_correct_stack_passes_every_check(stack, settings):
    results = diagnose(settings)
    always = [c for c, _ in CHECKS if c != "probe"]  # the probe runs only when asked for
    assert [r.check for r in results[:len(always)]] == always
    assert {r.worker for r in results} == {"brain", "testimonios", "transcripciones"}
    assert worst(results) == "pass", [r for r in results if r.status != "pass"]
    assert all(r.fix is None for r in results)
    by = {(r.worker, r.check): r for r in results}
    assert "http is accepted on the emulator only" in by["brain", "url_scheme"].evidence
    assert "700 s <= timeout 900 s" in by["brain", "deadline_vs_timeout"].evidence
    assert json.loads(json.dumps(results[0].to_dict()))["worker"] == "brain"


def test_wrong_audience(stack):
    uri = stack["env"]["AUD_BRAIN"]
    got = run(stack, aud_brain="http://127.0.0.1:1")
    assert got["audience_accepted"].status == "fail"
    assert got["audience_accepted"].fix.startswith(f"AUD_BRAIN={uri} ")
    assert "--add-custom-audiences=http://127.0.0.1:1" in got["audience_accepted"].fix
    assert got["audience"].status == "warn" and got["audience"].fix == f"AUD_BRAIN={uri}"
    assert set(failing(got)) == {"audience", "audience_accepted"}
    assert failing(run(stack, aud_brain=uri)) == {}


def test_audience_with_a_path(stack):
    uri = stack["env"]["AUD_BRAIN"]
    got = run(stack, aud_brain=f"{uri}/process")
    assert got["audience"].status == "fail" and got["audience"].fix == f"AUD_BRAIN={uri}"
    assert "path" in got["audience"].evidence
    assert got["audience_accepted"].status == "fail"
    assert set(failing(got)) == {"audience", "audience_accepted"}


def test_invoker_binding_removed(stack, settings):
    client = clients.run_client(settings)
    policy = client.get_iam_policy(
        request=iam_policy_pb2.GetIamPolicyRequest(resource=BRAIN_SERVICE), metadata=AS_OPERATOR)
    kept = policy_pb2.Policy()
    kept.CopyFrom(policy)
    broken = policy_pb2.Policy(version=policy.version, etag=policy.etag)
    broken.bindings.extend(b for b in policy.bindings if b.role != "roles/run.invoker")
    client.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
        resource=BRAIN_SERVICE, policy=broken), metadata=AS_OPERATOR)
    try:
        got = run(stack)
        assert failing(got) == {"invoker": "fail"}
        assert got["invoker"].fix == (
            f"gcloud run services add-iam-policy-binding brain "
            f"--member=serviceAccount:{LOCAL_CALLER_SA} --role=roles/run.invoker "
            f"--region={REGION} --project={PROJECT}")
        assert "grants on the project are not visible here" in got["invoker"].evidence
    finally:
        kept.etag = b""
        client.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
            resource=BRAIN_SERVICE, policy=kept), metadata=AS_OPERATOR)
    assert failing(run(stack)) == {}


def test_act_as_removed(stack, settings):
    client = clients.iam_client(settings)
    policy = client.get_iam_policy(request={"resource": CALLER_RESOURCE}, metadata=AS_OPERATOR)
    kept = policy_pb2.Policy()
    kept.CopyFrom(policy)
    # Only the act-as grant goes: the account's other grants (who may mint as it, who may
    # read its policy) are other checks' business.
    broken = policy_pb2.Policy(version=policy.version, etag=policy.etag)
    broken.bindings.extend(b for b in policy.bindings if b.role != "roles/iam.serviceAccountUser")
    client.set_iam_policy(request={"resource": CALLER_RESOURCE, "policy": broken},
                          metadata=AS_OPERATOR)
    try:
        got = run(stack)
        assert failing(got) == {"act_as": "fail"}
        assert got["act_as"].fix == (
            f"gcloud iam service-accounts add-iam-policy-binding {LOCAL_CALLER_SA} "
            f"--member=serviceAccount:{LOCAL_PRINCIPAL} --role=roles/iam.serviceAccountUser "
            f"--project={PROJECT}")
    finally:
        kept.etag = b""
        client.set_iam_policy(request={"resource": CALLER_RESOURCE, "policy": kept},
                              metadata=AS_OPERATOR)
    assert failing(run(stack)) == {}


def test_queue_paused(stack, settings):
    tasks = clients.tasks_client(settings)
    queue = settings.queue_path("queue-brain")
    tasks.pause_queue(name=queue)
    try:
        got = run(stack)
        assert failing(got) == {"queue": "warn"}
        assert got["queue"].fix == (
            f"gcloud tasks queues resume queue-brain --location={REGION} --project={PROJECT}")
    finally:
        tasks.resume_queue(name=queue)
    assert failing(run(stack)) == {}


def test_deadline_longer_than_the_service_timeout(stack):
    got = run(stack, deadline_brain_s=1000)
    assert failing(got) == {"deadline_vs_timeout": "fail"}
    assert "deadline 1000 s > timeout 900 s" in got["deadline_vs_timeout"].evidence
    assert got["deadline_vs_timeout"].fix.startswith("DEADLINE_BRAIN_S=900 ")
    assert "--timeout=1000" in got["deadline_vs_timeout"].fix


def test_url_pointing_to_no_service(stack):
    got = run(stack, url_brain="http://127.0.0.1:9/process")
    assert got["service"].status == "fail"
    assert got["service"].fix.startswith(
        f"gcloud run services list --region={REGION} --project={PROJECT}")
    assert "URL_BRAIN" in got["service"].fix
    for check in ("audience_accepted", "ingress", "deadline_vs_timeout", "invoker",
                  "capacity"):
        assert (got[check].status, got[check].evidence) == ("unknown", "needs: service")
    # AUD_BRAIN still names the real service: the configured audience is not URL_BRAIN's.
    assert set(failing(got)) == {"service", "audience", "audience_accepted", "ingress",
                                 "deadline_vs_timeout", "invoker", "capacity"}


def test_an_unreachable_emulator_is_unknown_not_a_crash(stack):
    got = run(stack, cloud_tasks_emulator_host="127.0.0.1:9")
    for check in ("service", "act_as", "create_tasks", "queue", "queue_failures"):
        assert got[check].status == "unknown", got[check]
        assert "unreachable" in got[check].evidence
    assert got["audience"].status == "pass"


def test_cli_passes_on_the_correct_stack_and_prints_the_fix_of_a_broken_one(stack):
    env = {**os.environ, "ENQUEUER_STATE": str(stack["state"])}
    for name in list(env):
        if name.startswith(("AUD_", "URL_", "DEADLINE_", "CLOUD_TASKS_")):
            del env[name]
    ok = subprocess.run([ENQUEUER, "--local", "diagnose", "--json"], capture_output=True,
                        text=True, timeout=60, env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    rows = json.loads(ok.stdout)
    assert len(rows) == 3 * (len(CHECKS) - 1)  # every check but the probe, for 3 workers
    assert {r["status"] for r in rows} == {"pass"}

    uri = stack["env"]["AUD_BRAIN"]
    bad = subprocess.run([ENQUEUER, "--local", "diagnose", "--worker", "brain"],
                         capture_output=True, text=True, timeout=60,
                         env={**env, "AUD_BRAIN": f"{uri}/process"})
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"brain audience: AUD_BRAIN={uri}" in bad.stdout
    assert "testimonios" not in bad.stdout


def test_queue_failures_name_the_audience_problem(stack, settings):
    """Last: tasks minted for a wrong audience get 401 from Cloud Run."""
    wrong = load_settings(**{**stack["base"], "aud_brain": "http://127.0.0.1:1"})
    enqueuer = Enqueuer(wrong)
    for _ in range(3):
        enqueuer.enqueue(EnqueueRequest(service="brain", payload=BRAIN_JOB), as_admin())
    tasks = clients.tasks_client(settings)
    queue = settings.queue_path("queue-brain")
    try:
        got = wait_until(lambda: (r := run(stack))["queue_failures"].status == "fail" and r
                         and "3 of 3" in r["queue_failures"].evidence and r,
                         timeout=20, interval=0.1, what="the tasks' 401s")
        result = got["queue_failures"]
        assert "3 of 3 tasks' last attempt: 401" in result.evidence
        assert "audience problem" in result.evidence
        assert f"AUD_BRAIN to {stack['env']['AUD_BRAIN']}" in result.fix
    finally:
        tasks.purge_queue(request=tasks_v2.PurgeQueueRequest(name=queue))

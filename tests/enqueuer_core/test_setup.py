"""`enqueuer setup` against a real emulator enforcing IAM: from nothing granted and a queue
missing, the plan lists every change with its gcloud line; --apply makes them as the operator;
diagnose passes; a second run has nothing to change; the enqueuer's account can then really
enqueue. What others granted survives, a concurrent policy change is retried, and a refusal
stops with the permission's name."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from google.cloud import resourcemanager_v3, run_v2, tasks_v2
from google.cloud.resourcemanager_v3.services.projects.transports import ProjectsGrpcTransport
from google.cloud.run_v2.services.services.transports import ServicesGrpcTransport
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

from enqueuer_core import clients, iam_policies
from enqueuer_core.build import EnqueueRequest
from enqueuer_core.config import LOCAL_ADMIN, load_settings
from enqueuer_core.diagnose import CHECKS
from enqueuer_core.enqueue import Enqueuer
from enqueuer_core.setup import SetupClients, SetupPlan, apply_plan, make_plan
from tests.acting import as_admin
from tests.emulator.harness import start_emulator, wait_until
from tests.enqueuer_core.test_cli import clean_env
from tests.enqueuer_core.test_devstack import ENQUEUER, start_dev, stop_dev
from tests.gcloud_cli import check_command

PROJECT, REGION = "setup-project", "us-central1"
LOCATION = f"projects/{PROJECT}/locations/{REGION}"
CALLER = f"caller@{PROJECT}.iam.gserviceaccount.com"
API_SA = f"enqueuer-api@{PROJECT}.iam.gserviceaccount.com"
DASHBOARD_SA = f"enqueuer-dashboard@{PROJECT}.iam.gserviceaccount.com"
WORKERS = {"brain": ("BRAIN", "/process"), "testimonios": ("TESTI", "/generate-testimony"),
           "transcripciones": ("TRANS", "/api/transcribe")}
BRAIN_JOB = {f: "doc" for f in ("system_instructions_doc_id", "base_prompt_doc_id",
                                "input_doc_id", "output_doc_id")}
# What `enqueuer diagnose` runs for each worker (the probe only when asked for).
RUN_CHECKS = [c for c, _ in CHECKS if c != "probe"]
OPERATOR_ROLES = ("roles/cloudtasks.admin", "roles/iam.serviceAccountAdmin",
                  "roles/resourcemanager.projectIamAdmin", "roles/run.admin")


def emulator_config(operator_roles: tuple[str, ...] = OPERATOR_ROLES,
                    principal: str = API_SA) -> str:
    """Nothing granted to the enqueuer's accounts, and queue-transcripciones missing; calls
    without a principal of their own come from ``principal``."""
    bindings = "\n".join(f'[[iam.bindings]]\nrole = "{r}"\nmembers = ["{LOCAL_ADMIN}"]\n'
                         for r in operator_roles)
    services = "\n".join(f'[[services]]\nname = "{w}"\nport = 0\npaths = ["{p}"]\n'
                         f"timeout_s = 900\n" for w, (_, p) in WORKERS.items())
    return f"""
[iam]
enforce = true
principal = "serviceAccount:{principal}"
{bindings}
[[service_accounts]]
email = "{CALLER}"

[[queues]]
name = "queue-brain"

[[queues]]
name = "queue-testimonios"

{services}"""


@dataclass
class SetupStack:
    target: str
    env: dict[str, str]  # the settings, as environment variables

    def settings(self, **overrides: object):
        base = {k.lower(): v for k, v in self.env.items() if k.isupper()}
        return load_settings(**{**base, **overrides})

    def enqueuer(self, *args: str,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([ENQUEUER, *args], capture_output=True, text=True, timeout=60,
                              env={**clean_env(), **self.env, **(env or {})})
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def as_operator(self, client_cls, transport_cls):
        channel = grpc.intercept_channel(grpc.insecure_channel(self.target),
                                         clients.ActingAs(LOCAL_ADMIN))
        return client_cls(transport=transport_cls(channel=channel))


def start(tmp_path: Path, operator_roles: tuple[str, ...] = OPERATOR_ROLES,
          workers_file: str = "", principal: str = API_SA):
    em = start_emulator(tmp_path, emulator_config(operator_roles, principal), project=PROJECT)
    channel = grpc.intercept_channel(grpc.insecure_channel(em.target),
                                     clients.ActingAs(LOCAL_ADMIN))
    run = run_v2.ServicesClient(transport=ServicesGrpcTransport(channel=channel))
    try:
        urls = {s.name.rsplit("/", 1)[1]: s.uri for s in run.list_services(parent=LOCATION)}
    except BaseException:
        em.stop()  # the caller never gets it to stop
        raise
    env = {"CLOUD_TASKS_EMULATOR_HOST": em.target, "PROJECT_ID": PROJECT,
           "TASKS_REGION": REGION, "CALLER_SA": CALLER, "API_SA": API_SA,
           "DASHBOARD_SA": DASHBOARD_SA}
    for worker, (short, path) in WORKERS.items():
        env[f"URL_{short}"] = urls[worker] + path
    if workers_file:
        env["WORKERS_FILE"] = workers_file
    return em, SetupStack(em.target, env)


@contextlib.contextmanager
def set_up(tmp_path: Path) -> Iterator[SetupStack]:
    """A stack `enqueuer setup --apply` has set up; diagnostics run as the dashboard's
    account, as they do in production."""
    em, stack = start(tmp_path, principal=DASHBOARD_SA)
    try:
        settings = stack.settings()
        c = SetupClients.build(settings)
        apply_plan(make_plan(settings, c), c, as_admin())
        yield stack
    finally:
        em.stop()


@pytest.fixture
def stack(tmp_path):
    em, stack = start(tmp_path)
    try:
        yield stack
    finally:
        em.stop()


def tasks_agent(stack: SetupStack) -> str:
    """The Cloud Tasks service agent, named by the number the emulator answers."""
    projects = stack.as_operator(resourcemanager_v3.ProjectsClient, ProjectsGrpcTransport)
    number = projects.get_project(name=f"projects/{PROJECT}").name.rsplit("/", 1)[-1]
    return f"serviceAccount:service-{number}@gcp-sa-cloudtasks.iam.gserviceaccount.com"


def queue_policy(stack: SetupStack, queue: str):
    client = stack.as_operator(tasks_v2.CloudTasksClient, CloudTasksGrpcTransport)
    return client.get_iam_policy(
        request=iam_policies.policy_request(f"{LOCATION}/queues/{queue}"))


def test_from_nothing_to_a_working_setup_and_then_nothing_to_change(stack):
    planned = stack.enqueuer("setup", "--json")
    assert planned.returncode == 10, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["principal"] == LOCAL_ADMIN
    todo = {(c["status"], c["kind"], c.get("resource", "").rsplit("/", 1)[-1], c.get("role"),
             c.get("member")) for c in plan["changes"] if c["status"] != "kept"}
    api, dash = f"serviceAccount:{API_SA}", f"serviceAccount:{DASHBOARD_SA}"
    expected = {("create", "account", API_SA, None, None),
                ("create", "account", DASHBOARD_SA, None, None),
                ("create", "queue", "queue-transcripciones", None, None),
                ("add", "binding", CALLER, "roles/iam.serviceAccountUser", api),
                ("add", "binding", CALLER, "roles/iam.serviceAccountUser", dash),
                # Cloud Tasks mints the tasks' tokens as CALLER (setup step 3 of the original
                # service); the Probe mints as it, and diagnostics read who may.
                ("add", "binding", CALLER, "roles/iam.serviceAccountTokenCreator",
                 tasks_agent(stack)),
                ("add", "binding", CALLER, "roles/iam.serviceAccountOpenIdTokenCreator", dash),
                ("add", "binding", CALLER, "roles/iam.serviceAccountViewer", dash),
                ("add", "binding", PROJECT, "roles/run.viewer", dash),
                # The dashboard reads history (attempts, dead letters, activity) from Logging.
                ("add", "binding", PROJECT, "roles/logging.viewer", dash)}
    for queue in ("queue-brain", "queue-testimonios", "queue-transcripciones"):
        expected |= {("add", "binding", queue, "roles/cloudtasks.enqueuer", api),
                     ("add", "binding", queue, "roles/cloudtasks.editor", dash)}
    for worker in WORKERS:
        expected.add(("add", "binding", worker, "roles/run.invoker", f"serviceAccount:{CALLER}"))
    assert todo == expected
    assert {c["what"].split(" (")[0] for c in plan["changes"] if c["status"] == "kept"} == {
        f"service account {CALLER}", "queue queue-brain", "queue queue-testimonios"}
    for change in plan["changes"]:
        check_command(change["gcloud"])

    # The human form: each change with its gcloud equivalent, and who it acts as.
    shown = stack.enqueuer("setup")
    assert shown.returncode == 10
    assert f"acting as {LOCAL_ADMIN}" in shown.stdout
    assert ("$ gcloud tasks queues create queue-transcripciones --location=us-central1 "
            f"--project={PROJECT}") in shown.stdout
    assert (f"$ gcloud run services add-iam-policy-binding brain --region={REGION} "
            f"--member=serviceAccount:{CALLER} --role=roles/run.invoker "
            f"--project={PROJECT}") in shown.stdout
    assert (f"$ gcloud projects add-iam-policy-binding {PROJECT} --member={dash} "
            "--role=roles/logging.viewer --condition=None") in shown.stdout
    assert (f"$ gcloud iam service-accounts add-iam-policy-binding {CALLER} "
            f"--member={tasks_agent(stack)} --role=roles/iam.serviceAccountTokenCreator "
            f"--project={PROJECT}") in shown.stdout
    assert "3 to create, 16 to add, 3 kept." in shown.stdout

    applied = stack.enqueuer("setup", "--apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "Applied 19 change(s)" in applied.stdout
    assert "Checking what it touched (enqueuer diagnose)" in applied.stdout
    # Every check of the 3 workers passes (the service agent's included).
    assert applied.stdout.rstrip().endswith(f"\n{3 * len(RUN_CHECKS)} pass"), applied.stdout

    again = stack.enqueuer("setup")
    assert again.returncode == 0, again.stdout
    assert "Nothing to change." in again.stdout and "22 kept." in again.stdout
    assert stack.enqueuer("setup", "--apply").returncode == 0  # a second apply changes nothing
    assert "Nothing was changed." in stack.enqueuer("setup", "--apply").stdout

    # The grants work: the API's own account enqueues, and the job gets through Cloud Run's
    # door with the caller account's token.
    settings = stack.settings()
    tasks = clients.tasks_client(settings, f"serviceAccount:{API_SA}")
    result = Enqueuer(settings, client=tasks).enqueue(
        EnqueueRequest(service="brain", payload=BRAIN_JOB), as_admin())
    brain = settings.url_brain.rsplit("/", 1)[0]

    def delivered():
        got = httpx.get(f"{brain}/_requests", timeout=5).json()
        got = got.get("requests", got) if isinstance(got, dict) else got
        return [r for r in got if dict((k.lower(), v) for k, v in r["headers"]).get(
            "x-idempotency-key") == result.idempotency_key]

    (request,) = wait_until(delivered, timeout=20, interval=0.1, what="brain got the job")
    assert request["claims"]["email"] == CALLER
    # The dashboard's account enqueues too (roles/cloudtasks.editor on the queue).
    dashboard = clients.tasks_client(settings, f"serviceAccount:{DASHBOARD_SA}")
    Enqueuer(settings, client=dashboard).enqueue(
        EnqueueRequest(service="testimonios", payload={}, schedule_in_s=3600), as_admin())


def test_what_others_granted_survives_and_a_concurrent_change_is_retried(stack):
    tasks = stack.as_operator(tasks_v2.CloudTasksClient, CloudTasksGrpcTransport)
    brain = f"{LOCATION}/queues/queue-brain"
    policy = tasks.get_iam_policy(request=iam_policies.policy_request(brain))
    iam_policies.add_members(policy, "roles/cloudtasks.viewer", ["user:auditor@example.com"])
    tasks.set_iam_policy(request={"resource": brain, "policy": policy})

    class Racer(grpc.UnaryUnaryClientInterceptor):
        """Before setup's first write of queue-brain's policy, someone else writes it."""

        def __init__(self) -> None:
            self.writes: list[grpc.StatusCode] = []

        def intercept_unary_unary(self, continuation, details, request):
            is_write = (details.method.endswith("/SetIamPolicy")
                        and getattr(request, "resource", "") == brain)
            if is_write and not self.writes:
                other = tasks.get_iam_policy(request=iam_policies.policy_request(brain))
                iam_policies.add_members(other, "roles/cloudtasks.viewer",
                                         ["user:racer@example.com"])
                tasks.set_iam_policy(request={"resource": brain, "policy": other})
            answer = continuation(details, request)
            if is_write:
                self.writes.append(answer.code())
            return answer

    racer = Racer()
    settings = stack.settings()
    c = SetupClients.build(settings)
    channel = grpc.intercept_channel(grpc.insecure_channel(stack.target), racer,
                                     clients.ActingAs(LOCAL_ADMIN))
    c.tasks = tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
    apply_plan(make_plan(settings, c), c, as_admin())

    assert racer.writes[0] == grpc.StatusCode.ABORTED  # the etag no longer matched
    assert racer.writes[-1] == grpc.StatusCode.OK and len(racer.writes) == 2
    after = queue_policy(stack, "queue-brain")
    viewers = iam_policies.roles_of(after, "user:auditor@example.com")
    assert viewers == {"roles/cloudtasks.viewer"}
    assert iam_policies.roles_of(after, "user:racer@example.com") == {"roles/cloudtasks.viewer"}
    assert iam_policies.roles_of(after, f"serviceAccount:{API_SA}") == {
        "roles/cloudtasks.enqueuer"}
    assert not make_plan(settings, c).to_change


def test_a_refusal_names_the_permission_and_what_was_done(tmp_path):
    # This operator may do everything but change Cloud Run's policies.
    roles = ("roles/cloudtasks.admin", "roles/iam.serviceAccountAdmin",
             "roles/resourcemanager.projectIamAdmin", "roles/run.viewer")
    em, stack = start(tmp_path, roles)
    try:
        refused = stack.enqueuer("setup", "--apply")
        assert refused.returncode == 4, refused.stdout + refused.stderr
        error = refused.stderr
        assert "run.services.setIamPolicy" in error and "roles/run.admin" in error
        assert f"Google refused {LOCAL_ADMIN}" in error
        assert "Done so far: create service account" in error
        assert "add roles/cloudtasks.enqueuer" in error

        as_json = stack.enqueuer("setup", "--apply", "--json")
        assert as_json.returncode == 4
        body = json.loads(as_json.stdout)
        assert body["ok"] is False and body["error"]["code"] == "permission_denied"
        assert {c["kind"] for c in body["error"]["refused"]} == {"binding"}

        left = json.loads(stack.enqueuer("setup", "--json").stdout)
        # It stopped at the first service's policy: the queues, the accounts and their
        # bindings were done before; the services' and the project's grants are left.
        assert {c["role"] for c in left["changes"] if c["status"] != "kept"} == {
            "roles/run.invoker", "roles/run.viewer", "roles/logging.viewer"}
    finally:
        em.stop()


def test_the_workers_file_sets_the_queue_and_worker_limits_the_run(tmp_path):
    workers = tmp_path / "workers.toml"
    workers.write_text("[workers.brain]\nrate_limits = { max_dispatches_per_second = 5 }\n"
                       "retry_config = { max_attempts = 7, min_backoff_s = 2 }\n")
    em, stack = start(tmp_path, workers_file=str(workers))
    try:
        plan = json.loads(stack.enqueuer("setup", "--worker", "brain", "--json").stdout)
        assert plan["workers"] == ["brain"]
        [update] = [c for c in plan["changes"] if c["kind"] == "queue"]
        assert update["status"] == "update"
        assert update["detail"] == ("rate_limits.max_dispatches_per_second: 500.0 -> 5.0; "
                                    "retry_config.max_attempts: 100 -> 7; "
                                    "retry_config.min_backoff_s: 0.1 -> 2.0")
        assert update["gcloud"] == (
            "gcloud tasks queues update queue-brain --location=us-central1 "
            "--max-dispatches-per-second=5 --max-attempts=7 --min-backoff=2s "
            f"--project={PROJECT}")
        assert not [c for c in plan["changes"] if "testimonios" in c["what"]]

        assert stack.enqueuer("setup", "--worker", "brain", "--apply").returncode == 0
        queue = stack.as_operator(tasks_v2.CloudTasksClient, CloudTasksGrpcTransport) \
            .get_queue(name=f"{LOCATION}/queues/queue-brain")
        assert queue.rate_limits.max_dispatches_per_second == 5
        assert queue.retry_config.max_attempts == 7
        assert queue.retry_config.min_backoff.total_seconds() == 2
        # The other workers were left alone.
        assert stack.enqueuer("setup", "--worker", "testimonios").returncode == 10
        unknown = stack.enqueuer("setup", "--worker", "nope")
        assert unknown.returncode == 2 and "use one of brain" in unknown.stderr
    finally:
        em.stop()


def test_without_the_rights_to_read_the_plan_says_what_it_cannot_see(tmp_path):
    em, stack = start(tmp_path, ("roles/cloudtasks.admin", "roles/run.viewer"))
    try:
        shown = stack.enqueuer("setup")
        assert shown.returncode == 10
        assert "UNKNOWN" in shown.stdout and "iam.serviceAccounts.get" in shown.stdout
    finally:
        em.stop()



def test_without_the_project_number_the_service_agent_grant_is_described(stack):
    settings = stack.settings()
    c = SetupClients.build(settings)
    # Resource Manager shows nothing of the project (its number included) to this one.
    c.projects = clients.projects_client(settings, "user:stranger@example.com")
    plan = make_plan(settings, c)
    (agent,) = [ch for ch in plan.changes if "service agent" in ch.what]
    assert agent.status == "unknown"
    assert "service-PROJECT_NUMBER@gcp-sa-cloudtasks.iam.gserviceaccount.com" in agent.what
    assert "resourcemanager.projects.get" in agent.detail
    assert agent.to_dict()["role"] == "roles/iam.serviceAccountTokenCreator"
    check_command(agent.gcloud)
    # apply_plan cannot make it (the agent has no name yet) and does not try.
    alone = SetupPlan(plan.principal, plan.project, plan.workers, [agent])
    assert apply_plan(alone, c, as_admin()) == []


def test_the_dev_stack_is_what_setup_makes(tmp_path):
    state = tmp_path / "state"
    proc, _ = start_dev(state, "--no-api", "--no-dashboard")
    try:
        env = {**clean_env(), "ENQUEUER_STATE": str(state)}
        shown = subprocess.run([ENQUEUER, "--local", "setup"], capture_output=True, text=True,
                               timeout=60, env=env)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert f"acting as {LOCAL_ADMIN}" in shown.stdout
        assert "Nothing to change." in shown.stdout and "UNKNOWN" not in shown.stdout
        applied = subprocess.run([ENQUEUER, "--local", "setup", "--apply"],
                                 capture_output=True, text=True, timeout=60, env=env)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert "Nothing was changed." in applied.stdout
        assert applied.stdout.rstrip().endswith(f"\n{3 * len(RUN_CHECKS)} pass"), applied.stdout
    finally:
        assert stop_dev(proc) == 0

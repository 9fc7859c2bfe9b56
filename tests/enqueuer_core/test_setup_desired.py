"""The desired state of `enqueuer setup` (pure): least privilege, on resources, and every line
a real gcloud command."""

from __future__ import annotations

import pytest

from enqueuer_core.config import load_settings
from enqueuer_core.errors import ConfigError
from enqueuer_core.setup.desired import desired_state
from enqueuer_core.workers import load_registry
from tests.enqueuer_core.test_config import GOOGLE
from tests.gcloud_cli import check_command

LOCATION = "projects/acme/locations/europe-west1"
SERVICES = {"brain": f"{LOCATION}/services/brain", "testimonios": f"{LOCATION}/services/testi",
            "transcripciones": None}


@pytest.fixture
def settings(monkeypatch, tmp_path):
    for name in ("CLOUD_TASKS_EMULATOR_HOST", "WORKERS_FILE", "API_SA", "DASHBOARD_SA"):
        monkeypatch.delenv(name, raising=False)
    workers = tmp_path / "workers.toml"
    workers.write_text("""
[workers.brain]
rate_limits = { max_dispatches_per_second = 5, max_concurrent_dispatches = 10 }
[workers.brain.retry_config]
max_attempts = 5
min_backoff_s = 0.5
max_backoff_s = 60
max_doublings = 3
max_retry_duration_s = 86400
""")
    return load_settings(**GOOGLE, workers_file=str(workers))


def test_each_account_gets_only_what_it_needs_on_the_resource_itself(settings):
    state = desired_state(settings, load_registry(settings), SERVICES,
                          project_number="123456789012")
    api = "serviceAccount:enqueuer-api@acme.iam.gserviceaccount.com"
    dash = "serviceAccount:enqueuer-dashboard@acme.iam.gserviceaccount.com"
    caller = "serviceAccount:caller@acme.iam.gserviceaccount.com"
    grants = {(g.scope, g.resource.rsplit("/", 1)[-1], g.role, g.member) for g in state.grants}
    for queue in ("queue-brain", "queue-testimonios", "queue-transcripciones"):
        assert ("queue", queue, "roles/cloudtasks.enqueuer", api) in grants
        assert ("queue", queue, "roles/cloudtasks.editor", dash) in grants
    sa = "caller@acme.iam.gserviceaccount.com"
    assert ("service_account", sa, "roles/iam.serviceAccountUser", api) in grants
    assert ("service_account", sa, "roles/iam.serviceAccountUser", dash) in grants
    # Cloud Tasks mints the tasks' tokens as the caller account; the Probe mints as it too,
    # and the diagnostics read who may (the service_agent check).
    agent = "serviceAccount:service-123456789012@gcp-sa-cloudtasks.iam.gserviceaccount.com"
    assert ("service_account", sa, "roles/iam.serviceAccountTokenCreator", agent) in grants
    assert ("service_account", sa, "roles/iam.serviceAccountOpenIdTokenCreator", dash) in grants
    assert ("service_account", sa, "roles/iam.serviceAccountViewer", dash) in grants
    assert ("run_service", "brain", "roles/run.invoker", caller) in grants
    assert ("run_service", "testi", "roles/run.invoker", caller) in grants
    assert ("project", "acme", "roles/run.viewer", dash) in grants
    # Nothing on the project for Cloud Tasks: the roles sit on each queue.
    assert not [g for g in state.grants if g.scope == "project" and "cloudtasks" in g.role]
    assert len(grants) == len(state.grants) == 15
    assert state.agent_unknown is None
    assert [a.email for a in state.accounts] == [
        "caller@acme.iam.gserviceaccount.com", "enqueuer-api@acme.iam.gserviceaccount.com",
        "enqueuer-dashboard@acme.iam.gserviceaccount.com"]
    # A worker with no Cloud Run service cannot get its grant: it is reported instead.
    assert [m.worker for m in state.missing_services] == ["transcripciones"]


def test_the_dashboard_may_read_history_from_cloud_logging_and_nobody_else(settings):
    state = desired_state(settings, load_registry(settings), SERVICES)
    (grant,) = [g for g in state.grants if g.role.startswith("roles/logging.")]
    assert (grant.scope, grant.resource, grant.role, grant.member) == (
        "project", "projects/acme", "roles/logging.viewer",
        "serviceAccount:enqueuer-dashboard@acme.iam.gserviceaccount.com")
    assert "attempts, dead letters, activity" in grant.why and "Cloud Logging" in grant.why
    assert grant.gcloud() == (
        "gcloud projects add-iam-policy-binding acme "
        "--member=serviceAccount:enqueuer-dashboard@acme.iam.gserviceaccount.com "
        "--role=roles/logging.viewer --condition=None")
    assert check_command(grant.gcloud()) == ["projects", "add-iam-policy-binding"]


def test_every_printed_command_is_one_the_installed_gcloud_accepts(settings):
    state = desired_state(settings, load_registry(settings), SERVICES)
    lines = ([a.gcloud() for a in state.accounts] + [g.gcloud() for g in state.grants]
             + [q.gcloud() for q in state.queues] + [q.gcloud("update") for q in state.queues]
             + [m.gcloud() for m in state.missing_services])
    paths = {" ".join(check_command(line)) for line in lines}
    assert paths == {
        "iam service-accounts create", "iam service-accounts add-iam-policy-binding",
        "tasks queues add-iam-policy-binding", "run services add-iam-policy-binding",
        "projects add-iam-policy-binding", "tasks queues create", "tasks queues update",
        "run services list"}


def test_the_workers_file_configures_the_queue_as_gcloud_would(settings):
    state = desired_state(settings, load_registry(settings), SERVICES, workers=["brain"])
    [queue] = state.queues
    assert queue.gcloud() == (
        "gcloud tasks queues create queue-brain --location=europe-west1 "
        "--max-dispatches-per-second=5 --max-concurrent-dispatches=10 --max-attempts=5 "
        "--min-backoff=0.5s --max-backoff=60s --max-doublings=3 --max-retry-duration=86400s "
        "--project=acme")
    # --worker limits the queues and services, not the accounts every worker shares.
    assert {g.resource.rsplit("/", 1)[-1] for g in state.grants if g.scope == "queue"} == {
        "queue-brain"}
    assert len(state.accounts) == 3


def test_one_account_in_two_parts_gets_each_grant_once(monkeypatch, settings):
    same = load_settings(**GOOGLE, api_sa="enqueuer@acme.iam.gserviceaccount.com",
                         dashboard_sa="enqueuer@acme.iam.gserviceaccount.com")
    state = desired_state(same, load_registry(same), SERVICES)
    keys = [(g.resource, g.role, g.member) for g in state.grants]
    assert len(keys) == len(set(keys))
    assert [a.email for a in state.accounts] == [
        "caller@acme.iam.gserviceaccount.com", "enqueuer@acme.iam.gserviceaccount.com"]


def test_workers_sharing_a_queue_must_agree_on_its_configuration(tmp_path, monkeypatch):
    monkeypatch.delenv("CLOUD_TASKS_EMULATOR_HOST", raising=False)
    workers = tmp_path / "workers.toml"
    workers.write_text("""
[workers.brain]
rate_limits = { max_dispatches_per_second = 5 }

[workers.otro]
url = "https://otro-abc.a.run.app/x"
queue = "queue-brain"
rate_limits = { max_dispatches_per_second = 50 }
""")
    s = load_settings(**GOOGLE, workers_file=str(workers))
    with pytest.raises(ConfigError, match="brain, otro share the queue queue-brain"):
        desired_state(s, load_registry(s), SERVICES)


def test_a_queue_configuration_google_would_refuse_is_refused_at_load(tmp_path, monkeypatch):
    monkeypatch.delenv("CLOUD_TASKS_EMULATOR_HOST", raising=False)
    workers = tmp_path / "workers.toml"
    workers.write_text("[workers.brain]\nretry_config = { min_backoff_s = 10, "
                       "max_backoff_s = 1 }\n")
    with pytest.raises(ConfigError, match=r"min_backoff_s = 10\.0 is more than max_backoff_s"):
        load_registry(load_settings(**GOOGLE, workers_file=str(workers)))
    workers.write_text("[workers.brain]\nrate_limits = { max_dispatches_per_second = 501 }\n")
    with pytest.raises(ConfigError, match="max_dispatches_per_second"):
        load_registry(load_settings(**GOOGLE, workers_file=str(workers)))


def test_the_service_agent_is_named_by_the_project_number_or_its_grant_is_described(settings):
    known = desired_state(settings, load_registry(settings), SERVICES,
                          project_number="123456789012")
    (grant,) = [g for g in known.grants if g.role == "roles/iam.serviceAccountTokenCreator"]
    assert grant.gcloud() == (
        "gcloud iam service-accounts add-iam-policy-binding caller@acme.iam.gserviceaccount.com "
        "--member=serviceAccount:service-123456789012@gcp-sa-cloudtasks.iam.gserviceaccount.com "
        "--role=roles/iam.serviceAccountTokenCreator --project=acme")
    assert "Cloud Tasks mints the tasks' OIDC tokens as it" in grant.what
    assert check_command(grant.gcloud()) == ["iam", "service-accounts", "add-iam-policy-binding"]

    # Without the number (Resource Manager would not show it) the grant cannot be made: it is
    # described, with the command that shows the number.
    unknown = desired_state(settings, load_registry(settings), SERVICES)
    assert not [g for g in unknown.grants if g.role == "roles/iam.serviceAccountTokenCreator"]
    agent = unknown.agent_unknown
    assert agent is not None
    assert "service-PROJECT_NUMBER@gcp-sa-cloudtasks.iam.gserviceaccount.com" in agent.what
    assert "gcloud projects describe acme --format=value(projectNumber)" in agent.what
    assert check_command(agent.gcloud()) == ["iam", "service-accounts", "add-iam-policy-binding"]

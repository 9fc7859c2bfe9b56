"""`enqueuer deploy`: a script of exact gcloud commands that deploys both services closed by
default. Each command is checked against the installed gcloud's command tree, and the script
is run by bash with a recording `gcloud` on PATH to see what each call really receives."""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from enqueuer_core.config import load_settings
from enqueuer_core.deploy import deploy_plan
from enqueuer_core.errors import ConfigError, InvalidRequest
from tests.enqueuer_core.test_config import GOOGLE
from tests.enqueuer_core.test_devstack import ENQUEUER
from tests.gcloud_cli import check_command

ROOT = Path(__file__).resolve().parents[2]
ACCESS = '[access]\n"user:ana@example.com" = "admin"\n"domain:example.com" = "viewer"\n'

# Stands in for gcloud when the script runs: records each call, answers a project number.
RECORDER = """#!/usr/bin/env bash
printf '%s\\0' "$@" >> "$GCLOUD_CALLS"; printf '\\n' >> "$GCLOUD_CALLS"
if [ "$1 $2" = "projects describe" ]; then echo 123456789012; fi
if [ "$1 $2 $3" = "artifacts repositories describe" ]; then exit 1; fi
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A build context as a deployment keeps it: the repository's .dockerignore, and a workers
    file in deploy/ whose [access] names an admin."""
    repo = tmp_path / "repo"
    (repo / "deploy").mkdir(parents=True)
    (repo / ".dockerignore").write_text((ROOT / ".dockerignore").read_text())
    (repo / "deploy" / "workers.toml").write_text(ACCESS)
    return repo


@pytest.fixture
def settings(monkeypatch, repo):
    for name in ("CLOUD_TASKS_EMULATOR_HOST", "WORKERS_FILE", "API_SA", "DASHBOARD_SA",
                 "API_AUTH", "API_AUDIENCE", "DASHBOARD_AUTH", "IAP_AUDIENCE", "AUDIT_PAYLOADS"):
        monkeypatch.delenv(name, raising=False)
    return load_settings(**GOOGLE, workers_file=str(repo / "deploy" / "workers.toml"))


def run_script(script: str, tmp_path: Path) -> list[list[str]]:
    """Run the script with the recorder as gcloud; the argv of each gcloud call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(RECORDER)
    gcloud.chmod(gcloud.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls"
    path = tmp_path / "deploy.sh"
    path.write_text(script)
    subprocess.run(["bash", str(path)], check=True, capture_output=True, cwd=tmp_path,
                   env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
                        "GCLOUD_CALLS": str(calls)}, timeout=30)
    return [line.split("\0")[:-1] for line in calls.read_text().splitlines() if line]


def env_of(call: list[str]) -> dict[str, str]:
    flag = next(a for a in call if a.startswith("--set-env-vars="))
    body = flag.removeprefix("--set-env-vars=")
    assert body.startswith("^|^")  # gcloud's escape: values may hold commas
    return dict(kv.split("=", 1) for kv in body[3:].split("|"))


def test_the_script_deploys_both_services_closed_by_default(settings, repo, tmp_path):
    plan = deploy_plan(settings, repo, api_callers=["serviceAccount:intake@acme.iam."
                                                    "gserviceaccount.com"],
                       dashboard_users=["ana@example.com", "domain:example.com"])
    calls = run_script(plan.script(), tmp_path)
    by_path = {}
    for call in calls:
        path = check_command(["gcloud", *call])  # the installed gcloud knows each of them
        by_path.setdefault(" ".join(path), []).append(call)
    api = by_path["run deploy"][0]
    dashboard = by_path["beta run deploy"][0]
    for call in (api, dashboard):
        assert "--no-allow-unauthenticated" in call
        assert not [a for a in call if a.startswith("--allow-unauthenticated")]
    assert api[2] == "enqueuer-api" and dashboard[3] == "enqueuer-dashboard"
    assert "--service-account=enqueuer-api@acme.iam.gserviceaccount.com" in api
    assert "--service-account=enqueuer-dashboard@acme.iam.gserviceaccount.com" in dashboard
    assert "--iap" in dashboard and "--args=dashboard" in dashboard
    assert "--image=europe-west1-docker.pkg.dev/acme/enqueuer/enqueuer:latest" in api
    # Every setting the API reads, and the audience of its own deterministic URL.
    api_url = "https://enqueuer-api-123456789012.europe-west1.run.app"
    env = env_of(api)
    assert env["API_AUDIENCE"] == api_url
    assert env["API_AUTH"] == "google"  # the API checks the caller's token again
    assert env["WORKERS_FILE"] == "/app/deploy/workers.toml"  # with [access] in it
    for name in ("PROJECT_ID", "TASKS_REGION", "CALLER_SA", "URL_BRAIN", "URL_TESTI",
                 "URL_TRANS", "AUD_BRAIN", "AUD_TESTI", "AUD_TRANS", "QUEUE_BRAIN",
                 "QUEUE_TESTI", "QUEUE_TRANS", "DEADLINE_BRAIN_S", "DEADLINE_TESTI_S",
                 "DEADLINE_TRANS_S", "API_SA", "DASHBOARD_SA"):
        assert env[name] == str(getattr(settings, name.lower())), name
    assert "CLOUD_TASKS_EMULATOR_HOST" not in env
    assert "DASHBOARD_AUTH" not in env and "IAP_AUDIENCE" not in env
    dashboard_env = env_of(dashboard)
    assert dashboard_env["ENQUEUER_API_URL"] == api_url
    # The dashboard knows its user from IAP's assertion, signed for this very service.
    assert dashboard_env["DASHBOARD_AUTH"] == "iap"
    assert dashboard_env["IAP_AUDIENCE"] == (
        "/projects/123456789012/locations/europe-west1/services/enqueuer-dashboard")
    assert "API_AUTH" not in dashboard_env and "API_AUDIENCE" not in dashboard_env
    # Each service starts with the settings it gets (as the API and the dashboard check).
    def started(process_env: dict[str, str]):
        return load_settings(**{k.lower(): v for k, v in process_env.items()
                                if k != "WORKERS_FILE"})
    started(env).check_api_auth()
    started(dashboard_env).check_dashboard_auth()
    # Who may get in: the API's caller, IAP's agent on the dashboard, the dashboard's users.
    invokers = [(c[3], _flag(c, "--member"))
                for c in by_path["run services add-iam-policy-binding"]]
    assert invokers == [
        ("enqueuer-api", "serviceAccount:intake@acme.iam.gserviceaccount.com"),
        ("enqueuer-dashboard",
         "serviceAccount:service-123456789012@gcp-sa-iap.iam.gserviceaccount.com")]
    users = by_path["beta iap web add-iam-policy-binding"]
    assert [(_flag(c, "--member"), _flag(c, "--role"), _flag(c, "--resource-type"))
            for c in users] == [
        ("user:ana@example.com", "roles/iap.httpsResourceAccessor", "cloud-run"),
        ("domain:example.com", "roles/iap.httpsResourceAccessor", "cloud-run")]
    # The repository is created when describing it fails, and the image built from here.
    assert "artifacts repositories create" in by_path
    assert by_path["builds submit"][0][2:] == [
        ".", "--tag=europe-west1-docker.pkg.dev/acme/enqueuer/enqueuer:latest",
        "--project=acme"]


def _flag(call: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in call if a.startswith(name + "="))


def test_audit_payloads_reaches_both_services_when_set(settings, repo, tmp_path, monkeypatch):
    default = deploy_plan(settings, repo, dashboard_users=["ana@example.com"])
    assert "AUDIT_PAYLOADS" not in default.script()  # the default, unasked: plans as before
    monkeypatch.setenv("AUDIT_PAYLOADS", "full")
    full = load_settings(**GOOGLE, workers_file=str(repo / "deploy" / "workers.toml"))
    calls = run_script(deploy_plan(full, repo, dashboard_users=["ana@example.com"]).script(),
                       tmp_path)
    deploys = [c for c in calls if "deploy" in c[:3]]
    assert len(deploys) == 2  # the API and the dashboard both enqueue
    assert [env_of(c)["AUDIT_PAYLOADS"] for c in deploys] == ["full", "full"]


def test_with_no_callers_the_grants_are_examples_left_commented_out(settings, repo, tmp_path):
    plan = deploy_plan(settings, repo)
    script = plan.script()
    calls = run_script(script, tmp_path)
    assert not [c for c in calls if "add-iam-policy-binding" in c and "iap" in c]
    assert [c[3] for c in calls if c[:3] == ["run", "services", "add-iam-policy-binding"]] == [
        "enqueuer-dashboard"]  # only IAP's agent
    commented = [line for line in script.splitlines() if line.startswith("# gcloud")]
    assert len(commented) == 2
    for c in plan.commands:
        if c.example:
            check_command(c.words())


def test_a_workers_file_in_the_repository_is_found_in_the_image(repo, tmp_path):
    (repo / "deploy" / "schemas").mkdir(parents=True)
    (repo / "dev").mkdir()
    workers = repo / "deploy" / "workers.toml"
    workers.write_text(ACCESS + '[workers.brain]\nschema_file = "schemas/brain.json"\n')
    (repo / "deploy" / "schemas" / "brain.json").write_text('{"type": "object"}')
    s = load_settings(**GOOGLE, workers_file=str(workers))
    assert "WORKERS_FILE=/app/deploy/workers.toml" in deploy_plan(s, repo).script()

    outside = load_settings(**GOOGLE, workers_file=str(tmp_path / "workers.toml"))
    with pytest.raises(ConfigError, match="outside the repository"):
        deploy_plan(outside, repo)
    # Where .dockerignore leaves it out (dev/ is not in the image), deploy says so.
    left_out = repo / "dev" / "workers.toml"
    left_out.write_text("")
    with pytest.raises(ConfigError, match=r"left out of the image by the line 'dev'"):
        deploy_plan(load_settings(**GOOGLE, workers_file=str(left_out)), repo)
    workers.write_text(ACCESS + '[workers.brain]\nschema_file = "../tests/brain.json"\n')
    with pytest.raises(ConfigError, match=r"tests/brain\.json .* line 'tests'"):
        deploy_plan(s, repo)


def test_bad_input_is_refused_with_the_fix(settings, repo, monkeypatch):
    with pytest.raises(InvalidRequest, match=r"--api-caller 'intake' is not an IAM member"):
        deploy_plan(settings, repo, api_callers=["intake"])
    monkeypatch.setenv("CLOUD_TASKS_EMULATOR_HOST", "127.0.0.1:8123")
    with pytest.raises(ConfigError, match="unset CLOUD_TASKS_EMULATOR_HOST"):
        deploy_plan(load_settings(), repo)


def test_a_deployment_nobody_could_use_is_refused_showing_the_lines_to_add(settings, repo):
    """On Google nobody has a role without [access]: the workers file must name an admin."""
    workers = repo / "deploy" / "workers.toml"
    add = '[access]\n"user:YOU@example.com" = "admin"\n'
    with pytest.raises(ConfigError, match="needs a workers file") as no_file:
        deploy_plan(load_settings(**GOOGLE), repo)
    assert add in no_file.value.message and "WORKERS_FILE=deploy/workers.toml" in (
        no_file.value.message)

    workers.write_text('[workers.brain]\ndescription = "no access here"\n')
    with pytest.raises(ConfigError, match=r"has no \[access\] section") as no_access:
        deploy_plan(settings, repo)
    assert add in no_access.value.message
    # The dashboard's first user is the admin the message suggests.
    with pytest.raises(ConfigError) as suggested:
        deploy_plan(settings, repo, dashboard_users=["domain:example.com", "ana@example.com"])
    assert '"user:ana@example.com" = "admin"' in suggested.value.message

    workers.write_text('[access]\n"user:ana@example.com" = "operator"\n')
    with pytest.raises(ConfigError, match=r"names no admin \(user:ana@example.com = operator\)"
                       ) as no_admin:
        deploy_plan(settings, repo)
    assert '"user:YOU@example.com" = "admin"' in no_admin.value.message

    # A malformed [access] is refused naming its line, as at any start.
    workers.write_text('[access]\n"user:ana@example.com" = "owner"\n')
    with pytest.raises(ConfigError, match=r"line 2 .*'owner' is not a role"):
        deploy_plan(settings, repo)
    workers.write_text('[access]\n"ana@example.com" = "admin"\n')
    with pytest.raises(ConfigError, match=r"write it as user:ana@example\.com"):
        deploy_plan(settings, repo)


def test_the_cli_prints_the_script_and_refuses_bad_members(repo):
    env = {k: v for k, v in os.environ.items() if k != "CLOUD_TASKS_EMULATOR_HOST"}
    env |= {k.upper(): v for k, v in GOOGLE.items()} | {"WORKERS_FILE": "deploy/workers.toml"}
    ok = subprocess.run([ENQUEUER, "deploy", "--dashboard-user", "ana@example.com"],
                        capture_output=True, text=True, env=env, cwd=repo, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("#!/usr/bin/env bash")
    assert "--member=user:ana@example.com" in ok.stdout
    subprocess.run(["bash", "-n"], input=ok.stdout, text=True, check=True)
    bad = subprocess.run([ENQUEUER, "deploy", "--api-caller", "nobody"], capture_output=True,
                         text=True, env=env, cwd=repo, timeout=60)
    assert bad.returncode == 2
    assert "is not an IAM member" in bad.stderr and "Traceback" not in bad.stderr
    (repo / "deploy" / "workers.toml").write_text('[access]\n"user:ana@example.com" = "viewer"\n')
    unusable = subprocess.run([ENQUEUER, "deploy"], capture_output=True, text=True, env=env,
                              cwd=repo, timeout=60)
    assert unusable.returncode == 2 and unusable.stdout == ""
    assert '"user:YOU@example.com" = "admin"' in unusable.stderr


def test_the_readmes_gcloud_lines_are_real_commands():
    blocks = re.findall(r"^```sh\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S)
    commands = []
    for line in "\n".join(blocks).splitlines():
        commands += re.findall(r"\$\((gcloud [^)]*)\)", line)
        if line.startswith("gcloud "):
            commands.append(" ".join(shlex.split(line, comments=True)))
    assert len(commands) >= 3  # the production steps and the client's token
    for command in commands:
        check_command(command)

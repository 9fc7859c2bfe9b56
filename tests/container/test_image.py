"""The production image, built from the unchanged Dockerfile and run for real, as Cloud Run
runs it: PORT set, settings in the environment, a user that is not root. The API and the
dashboard run as containers against an emulator stack on this machine (``enqueuer dev
--no-api --no-dashboard``); the README's curl, with its token from the stack's emulator,
goes through the containerised API and ends at the local brain; the dashboard, started with
the emulator's defaults (no login), shows in Chromium what closed by default means. See
podman.py for how podman is set up on these machines.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from enqueuer_core.config import LOCAL_CALLER_SA
from enqueuer_core.devstack import free_port
from tests.browser.conftest import (
    CHROMIUM_ARGS,
    assert_no_exception,
    chromium_path,
    open_page,
    screenshot,
)
from tests.container.podman import Podman, context_tag, copy_repository
from tests.emulator.harness import wait_until
from tests.enqueuer_core.test_devstack import ENQUEUER, run_readme_curl, start_dev, stop_dev

APP_UID = 10001
START_TIMEOUT_S = 90.0  # a cold Streamlit import in a container on a busy 2-core machine
WORKERS_FILE = "deploy/workers.toml"
BRAIN_DESCRIPTION = "Runs a prompt over Google Docs (from the workers file in the image)"
# A deployment's files, kept in the repository beside the code: they go into the image.
DEPLOYMENT_FILES = {
    WORKERS_FILE: f'[workers.brain]\ndescription = "{BRAIN_DESCRIPTION}"\n'
                  'schema_file = "schemas/brain.json"\n',
    "deploy/schemas/brain.json": json.dumps({
        "type": "object", "required": ["input_doc_id"],
        "properties": {"input_doc_id": {"type": "string", "minLength": 1}}}),
}
# What a developer's working tree holds that must never reach the image.
SECRETS = {
    ".streamlit/secrets.toml": '[auth]\nclient_secret = "not-in-the-image"\n',
    ".env": "CALLER_SA=leaked@example.iam.gserviceaccount.com\n",
    "deploy/enqueuer-key.json": '{"type": "service_account", "private_key": "x"}\n',
    "tls/server.pem": "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n",
}
LOCAL_JUNK = {
    ".venv/pyvenv.cfg": "home = /usr/bin\n",
    "enqueuer_core/__pycache__/cli.cpython-311.pyc": "x",
    "node_modules/left-pad/index.js": "x",
    "test-artifacts/screenshots/x.png": "x",
    ".state/profile.json": "{}",
}
# Looked at inside the image: who runs, what is in /app, which modules can be imported.
INSPECT = """
import importlib.util, json, os
files = sorted(os.path.relpath(os.path.join(d, f), "/app")
               for d, _, fs in os.walk("/app") for f in fs)
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "files": files,
                  "cwd": os.getcwd(), "modules": {m: bool(importlib.util.find_spec(m))
                  for m in ("enqueuer_core", "app", "streamlit", "uvicorn", "emulator",
                            "pytest", "ruff", "playwright")}}))
"""


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    return Podman.for_tests(tmp_path_factory.mktemp("podman"))


@pytest.fixture(scope="module")
def image(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The image of this working tree (plus the files above), built or reused."""
    base_id = podman.ensure_base_image()
    context = copy_repository(tmp_path_factory.mktemp("context"),
                              {**DEPLOYMENT_FILES, **SECRETS, **LOCAL_JUNK})
    return podman.build(context, context_tag(context, base_id))


@pytest.mark.timeout(900)
def test_the_image_holds_the_app_and_its_workers_file_and_nothing_secret(
        podman: Podman, image: str) -> None:
    seen = json.loads(podman.run("run", "--rm", image, "python", "-c", INSPECT).stdout)
    assert (seen["uid"], seen["gid"]) == (APP_UID, APP_UID)
    assert seen["cwd"] == "/app"
    files = set(seen["files"])
    assert {"app.py", "dashboard.py", "pages/overview.py", "enqueuer_core/cli.py",
            ".streamlit/config.toml", "docker/entrypoint.sh", *DEPLOYMENT_FILES} <= files
    assert not files & set(SECRETS), "secrets were built into the image"
    leaked = sorted(f for f in files if f in LOCAL_JUNK or f.endswith(".pyc") or
                    f.split("/")[0] in {"tests", "emulator", "bench", "dev", ".git"})
    assert not leaked, f"development files in the image: {leaked}"
    # The runtime, and nothing else: no emulator, no test or lint tools.
    assert seen["modules"] == {"enqueuer_core": True, "app": True, "streamlit": True,
                               "uvicorn": True, "emulator": False, "pytest": False,
                               "ruff": False, "playwright": False}

    # Any other command runs as given; `enqueuer` is the project's console script.
    usage = podman.run("run", "--rm", image, "enqueuer", "--help").stdout
    assert "Usage: enqueuer" in usage and "diagnose" in usage


@dataclass
class Container:
    name: str
    url: str


def start_container(podman: Podman, image: str, started: list[str],
                    env: Mapping[str, str], health: str, *command: str,
                    port: int | None = None) -> Container:
    """Run ``image`` (its default command, or ``command``) on the host's network, on
    ``port`` (default: a free one) given as PORT, as Cloud Run would; return once ``health``
    answers 200."""
    port = port or free_port()
    name = f"enqueuer-test-{command[0] if command else 'default'}-{uuid.uuid4().hex[:8]}"
    started.append(name)  # before it exists: a half-started container is removed too
    variables = [f"--env={k}={v}" for k, v in {**env, "PORT": str(port)}.items()]
    podman.run("run", "--detach", f"--name={name}", "--network=host", *variables, image,
               *command)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        state = podman.run("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        if state != "running":
            raise AssertionError(f"{name} is {state}:\n" + logs(podman, name))
        try:
            return httpx.get(url + health, timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(answers, timeout=START_TIMEOUT_S, interval=0.2, what=f"{name} answers")
    except TimeoutError as e:
        raise AssertionError(f"{e}\n{logs(podman, name)}") from None
    return Container(name, url)


def logs(podman: Podman, name: str) -> str:
    out = podman.run("logs", name, check=False)
    return (out.stdout + out.stderr)[-5000:]


def readme_curl(api_url: str, state: Path, folder: Path) -> dict[str, object]:
    """The README's curl sent to ``api_url``: its answer. Its ``$(.venv/bin/enqueuer --local
    token)`` mints the token from the stack in ``state``, for the container's URL (the
    environment wins over the stack's settings, as everywhere with --local)."""
    # As in tests/test_app.py: the status code comes from a curlrc, so the command stays
    # the README's with only the address changed.
    (folder / ".curlrc").write_text('write-out = "\\n%{http_code}"\n')
    out = run_readme_curl(api_url, state, CURL_HOME=str(folder), API_AUDIENCE=api_url)
    assert out.stderr == "", out.stderr  # the token was minted
    body, status = out.stdout.rsplit("\n", 1)
    assert status == "200", out.stdout
    return json.loads(body)


def received(brain: str, key: str) -> list[dict]:
    """What the local brain received with this idempotency key."""
    got = httpx.get(f"{brain}/_requests", timeout=5).json()
    got = got.get("requests", got) if isinstance(got, dict) else got
    return [r for r in got if {k.lower(): v for k, v in r["headers"]}.get(
        "x-idempotency-key") == key]


def pid1(podman: Podman, name: str) -> tuple[int, str]:
    """The UID and the command line of the container's PID 1."""
    status = podman.run("exec", name, "cat", "/proc/1/status").stdout
    uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    cmdline = podman.run("exec", name, "cat", "/proc/1/cmdline").stdout.replace("\0", " ")
    return uid, cmdline


def stop(podman: Podman, name: str) -> int:
    """``podman stop`` (SIGTERM, then SIGKILL after 20 s); the container's exit code."""
    podman.run("stop", "--time=20", name, timeout=60)
    return int(podman.run("inspect", "--format", "{{.State.ExitCode}}", name).stdout)


@dataclass
class DevStack:
    profile: dict  # settings, service URLs (the stack's profile.json)
    state: Path  # its state folder: ENQUEUER_STATE for `enqueuer --local`


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[DevStack]:
    """An emulator stack on this machine (emulator and the three workers, no API and no
    dashboard: those come from the image)."""
    state = tmp_path / "state"
    proc, _ = start_dev(state, "--no-api", "--no-dashboard")
    try:
        yield DevStack(json.loads((state / "profile.json").read_text()), state)
    finally:
        assert stop_dev(proc) == 0


@pytest.mark.timeout(900)
def test_the_api_and_the_dashboard_run_from_the_image_against_the_stack(
        podman: Podman, image: str, stack: DevStack, tmp_path: Path) -> None:
    settings: dict[str, str] = stack.profile["settings"]
    brain = stack.profile["services"]["brain"]
    started: list[str] = []
    try:
        # The default command is the API; the workers file is read where it was built in.
        # It checks callers' ID tokens (API_AUTH=google, the stack's setting) against the
        # emulator's keys, for its own URL.
        port = free_port()
        api_url = f"http://127.0.0.1:{port}"
        api = start_container(podman, image, started,
                              {**settings, "WORKERS_FILE": WORKERS_FILE,
                               "API_AUDIENCE": api_url}, "/healthz", port=port)
        assert settings["API_AUTH"] == "google"
        assert httpx.get(f"{api.url}/readyz", timeout=10).status_code == 200
        anonymous = httpx.post(f"{api.url}/enqueue", timeout=10,
                               json={"service": "brain", "payload": {"input_doc_id": "x"}})
        assert anonymous.status_code == 401, anonymous.text
        assert anonymous.json()["error"]["code"] == "unauthenticated"
        token = subprocess.run([ENQUEUER, "--local", "token", "--audience", api.url],
                               capture_output=True, text=True, timeout=30, check=True,
                               env={**os.environ, "ENQUEUER_STATE": str(stack.state)}
                               ).stdout.strip()
        listed = httpx.get(f"{api.url}/workers", timeout=10,
                           headers={"Authorization": f"Bearer {token}"})
        (spec,) = [w for w in listed.json()["workers"] if w["name"] == "brain"]
        assert spec["description"] == BRAIN_DESCRIPTION
        assert spec["payload_schema"]["required"] == ["input_doc_id"]

        answer = readme_curl(api.url, stack.state, tmp_path)
        assert answer["ok"] is True and answer["service"] == "brain"
        (request,) = wait_until(lambda: received(brain, str(answer["idempotency_key"])),
                                timeout=30, interval=0.1, what="brain got the job")
        assert request["claims"]["email"] == LOCAL_CALLER_SA
        assert request["claims"]["aud"] == brain
        assert request["body"]["input_doc_id"] == "doc-in"

        # The server itself is PID 1 (the entrypoint exec'd it) and is not root.
        uid, cmdline = pid1(podman, api.name)
        assert uid == APP_UID and "uvicorn app:app" in cmdline, (uid, cmdline)
        assert "--proxy-headers" in cmdline and f"--port {api.url.rsplit(':', 1)[1]}" in cmdline

        # The CLI in the image reaches the same stack.
        queues = podman.run("run", "--rm", "--network=host",
                            *[f"--env={k}={v}" for k, v in settings.items()],
                            image, "enqueuer", "queues", "--json")
        assert "queue-brain" in {q["queue_id"] for q in json.loads(queues.stdout)}

        # The dashboard with the emulator's defaults: no login (DASHBOARD_AUTH none), so every
        # visitor is allUsers, whom the access config gives no role: closed by default.
        assert "DASHBOARD_AUTH" not in settings
        dashboard = start_container(podman, image, started,
                                    {**settings, "ENQUEUER_API_URL": api.url},
                                    "/_stcore/health", "dashboard")
        uid, cmdline = pid1(podman, dashboard.name)
        assert uid == APP_UID and "streamlit run dashboard.py" in cmdline, (uid, cmdline)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            try:
                page = browser.new_context(base_url=dashboard.url).new_page()
                open_page(page, "/")
                banner = page.get_by_text("No login (DASHBOARD_AUTH=none)")
                expect(banner).to_be_visible()
                expect(banner).to_contain_text("every visitor acts as allUsers, role none")
                expect(page.get_by_text("you may not see Enqueuer's pages")).to_be_visible()
                expect(page.get_by_text("allUsers has no role in Enqueuer's access config")
                       ).to_be_visible()
                assert_no_exception(page)
                # Nothing of the queues shows: no page runs for a visitor without a role.
                expect(page.get_by_role("heading", name="Overview", exact=True)).to_have_count(0)
                expect(page.get_by_text("queue-brain")).to_have_count(0)
                screenshot(page, "container-dashboard-closed-by-default")
            finally:
                browser.close()

        # SIGTERM reaches each server, which shuts down cleanly (exit 0, not SIGKILL's 137).
        assert stop(podman, api.name) == 0, logs(podman, api.name)
        assert stop(podman, dashboard.name) == 0, logs(podman, dashboard.name)
    finally:
        podman.remove(started)
    left = podman.run("ps", "--all", "--quiet", *[f"--filter=name={n}" for n in started])
    assert not left.stdout.strip(), "containers left behind"

"""The official Node client, ``@google-cloud/tasks``, works unchanged against the emulator.

``tests/node/client.mjs`` connects to a real emulator process over plaintext gRPC, creates a
queue and an HTTP task with an OIDC token, reads them back, and the task reaches a real
receiver with its body, its header and a Bearer token. Node.js 20 and npm are required: the
test fails, not skips, without them. ``npm ci`` runs when tests/node/node_modules is missing
or does not hold the pinned versions.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import uuid

import pytest

from tests.emulator.harness import LOCATION, ROOT, RunningEmulator
from tests.receiver import Receiver

# A project of its own, so that the queues other tests made on the shared emulator are not listed.
NODE_PROJECT = "node-project"
NODE_DIR = ROOT / "tests" / "node"
SERVICE_ACCOUNT = "node-client@local-project.iam.gserviceaccount.com"  # as client.mjs sends it
INSTALL_NODE = (
    "Install Node.js 20 or newer (it comes with npm; https://nodejs.org/ or your package manager) "
    "and put `node` and `npm` on PATH: this test proves the Node client works with the emulator."
)
NPM_CI_TIMEOUT_S = 180


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not installed. {INSTALL_NODE}", pytrace=False)
    return path


def _installed() -> bool:
    """node_modules holds exactly the versions package.json pins."""
    pinned = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    for name, version in pinned.items():
        manifest = NODE_DIR / "node_modules" / name / "package.json"
        if not manifest.is_file() or json.loads(manifest.read_text())["version"] != version:
            return False
    return True


def node_with_modules() -> str:
    """The ``node`` executable, with tests/node/node_modules installed from the lock file.

    Called in the test, not a fixture, so that a missing Node.js is a test failure.
    """
    node, npm = _tool("node"), _tool("npm")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    major = re.match(r"v(\d+)\.", version)
    if not major or int(major[1]) < 20:
        pytest.fail(f"`node --version` is {version!r}. {INSTALL_NODE}", pytrace=False)
    if not _installed():
        try:
            ci = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True,
                text=True, timeout=NPM_CI_TIMEOUT_S,
                env={**os.environ, "npm_config_update_notifier": "false"},
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"`npm ci` in {NODE_DIR} took more than {NPM_CI_TIMEOUT_S}s "
                        "(is the npm registry reachable?)", pytrace=False)
        if ci.returncode != 0 or not _installed():
            pytest.fail(f"`npm ci` in {NODE_DIR} failed ({ci.returncode}):\n"
                        f"{ci.stdout}\n{ci.stderr}", pytrace=False)
    return node


def _jwt_claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.mark.timeout(NPM_CI_TIMEOUT_S + 120)
def test_node_client_unchanged(emulator: RunningEmulator, receiver: Receiver) -> None:
    node = node_with_modules()
    queue_id = f"node-{uuid.uuid4().hex[:8]}"
    path = f"/node-client/{queue_id}"
    # No Google account, no ADC, no gcloud: whatever the environment holds is not used.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GOOGLE_", "GCLOUD_", "CLOUDSDK_", "GCE_"))}
    env |= {"CLOUD_TASKS_PROJECT": NODE_PROJECT, "CLOUD_TASKS_LOCATION": LOCATION}
    run = subprocess.run(
        [node, str(NODE_DIR / "client.mjs"), emulator.target, receiver.url + path, queue_id],
        cwd=NODE_DIR, capture_output=True, text=True, timeout=60, env=env,
    )
    if run.returncode != 0:
        pytest.fail(
            f"client.mjs exited {run.returncode}\nstdout: {run.stdout}\nstderr: {run.stderr}\n"
            f"emulator log:\n{''.join(emulator.stderr[-30:])}",
            pytrace=False,
        )
    out = json.loads(run.stdout.strip().splitlines()[-1])

    queue_name = f"projects/{NODE_PROJECT}/locations/{LOCATION}/queues/{queue_id}"
    assert out["queue"] == out["getQueue"] == queue_name
    assert out["queueState"] == "RUNNING"
    assert out["listQueues"] == 1 and out["queueListed"] is True
    assert (out["pausedState"], out["resumedState"]) == ("PAUSED", "RUNNING")
    task_name = out["task"]
    assert re.fullmatch(re.escape(queue_name) + r"/tasks/\d+", task_name), task_name
    assert out["getTask"] == task_name
    assert out["listTasks"] == 1 and out["taskListed"] is True
    assert out["taskUrl"] == receiver.url + path and out["taskHasOidc"] is True

    [got] = receiver.at(path, 1, timeout=15)
    assert got.method == "POST"
    assert json.loads(got.body) == out["body"] == {"hello": "from node", "queue": queue_id}
    assert got.header("Content-Type") == "application/json"
    assert got.header("X-Node-Client") == "yes"
    assert got.header("X-CloudTasks-QueueName") == queue_id
    assert got.header("X-CloudTasks-TaskName") == task_name.rsplit("/", 1)[1]
    auth = got.header("Authorization") or ""
    assert auth.startswith("Bearer "), got.headers
    claims = _jwt_claims(auth.removeprefix("Bearer "))
    assert claims["email"] == SERVICE_ACCOUNT
    assert claims["aud"] == receiver.url + path  # no audience given: the task's URL

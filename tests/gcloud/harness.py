"""The real ``gcloud`` pointed at an emulator by ``enqueuer_core.gcloud_env``, with a
configuration folder of its own (the user's gcloud login and settings are never read or
changed). A missing gcloud fails the test with the install hint: it is not skipped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from enqueuer_core.config import load_settings
from enqueuer_core.gcloud_env import gcloud_env
from tests.emulator.harness import LOCATION, PROJECT, RunningEmulator
from tests.gcloud_cli import INSTALL_HINT

LOCATION_FLAG = f"--location={LOCATION}"


def require_gcloud() -> str:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return gcloud


def gcloud_environment(emulator: RunningEmulator, config: Path) -> dict[str, str]:
    """This process's environment without the shell's own gcloud settings, plus what
    ``enqueuer gcloud-env`` prints for ``emulator`` and a fresh configuration folder."""
    settings = load_settings(cloud_tasks_emulator_host=emulator.target, project_id=PROJECT,
                             emulator_http_url=emulator.http_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDSDK_")}
    return env | gcloud_env(settings) | {
        "CLOUDSDK_CONFIG": str(config),
        # No question on a terminal (queues delete asks otherwise), no usage report, no
        # update check: a test run talks to nothing but the emulator.
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
    }


@dataclass
class Gcloud:
    executable: str
    env: dict[str, str]

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        """``gcloud ARGS``; with ``ok`` it must succeed."""
        done = subprocess.run([self.executable, *args], env=self.env, capture_output=True,
                              text=True, timeout=60)
        assert "Traceback" not in done.stderr and "crashed" not in done.stderr, done.stderr
        if ok:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--format=json").stdout)

    def shell(self, command: str) -> subprocess.CompletedProcess[str]:
        """A command line run by the shell, as a user pastes it."""
        return subprocess.run(command, shell=True, env=self.env, capture_output=True,
                              text=True, timeout=60)

"""``enqueuer gcloud-env``: the variables that point gcloud at the emulator, and the console
script printing them so that ``eval "$(enqueuer --local gcloud-env)"`` sets them in a shell
(the real gcloud using them is tests/gcloud/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from enqueuer_core.config import load_settings
from enqueuer_core.dev_config import api_environment
from enqueuer_core.devstack import DevProfile
from enqueuer_core.errors import ConfigError
from enqueuer_core.gcloud_env import (
    gcloud_env,
    gcloud_script,
    shell_exports,
    sourcing_line,
    unset_line,
)
from tests.enqueuer_core.test_cli import clean_env

ENQUEUER = str(Path(sys.executable).with_name("enqueuer"))
GOOGLE = {"project_id": "prod-1", "tasks_region": "europe-west1",
          "caller_sa": "caller@prod-1.iam.gserviceaccount.com",
          "url_brain": "https://brain-x.a.run.app/process",
          "url_testi": "https://testi-x.a.run.app/generate-testimony",
          "url_trans": "https://trans-x.a.run.app/api/transcribe"}


def test_the_variables_point_gcloud_at_the_emulators_http_port_without_a_login():
    settings = load_settings(cloud_tasks_emulator_host="127.0.0.1:9123", project_id="p-1")
    env = gcloud_env(settings)
    # The trailing slash is required: gcloud appends "v2/projects/..." to the override.
    assert env["CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDTASKS"] == "http://127.0.0.1:9124/"
    assert env["CLOUDSDK_API_ENDPOINT_OVERRIDES_LOGGING"] == "http://127.0.0.1:9124/"
    # Without --location gcloud asks App Engine for the project's app: the emulator, not Google.
    assert env["CLOUDSDK_API_ENDPOINT_OVERRIDES_APPENGINE"] == "http://127.0.0.1:9124/"
    assert env["CLOUDSDK_AUTH_DISABLE_CREDENTIALS"] == "true"
    assert env["CLOUDSDK_CORE_PROJECT"] == "p-1"
    # gcloud run calls the Knative v1 API on a regional host, which the emulator does not serve.
    assert not any(name.endswith("_RUN") for name in env)
    # An HTTP URL given explicitly wins, with or without its own trailing slash.
    other = load_settings(cloud_tasks_emulator_host="127.0.0.1:9123",
                          emulator_http_url="http://localhost:7000/")
    assert gcloud_env(other)["CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDTASKS"] == (
        "http://localhost:7000/")


def test_settings_for_google_are_refused_with_what_to_run_instead():
    with pytest.raises(ConfigError) as refused:
        gcloud_env(load_settings(**GOOGLE))
    assert "enqueuer --local gcloud-env" in refused.value.message
    assert "gcloud auth login" in refused.value.message
    no_port = load_settings(cloud_tasks_emulator_host="emulator.internal")
    with pytest.raises(ConfigError, match="set EMULATOR_HTTP_URL"):
        gcloud_env(no_port)


def test_exports_are_shell_quoted_and_the_script_says_how_to_undo_them():
    env = {"A": "plain", "B": "it's $HOME; `x`"}
    out = subprocess.run(["sh", "-c", shell_exports(env) + 'printf "%s|%s" "$A" "$B"'],
                         capture_output=True, text=True, check=True).stdout
    assert out == "plain|it's $HOME; `x`"
    assert unset_line(env) == "unset A B"
    script = gcloud_script(load_settings(cloud_tasks_emulator_host="127.0.0.1:9123"))
    assert "--location=us-central1" in script
    assert "# Undo: unset CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDTASKS " in script


def test_the_line_printed_before_a_gcloud_command_is_for_the_local_stack_only():
    local = sourcing_line(load_settings(cloud_tasks_emulator_host="127.0.0.1:9123"))
    assert local == f'eval "$({ENQUEUER} --local gcloud-env)"'
    assert sourcing_line(load_settings(**GOOGLE)) is None  # Google needs no setting up


def write_profile(state: Path, grpc_port: int) -> None:
    """A profile as ``enqueuer dev`` leaves it, for a stack on ``grpc_port``."""
    state.mkdir(parents=True)
    http = f"http://127.0.0.1:{grpc_port + 7}"  # not the port after gRPC: read from the profile
    services = {w: f"http://127.0.0.1:{grpc_port + 1 + i}"
                for i, w in enumerate(("brain", "testimonios", "transcripciones"))}
    DevProfile(api_environment(f"127.0.0.1:{grpc_port}", services, http), None, None,
               f"127.0.0.1:{grpc_port}", http, services).save(state)


def test_eval_of_the_local_command_sets_the_variables_of_the_running_stack(tmp_path):
    state = tmp_path / "state"
    write_profile(state, 40123)
    env = {k: v for k, v in clean_env().items() if not k.startswith("CLOUDSDK_")}
    env["ENQUEUER_STATE"] = str(state)
    # As a user does: eval the output, later run the "# Undo:" line it printed.
    shell = (f'out="$({ENQUEUER} --local gcloud-env)" && eval "$out" && '
             'env | grep ^CLOUDSDK_ | sort && '
             'eval "$(printf "%s\\n" "$out" | sed -n "s/^# Undo: //p")" && '
             'echo "left: $(env | grep -c ^CLOUDSDK_)"')
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.stderr == "", done.stderr
    *exported, left = done.stdout.splitlines()
    assert "CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDTASKS=http://127.0.0.1:40130/" in exported
    assert "CLOUDSDK_CORE_PROJECT=local-project" in exported
    assert len(exported) == 5 and left == "left: 0"

    as_json = subprocess.run([ENQUEUER, "--local", "gcloud-env", "--json"], env=env,
                             capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(as_json.stdout)["CLOUDSDK_AUTH_DISABLE_CREDENTIALS"] == "true"


def test_without_the_emulator_the_command_fails_with_the_fix():
    env = {k: v for k, v in clean_env().items() if k != "ENQUEUER_STATE"}
    done = subprocess.run([ENQUEUER, "gcloud-env"], env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: gcloud-env points gcloud at the local emulator")
    assert "Traceback" not in done.stderr and "enqueuer --local gcloud-env" in done.stderr

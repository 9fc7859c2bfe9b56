"""``enqueuer token``: an ID token from the emulator's issuer that google-auth verifies against
the emulator's certificates, exactly as the API verifies its callers; bad input and a stack
that is not running say what to do; on Google it prints the gcloud line instead."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from google.auth.transport.requests import Request
from google.oauth2 import id_token

from enqueuer_core.config import LOCAL_API_AUDIENCE, LOCAL_API_CALLER, load_settings
from enqueuer_core.devstack import DevProfile, free_port
from enqueuer_core.errors import ConfigError, InvalidRequest, Unavailable
from enqueuer_core.tokens import local_id_token, mint_id_token, token_command
from tests.enqueuer_core.test_cli import ENQUEUER, clean_env
from tests.enqueuer_core.test_config import GOOGLE
from tests.gcloud_cli import check_command

SETTING_NAMES = ("API_AUDIENCE", "EMULATOR_HTTP_URL", "API_AUTH", "ENQUEUER_STATE")


def env_for(emulator, **more: str) -> dict[str, str]:
    env = {k: v for k, v in clean_env().items() if k not in SETTING_NAMES}
    return env | {"CLOUD_TASKS_EMULATOR_HOST": emulator.target,
                  "EMULATOR_HTTP_URL": emulator.http_url} | more


def token(*args: str, env: dict[str, str], check: int = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(ENQUEUER), *args], env=env, capture_output=True, text=True,
                          timeout=30)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == check, (done.returncode, done.stdout, done.stderr)
    return done


def verified(emulator, printed: str, audience: str) -> dict:
    """The claims, once google-auth has checked signature, expiry and audience."""
    assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+\n", printed), printed  # one line, a JWT
    return id_token.verify_token(printed.strip(), Request(), audience=audience,
                                 certs_url=f"{emulator.http_url}/oauth2/v1/certs")


def test_the_printed_token_verifies_for_the_email_and_audience_asked(emulator):
    api = "http://127.0.0.1:9090"
    done = token("token", "--as", "ana@example.com", "--audience", api, env=env_for(emulator))
    claims = verified(emulator, done.stdout, api)
    assert claims["email"] == "ana@example.com" and claims["aud"] == api
    assert claims["iss"] == "https://accounts.google.com" and claims["email_verified"]
    assert done.stderr == ""
    # A member's syntax is taken too: the API turns the email back into that member.
    account = "intake@local-project.iam.gserviceaccount.com"
    done = token("token", "--as", f"serviceAccount:{account}", "--audience", api,
                 env=env_for(emulator))
    assert verified(emulator, done.stdout, api)["email"] == account


def test_by_default_a_local_operator_for_the_apis_audience(emulator):
    claims = verified(emulator, token("token", env=env_for(emulator)).stdout, LOCAL_API_AUDIENCE)
    assert claims["email"] == LOCAL_API_CALLER
    # API_AUDIENCE, as `enqueuer dev` sets it for the API it starts, is the default audience.
    api = f"http://127.0.0.1:{free_port()}"
    done = token("token", env=env_for(emulator, API_AUDIENCE=api))
    assert verified(emulator, done.stdout, api)["aud"] == api


def test_local_reads_the_running_stacks_profile(emulator, tmp_path: Path):
    """``enqueuer --local token`` (the README's curl): the emulator and the API's audience
    come from the stack's state folder."""
    api = f"http://127.0.0.1:{free_port()}"
    settings = {"CLOUD_TASKS_EMULATOR_HOST": emulator.target,
                "EMULATOR_HTTP_URL": emulator.http_url, "API_AUDIENCE": api}
    DevProfile(settings, api, None, emulator.target, emulator.http_url, {}).save(tmp_path)
    env = {k: v for k, v in clean_env().items() if k not in SETTING_NAMES}
    done = token("--local", "token", env=env | {"ENQUEUER_STATE": str(tmp_path)})
    claims = verified(emulator, done.stdout, api)
    assert claims["email"] == LOCAL_API_CALLER


def test_bad_input_exits_2_with_the_fix_and_prints_no_token(emulator):
    env = env_for(emulator)
    bob = token("token", "--as", "bob", env=env, check=2)
    assert bob.stdout == ""
    assert "'bob' is not an email address" in bob.stderr and "--as operator@" in bob.stderr
    group = token("token", "--as", "group:ops@example.com", env=env, check=2)
    assert "not a group's" in group.stderr
    url = token("token", "--audience", "enqueuer-api", env=env, check=2)
    assert "--audience 'enqueuer-api' is not an http(s) URL" in url.stderr
    # What the emulator itself refuses comes back in its words.
    fragment = token("token", "--audience", "http://127.0.0.1:8080/#x", env=env, check=2)
    assert "the emulator refused the token" in fragment.stderr
    assert "fragment" in fragment.stderr


def test_no_emulator_running_says_how_to_start_the_stack(tmp_path: Path):
    port = free_port()  # nothing listens there
    env = clean_env() | {"CLOUD_TASKS_EMULATOR_HOST": f"127.0.0.1:{port - 1}",
                         "EMULATOR_HTTP_URL": f"http://127.0.0.1:{port}"}
    done = token("token", env=env, check=6)
    assert done.stdout == ""
    assert f"http://127.0.0.1:{port} does not answer" in done.stderr
    assert "make run" in done.stderr and "enqueuer dev" in done.stderr
    with pytest.raises(Unavailable, match="make run"):
        mint_id_token(f"http://127.0.0.1:{port}", LOCAL_API_CALLER, LOCAL_API_AUDIENCE)


def test_on_google_it_refuses_with_the_gcloud_line(monkeypatch):
    api = "https://enqueuer-api-123456789012.europe-west1.run.app"
    env = {k: v for k, v in clean_env().items() if k not in SETTING_NAMES}
    # Google's settings, complete or not: the answer is gcloud's command, exit 2.
    for extra in ({}, {k.upper(): v for k, v in GOOGLE.items()} | {"API_AUDIENCE": api}):
        done = token("token", env=env | extra, check=2)
        assert done.stdout == ""
        assert "local stack only" in done.stderr
        assert "gcloud auth print-identity-token --audiences=" in done.stderr
    assert f"--audiences={api} " in done.stderr
    account = "intake@acme.iam.gserviceaccount.com"
    done = token("token", "--as", account, env=env | {"API_AUDIENCE": api}, check=2)
    line = re.search(r"(gcloud [^()]*?)$", done.stderr.strip())
    assert line and line[1] == (f"gcloud auth print-identity-token --audiences={api} "
                                f"--impersonate-service-account={account} --include-email")
    check_command(line[1])  # the installed gcloud knows the command and every flag

    for name in ("CLOUD_TASKS_EMULATOR_HOST", "WORKERS_FILE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="--audiences=API_URL"):
        local_id_token(None)
    with pytest.raises(ConfigError, match=re.escape(f"--audiences={api}")):
        local_id_token(load_settings(**GOOGLE, api_audience=api))


def test_the_library_refuses_bad_input_before_calling_the_emulator():
    settings = load_settings(cloud_tasks_emulator_host="127.0.0.1:1",
                             emulator_http_url="http://127.0.0.1:2")
    with pytest.raises(InvalidRequest, match="not an email"):
        local_id_token(settings, "ana")
    with pytest.raises(InvalidRequest, match="not an http"):
        local_id_token(settings, None, "ftp://x")


def test_the_dashboards_curl_gets_its_token_from_the_command_that_mints_one_here():
    local = token_command(load_settings(cloud_tasks_emulator_host="127.0.0.1:8123"))
    program, rest = shlex.split(local)[0], shlex.split(local)[1:]
    assert rest == ["--local", "token"] and Path(program).is_file()
    google = token_command(load_settings(**GOOGLE, api_audience="https://api.example"))
    assert google == "gcloud auth print-identity-token --audiences=https://api.example"
    check_command(google)

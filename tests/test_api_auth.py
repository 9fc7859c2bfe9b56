"""Who may call the API: Google ID tokens checked, roles from the access config, an audit line
per enqueue. A real uvicorn server, the real emulator (its issuer mints the tokens), a real
worker; tokens the emulator would not mint are signed here, with its key or a stranger's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from google.auth import crypt, jwt
from google.cloud import tasks_v2

from app import create_app
from enqueuer_core.access.callers import GCLOUD_CLIENT_ID, Callers
from enqueuer_core.build import body_of
from enqueuer_core.config import Settings, load_settings
from enqueuer_core.verify import TokenRejected
from tests.emulator.harness import ROOT, RunningEmulator
from tests.gcloud_cli import check_command
from tests.receiver import Receiver
from tests.serving import serving
from tests.test_app import BRAIN_PAYLOAD, deliveries, make_queues, new_key, settings_for
from tests.tokens import id_token

OPERATOR = "operator@local-project.test"
VIEWER = "viewer@local-project.test"
INTAKE = "intake@local-project.iam.gserviceaccount.com"
GOOGLE = "https://accounts.google.com"


@dataclass
class Door:
    """The API as its callers meet it: no token unless a request brings one."""

    url: str
    settings: Settings
    emulator: RunningEmulator
    queues: dict[str, str]
    tasks: tasks_v2.CloudTasksClient

    def token(self, email: str = OPERATOR) -> str:
        assert self.settings.api_audience
        return id_token(self.emulator.http_url, email, self.settings.api_audience)

    def auth(self, email: str = OPERATOR) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(email)}"}

    def enqueue(self, service: str = "testimonios", payload: dict | None = None,
                headers: dict[str, str] | None = None, **fields: object) -> httpx.Response:
        body = {"service": service, "payload": {"n": 1} if payload is None else payload,
                **fields}
        return httpx.post(self.url + "/enqueue", json=body, headers=headers or {}, timeout=20)

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.get(self.url + path, headers=headers or {}, timeout=20)

    def queued(self) -> int:
        return sum(len(list(self.tasks.list_tasks(parent=q))) for q in self.queues.values())


@contextmanager
def door(emulator: RunningEmulator, worker_url: str, paused: bool, tmp: Path | None = None,
         workers_toml: str | None = None, **settings: object) -> Iterator[Door]:
    queues = make_queues(emulator, f"auth-{uuid.uuid4().hex[:8]}", paused)
    if workers_toml is not None:
        assert tmp is not None
        path = tmp / f"workers-{uuid.uuid4().hex[:6]}.toml"
        path.write_text(workers_toml)
        settings["workers_file"] = path
    s = settings_for(emulator, worker_url, queues, **settings)
    with serving(create_app(s)) as url:
        yield Door(url, s, emulator, queues, emulator.client())


@pytest.fixture(scope="module")
def api(emulator: RunningEmulator, worker: Receiver) -> Iterator[Door]:
    """The API with the local stack's users (admin, operator, viewer); tasks reach ``worker``."""
    with door(emulator, worker.url, paused=False) as d:
        yield d


@pytest.fixture(scope="module")
def idle(emulator: RunningEmulator) -> Iterator[Door]:
    """Over paused queues: whatever is enqueued stays there, to be counted."""
    with door(emulator, "http://127.0.0.1:9", paused=True) as d:
        yield d


def audit_lines(out: str) -> list[dict]:
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [line for line in lines if "audit" in line]


def failure(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    assert r.json()["ok"] is False and r.json()["error"]["code"] == code, r.text
    return str(r.json()["error"]["message"])


# -- tokens that are not good enough: 401, what to do, nothing done ----------------------------


def emulator_signer(em: RunningEmulator) -> crypt.RSASigner:
    (kid,) = httpx.get(em.http_url + "/oauth2/v1/certs", timeout=5).json()
    with sqlite3.connect(em.db) as db:
        (key,) = db.execute("SELECT value FROM meta WHERE key = 'oidc_key'").fetchone()
    return crypt.RSASigner.from_string(key, key_id=kid)


def stranger_signer() -> crypt.RSASigner:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    return crypt.RSASigner.from_string(pem, key_id="not-the-emulators")


def signed(signer: crypt.Signer, audience: str, age_s: float = 0, **claims: object) -> str:
    iat = int(time.time() - age_s)
    payload = {"iss": GOOGLE, "aud": audience, "sub": "1", "email": OPERATOR,
               "email_verified": True, "iat": iat, "exp": iat + 3600, **claims}
    return jwt.encode(signer, {k: v for k, v in payload.items() if v is not None}).decode()


def test_no_token_is_401_with_the_command_that_gets_one(idle, capsys):
    for r in (idle.enqueue(), idle.get("/workers")):
        message = failure(r, 401, "unauthenticated")
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert "no Authorization header" in message
        assert "`enqueuer --local token` prints one for operator@local-project.test" in message
        assert "`enqueuer --local token --as EMAIL`" in message
    assert idle.queued() == 0
    assert audit_lines(capsys.readouterr().out) == []  # nobody to put on record


def test_bad_tokens_are_401_saying_why_and_never_repeating_the_token(idle, emulator):
    aud = idle.settings.api_audience
    assert aud
    ours, theirs = emulator_signer(emulator), stranger_signer()
    good = idle.token()
    cases = {
        "a stranger's key": (signed(theirs, aud), [
            f"signed with a key {emulator.http_url}/oauth2/v1/certs does not publish",
            "not minted by this emulator"]),
        "wrong audience": (signed(ours, "http://other.example:8080"), [
            "audience is 'http://other.example:8080'", f"this API expects '{aud}'"]),
        "gcloud's audience": (signed(ours, GCLOUD_CLIENT_ID), [
            "gcloud mints a token for another audience only for a service account"]),
        "expired": (signed(ours, aud, age_s=7200), ["The token expired at", "get a fresh one"]),
        "not Google's issuer": (signed(ours, aud, iss="https://evil.example"), [
            "issued by 'https://evil.example', not by Google"]),
        "email not verified": (signed(ours, aud, email_verified=False), [
            f"email {OPERATOR} is not verified"]),
        "no email": (signed(ours, aud, email=None), ["no email claim", "--include-email"]),
        "edited claims": (good.split(".")[0] + "." + signed(ours, aud, email=VIEWER).split(".")[1]
                          + "." + good.split(".")[2], ["signature does not verify"]),
        "an access token": ("ya29.a0AfB_byC", ["not a Google ID token", "access token"]),
    }
    for what, (token, says) in cases.items():
        r = idle.enqueue(headers={"Authorization": f"Bearer {token}"})
        message = failure(r, 401, "unauthenticated")
        assert r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"', what
        for words in says:
            assert words in message, (what, message)
        assert "`enqueuer --local token`" in message, what
        assert token not in message and token.split(".")[-1] not in message, what
    for header, says in ((f"Basic {good}", "is 'Basic', not 'Bearer <ID token>'"),
                         (good, "is 'a value with no scheme', not 'Bearer <ID token>'")):
        message = failure(idle.enqueue(headers={"Authorization": header}), 401,
                          "unauthenticated")
        assert says in message and good[:20] not in message
    assert idle.queued() == 0


def test_certificates_out_of_reach_is_503_and_nothing_is_done(emulator, tmp_path):
    dead = "http://127.0.0.1:9"  # nothing listens: the certificates cannot be fetched
    with door(emulator, dead, paused=True, emulator_http_url=dead) as d:
        token = id_token(emulator.http_url, OPERATOR, d.settings.api_audience or "")
        r = d.enqueue(headers={"Authorization": f"Bearer {token}"})
        message = failure(r, 503, "certs_unavailable")
        assert f"{dead}/oauth2/v1/certs" in message and "retry" in message
        assert d.queued() == 0


# -- who may do what ------------------------------------------------------------------------


def test_a_viewer_reads_but_enqueuing_is_403_and_on_record(idle, capsys):
    workers = idle.get("/workers", idle.auth(VIEWER))
    assert workers.status_code == 200 and len(workers.json()["workers"]) == 3
    key = new_key("viewer")
    r = idle.enqueue(headers=idle.auth(VIEWER), idempotency_key=key)
    message = failure(r, 403, "forbidden")
    assert f"user:{VIEWER} is a viewer" in message
    assert f'"user:{VIEWER}" = "operator"' in message
    assert idle.queued() == 0
    (line,) = audit_lines(capsys.readouterr().out)
    assert line["severity"] == "WARNING"
    a = line["audit"]
    assert (a["principal"], a["role"], a["via"], a["action"], a["outcome"], a["error_code"]) == (
        f"user:{VIEWER}", "viewer", "api", "enqueue", "refused", "forbidden")
    assert a["idempotency_key"] == key and "task" not in a


def test_an_operator_enqueues_the_worker_gets_it_and_one_line_says_so(api, worker, capsys):
    key = new_key("operator")
    token = api.token()
    trace = uuid.uuid4().hex
    r = api.enqueue("brain", BRAIN_PAYLOAD, idempotency_key=key,
                    headers={"Authorization": f"Bearer {token}",
                             "X-Cloud-Trace-Context": f"{trace}/123;o=1"})
    assert r.status_code == 200, r.text
    (got,) = deliveries(worker, "brain", key)
    assert json.loads(got.body) == BRAIN_PAYLOAD
    out = capsys.readouterr().out
    (line,) = audit_lines(out)
    a = line["audit"]
    assert (a["principal"], a["role"], a["via"], a["outcome"], a["error_code"]) == (
        f"user:{OPERATOR}", "operator", "api", "ok", None)
    assert a["worker"] == "brain" and a["target"] == api.queues["brain"]
    assert a["idempotency_key"] == key and a["task"] == r.json()["task"]
    body = body_of(BRAIN_PAYLOAD)
    assert a["payload"] == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    assert re.fullmatch(r"[0-9a-f]{32}", a["request_id"])
    assert line["logging.googleapis.com/trace"] == f"projects/test-project/traces/{trace}"
    assert token not in out and token.split(".")[2] not in out
    for value in BRAIN_PAYLOAD.values():
        assert value not in out  # the payload only as its size and hash


def test_x_serverless_authorization_is_read_first_unless_cloud_run_stripped_it(idle, worker):
    viewer, operator = idle.token(VIEWER), idle.token(OPERATOR)
    stripped = operator.rsplit(".", 1)[0] + ".SIGNATURE_REMOVED_BY_GOOGLE"

    def enqueue(**headers: str) -> httpx.Response:
        return idle.enqueue(headers={k.replace("_", "-"): f"Bearer {v}"
                                     for k, v in headers.items()})

    failure(enqueue(X_Serverless_Authorization=viewer, Authorization=operator), 403, "forbidden")
    assert enqueue(X_Serverless_Authorization=operator, Authorization=viewer).status_code == 200
    # Cloud Run checked the first and stripped it; the caller's own token is verified instead.
    assert enqueue(X_Serverless_Authorization=stripped, Authorization=operator).status_code == 200
    failure(enqueue(X_Serverless_Authorization=stripped, Authorization=viewer), 403, "forbidden")
    message = failure(enqueue(X_Serverless_Authorization=stripped), 401, "unauthenticated")
    assert "Cloud Run removed the signature of the token in X-Serverless-Authorization" in message
    assert "send the token in Authorization: Bearer as well" in message
    message = failure(enqueue(Authorization=stripped), 401, "unauthenticated")
    assert "SIGNATURE_REMOVED_BY_GOOGLE" in message
    assert idle.queued() == 2


RESTRICTED = f'[workers.brain]\nenqueuers = ["serviceAccount:{INTAKE}"]\n'


def test_a_worker_that_names_its_enqueuers_takes_jobs_from_them_only(emulator, worker,
                                                                     tmp_path, capsys):
    with door(emulator, worker.url, paused=False, tmp=tmp_path, workers_toml=RESTRICTED) as d:
        key = new_key("intake")
        r = d.enqueue("brain", BRAIN_PAYLOAD, headers=d.auth(INTAKE), idempotency_key=key)
        assert r.status_code == 200, r.text
        deliveries(worker, "brain", key)
        # An enqueuer of one worker has no role: not another worker, but it reads /workers.
        message = failure(d.enqueue("testimonios", headers=d.auth(INTAKE)), 403, "forbidden")
        assert f"serviceAccount:{INTAKE} has no role" in message
        assert d.get("/workers", d.auth(INTAKE)).status_code == 200
        # An operator may not enqueue to a worker that names its enqueuers without it.
        message = failure(d.enqueue("brain", BRAIN_PAYLOAD, headers=d.auth(OPERATOR)), 403,
                          "forbidden")
        assert "only the enqueuers listed for brain may enqueue to it" in message
        assert f'enqueuers = ["serviceAccount:{INTAKE}", "user:{OPERATOR}"]' in message
        assert d.enqueue("testimonios", headers=d.auth(OPERATOR)).status_code == 200
    lines = [(a["principal"], a["worker"], a["outcome"]) for a in
             (line["audit"] for line in audit_lines(capsys.readouterr().out))]
    assert lines == [(f"serviceAccount:{INTAKE}", "brain", "ok"),
                     (f"serviceAccount:{INTAKE}", "testimonios", "refused"),
                     (f"user:{OPERATOR}", "brain", "refused"),
                     (f"user:{OPERATOR}", "testimonios", "ok")]


# -- API_AUTH=none: the original anonymous API, on purpose only ------------------------------


def test_api_auth_none_acts_as_all_users_as_access_says(emulator, worker, tmp_path, capsys,
                                                        caplog):
    open_to_all = '[access]\n"allUsers" = "operator"\n'
    with door(emulator, worker.url, paused=False, tmp=tmp_path, workers_toml=open_to_all,
              api_auth="none") as d:
        key = new_key("anonymous")
        r = d.enqueue("testimonios", idempotency_key=key)
        assert r.status_code == 200, r.text
        deliveries(worker, "testimonios", key)
        assert d.get("/workers").status_code == 200
        doc = d.get("/openapi.json").json()
        assert "securitySchemes" not in doc["components"]
        assert "security" not in doc["paths"]["/enqueue"]["post"]
        assert "401" not in doc["paths"]["/enqueue"]["post"]["responses"]
    (line,) = audit_lines(capsys.readouterr().out)
    assert (line["audit"]["principal"], line["audit"]["outcome"]) == ("allUsers", "ok")
    assert ("API_AUTH=none: the API is anonymous: it does not check who calls, and every caller "
            "acts as allUsers") in caplog.text
    assert "allUsers may enqueue to brain, testimonios, transcripciones and read GET /workers" \
        in caplog.text

    caplog.clear()
    with door(emulator, "http://127.0.0.1:9", paused=True, api_auth="none") as d:
        message = failure(d.enqueue(), 403, "forbidden")
        assert '"allUsers" = "operator"' in message
        failure(d.get("/workers"), 403, "forbidden")
        assert d.queued() == 0
    assert "allUsers may do nothing" in caplog.text


# -- what stays open, and a start that cannot work ------------------------------------------


def test_probes_and_the_contract_need_no_token(idle):
    assert idle.get("/healthz").json() == {"ok": True}
    assert idle.get("/readyz").json() == {"ok": True}
    assert idle.get("/openapi.json").status_code == 200


GOOGLE_ENV = {"PROJECT_ID": "acme", "TASKS_REGION": "us-central1",
              "CALLER_SA": "caller@acme.iam.gserviceaccount.com",
              "URL_BRAIN": "https://brain-abc-uc.a.run.app/process",
              "URL_TESTI": "https://testimonios-abc-uc.a.run.app/generate-testimony",
              "URL_TRANS": "https://transcripciones-abc-uc.a.run.app/api/transcribe"}


def test_on_google_without_api_audience_the_api_does_not_start():
    env = {k: v for k, v in os.environ.items()
           if k not in ("API_AUDIENCE", "API_AUTH", "CLOUD_TASKS_EMULATOR_HOST", "WORKERS_FILE")}
    out = subprocess.run(
        [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", "0"],
        cwd=ROOT, env={**env, **GOOGLE_ENV}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "set API_AUDIENCE to the API's own URL" in out.stderr
    assert "Traceback" not in out.stderr


def test_on_google_a_401_names_the_gcloud_commands_that_get_a_token():
    audience = "https://enqueuer-api-abc-uc.a.run.app"
    callers = Callers(load_settings(**{k.lower(): v for k, v in GOOGLE_ENV.items()},
                                    api_audience=audience))
    assert callers.certs_url == "https://www.googleapis.com/oauth2/v1/certs"
    message = callers.refusal(TokenRejected("no_header")).message
    commands = re.findall(r"`(gcloud [^`]+)`", message)
    assert commands == [
        f"gcloud auth print-identity-token --audiences={audience}",
        "gcloud auth print-identity-token --impersonate-service-account=SA "
        f"--audiences={audience} --include-email"]
    for command in commands:
        check_command(command)  # each one is a real gcloud command, with real flags
    assert "enqueuer --local" not in message
    message = callers.refusal(TokenRejected("unknown_key")).message
    assert "it was not minted by Google" in message

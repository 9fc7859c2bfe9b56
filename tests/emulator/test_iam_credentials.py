"""GenerateIdToken on the emulator through the official IAM Credentials client: a token that
Cloud Run's front door lets through, minted only for who may, in Google's words otherwise."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.api_core import exceptions as gexc
from google.auth import jwt
from google.cloud import iam_credentials_v1, run_v2
from google.cloud.iam_credentials_v1.services.iam_credentials.transports import (
    IAMCredentialsGrpcTransport,
)
from google.cloud.iam_credentials_v1.services.iam_credentials.transports.rest_base import (
    _BaseIAMCredentialsRestTransport,
)
from google.cloud.run_v2.services.services.transports import ServicesGrpcTransport

from emulator.rest_rules import IAM_CREDENTIALS_V1, RULES
from tests.emulator.harness import PARENT, PROJECT, RunningEmulator, start_emulator

CALLER = f"caller@{PROJECT}.iam.gserviceaccount.com"  # the account tokens are minted for
PROBER = f"serviceAccount:prober@{PROJECT}.iam.gserviceaccount.com"  # OpenIdTokenCreator
MINTER = "user:minter@example.com"  # TokenCreator on the project
NOBODY = "user:nobody@example.com"  # no grant at all
CONFIG = f"""
[iam]
enforce = true
principal = "{NOBODY}"
bindings = [
  {{ role = "roles/iam.serviceAccountTokenCreator", members = ["{MINTER}"] }},
  {{ role = "roles/run.viewer", members = ["{NOBODY}"] }},
]

[[service_accounts]]
email = "{CALLER}"
bindings = [
  {{ role = "roles/iam.serviceAccountOpenIdTokenCreator", members = ["{PROBER}"] }},
]

[[services]]
name = "worker"
port = 0
paths = ["/process"]
invokers = ["serviceAccount:{CALLER}"]
"""
NAME = f"projects/-/serviceAccounts/{CALLER}"


def as_(member: str) -> list[tuple[str, str]]:
    return [("x-emulator-principal", member)]


@pytest.fixture(scope="module")
def em(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    em = start_emulator(tmp_path_factory.mktemp("credentials"), CONFIG)
    yield em
    assert em.stop() == 0, "".join(em.stderr)


@pytest.fixture(scope="module")
def creds(em: RunningEmulator) -> iam_credentials_v1.IAMCredentialsClient:
    channel = grpc.insecure_channel(em.target)
    return iam_credentials_v1.IAMCredentialsClient(
        transport=IAMCredentialsGrpcTransport(channel=channel))


@pytest.fixture(scope="module")
def worker_url(em: RunningEmulator) -> str:
    run = run_v2.ServicesClient(
        transport=ServicesGrpcTransport(channel=grpc.insecure_channel(em.target)))
    return run.get_service(name=f"{PARENT}/services/worker").uri


def claims(em: RunningEmulator, token: str) -> dict:
    certs = httpx.get(f"{em.http_url}/oauth2/v1/certs", timeout=5).json()
    return jwt.decode(token, certs=certs)


def test_a_minted_token_gets_through_the_door_of_the_service(em, creds, worker_url):
    token = creds.generate_id_token(name=NAME, audience=worker_url, include_email=True,
                                    metadata=as_(PROBER)).token
    got = claims(em, token)
    assert got["aud"] == worker_url and got["iss"] == "https://accounts.google.com"
    assert got["email"] == CALLER and got["email_verified"] is True
    assert got["sub"] == got["azp"] and got["exp"] - got["iat"] == 3600
    answer = httpx.get(f"{worker_url}/process", headers={"Authorization": f"Bearer {token}"},
                       timeout=5)
    assert answer.status_code == 200 and answer.json()["service"] == "worker"
    # For another audience, the same account's token is turned away at the door.
    other = creds.generate_id_token(name=NAME, audience="https://elsewhere.example.com",
                                    include_email=True, metadata=as_(PROBER)).token
    refused = httpx.get(f"{worker_url}/process", headers={"Authorization": f"Bearer {other}"},
                        timeout=5)
    assert refused.status_code == 401 and "audience" in refused.headers["X-Emulator-Reason"]


def test_the_email_is_in_the_token_only_when_asked_for(em, creds, worker_url):
    token = creds.generate_id_token(name=NAME, audience=worker_url,
                                    metadata=as_(PROBER)).token
    got = claims(em, token)
    assert "email" not in got and "email_verified" not in got
    assert got["aud"] == worker_url and got["sub"]


def test_minting_needs_get_open_id_token_on_the_account_or_the_project(creds, worker_url):
    with pytest.raises(gexc.PermissionDenied) as e:
        creds.generate_id_token(name=NAME, audience=worker_url, metadata=as_(NOBODY))
    assert e.value.message == ("Permission 'iam.serviceAccounts.getOpenIdToken' denied on "
                               "resource (or it may not exist).")
    assert e.value.reason == "IAM_PERMISSION_DENIED" and e.value.domain == "iam.googleapis.com"
    assert e.value.metadata == {"permission": "iam.serviceAccounts.getOpenIdToken"}
    # TokenCreator on the project holds the permission too.
    assert creds.generate_id_token(name=NAME, audience=worker_url,
                                   metadata=as_(MINTER)).token.count(".") == 2


def test_an_unknown_account_is_not_found_for_who_may_and_refused_for_who_may_not(creds):
    ghost = f"ghost@{PROJECT}.iam.gserviceaccount.com"
    with pytest.raises(gexc.NotFound) as e:
        creds.generate_id_token(name=f"projects/-/serviceAccounts/{ghost}",
                                audience="https://a.example.com", metadata=as_(MINTER))
    assert e.value.message == f"Not found; Gaia id not found for email {ghost}"
    with pytest.raises(gexc.PermissionDenied):
        creds.generate_id_token(name=f"projects/-/serviceAccounts/{ghost}",
                                audience="https://a.example.com", metadata=as_(NOBODY))


@pytest.mark.parametrize(("name", "audience", "delegates", "error", "says"), [
    (NAME, "", [], gexc.InvalidArgument, "audience is required"),
    (f"projects/{PROJECT}/serviceAccounts/{CALLER}", "https://a.example.com", [],
     gexc.InvalidArgument, f"use projects/-/serviceAccounts/{CALLER}"),
    (CALLER, "https://a.example.com", [], gexc.InvalidArgument,
     "projects/-/serviceAccounts/EMAIL_OR_UNIQUE_ID"),
    (NAME, "https://a.example.com", [NAME], gexc.MethodNotImplemented, "delegates"),
])
def test_bad_requests_say_what_to_send(creds, name, audience, delegates, error, says):
    with pytest.raises(error) as e:
        creds.generate_id_token(name=name, audience=audience, delegates=delegates,
                                metadata=as_(MINTER))
    assert says in e.value.message


def test_over_rest_as_over_grpc(em, worker_url):
    rest = iam_credentials_v1.IAMCredentialsClient(**em.rest_options())
    token = rest.generate_id_token(name=NAME, audience=worker_url, include_email=True,
                                   metadata=as_(PROBER)).token
    assert claims(em, token)["email"] == CALLER
    with pytest.raises(gexc.Forbidden) as e:  # HTTP 403, the REST client's own class
        rest.generate_id_token(name=NAME, audience=worker_url, metadata=as_(NOBODY))
    assert "iam.serviceAccounts.getOpenIdToken" in e.value.message
    with pytest.raises(gexc.MethodNotImplemented):  # a method the emulator does not serve
        rest.sign_blob(name=NAME, payload=b"x", metadata=as_(MINTER))


def test_the_rest_rules_are_the_official_clients():
    t = _BaseIAMCredentialsRestTransport
    theirs = {(name.removeprefix("_Base"), o["method"].upper(), o["uri"], o.get("body", ""))
              for name in dir(t) if name.startswith("_Base")
              for o in getattr(t, name)._get_http_options()}
    ours = {(r.method, r.verb, r.template, r.body) for r in RULES
            if r.service == IAM_CREDENTIALS_V1}
    assert ours == theirs

"""IAP on the emulator: its keys at Google's paths, and assertions that an app verifies with
google-auth exactly as it verifies IAP's ``x-goog-iap-jwt-assertion``."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.auth import exceptions as auth_exc
from google.auth import jwt
from google.auth.transport.requests import Request
from google.oauth2 import id_token
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from tests.emulator.harness import RunningEmulator, emulator_on_disk

AUD = "/projects/123456789/apps/test-project"
USER = "alice@example.com"
IAP = "https://cloud.google.com/iap"


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("iap")


@pytest.fixture(scope="module")
def em(state: Path) -> Iterator[RunningEmulator]:
    with emulator_on_disk(state, "") as em:
        yield em


def assertion(em: RunningEmulator, **body: object) -> str:
    answer = httpx.post(f"{em.http_url}/emulator/v1/iap-assertion",
                        json={"email": USER, "audience": AUD, **body})
    assert answer.status_code == 200, answer.text
    return answer.json()["assertion"]


def verify(em: RunningEmulator, token: str, audience: str = AUD) -> dict:
    return id_token.verify_token(token, Request(), audience=audience,
                                 certs_url=f"{em.http_url}/iap/verify/public_key")


def b64url_int(value: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def test_public_keys_in_googles_two_formats_are_the_same_key(em):
    pem = httpx.get(f"{em.http_url}/iap/verify/public_key").json()
    jwks = httpx.get(f"{em.http_url}/iap/verify/public_key-jwk").json()
    ((kid, key_pem),) = pem.items()
    assert key_pem.startswith("-----BEGIN PUBLIC KEY-----")
    (jwk,) = jwks["keys"]
    assert {k: jwk[k] for k in ("kty", "crv", "kid", "alg", "use")} == {
        "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig"}
    public = serialization.load_pem_public_key(key_pem.encode())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    numbers = public.public_numbers()
    assert (b64url_int(jwk["x"]), b64url_int(jwk["y"])) == (numbers.x, numbers.y)


def test_a_valid_assertion_verifies_like_iaps(em):
    token = assertion(em)
    header = jwt.decode_header(token)
    assert header["alg"] == "ES256"
    assert header["kid"] in httpx.get(f"{em.http_url}/iap/verify/public_key").json()
    claims = verify(em, token)
    assert claims["iss"] == IAP and claims["aud"] == AUD and claims["email"] == USER
    assert claims["sub"].startswith("accounts.google.com:")
    assert claims["sub"].removeprefix("accounts.google.com:").isdigit()
    assert claims["exp"] - claims["iat"] == 600
    # The JWK set verifies it too (what a JOSE library given public_key-jwk does).
    keys = KeySet.import_key_set(httpx.get(f"{em.http_url}/iap/verify/public_key-jwk").json())
    assert jose_jwt.decode(token, keys).claims["email"] == USER


def test_wrong_audience_is_refused(em):
    with pytest.raises(auth_exc.GoogleAuthError, match="audience"):
        verify(em, assertion(em), audience="/projects/123456789/apps/another-project")


def test_wrong_issuer_is_what_the_app_must_check(em):
    # verify_token checks signature, audience and time, not the issuer: the app must.
    claims = verify(em, assertion(em, issuer="https://accounts.google.com"))
    assert claims["iss"] == "https://accounts.google.com" != IAP


def test_expired_assertion_is_refused(em):
    token = assertion(em, expires_in_s=-60)
    with pytest.raises(auth_exc.GoogleAuthError, match="expired"):
        verify(em, token)
    claims = jwt.decode(token, verify=False)
    assert claims["iat"] < claims["exp"]


@pytest.mark.parametrize(("body", "says"), [
    ({"email": "alice"}, "not an email address"),
    ({"audience": ""}, "audience must be a non-empty string"),
    ({"issuer": 7}, "issuer must be a non-empty string"),
    ({"expires_in_s": "soon"}, "expires_in_s must be"),
    ({"expires_in_s": 10**9}, "expires_in_s must be"),
    ({"hd": "example.com"}, "unknown field 'hd'"),
])
def test_bad_assertion_requests_say_what_to_fix(em, body, says):
    answer = httpx.post(f"{em.http_url}/emulator/v1/iap-assertion",
                        json={"email": USER, "audience": AUD, **body})
    assert answer.status_code == 400
    assert says in answer.json()["error"]["message"]


def test_the_key_survives_a_restart(tmp_path):
    with emulator_on_disk(tmp_path, "") as first:
        before = httpx.get(f"{first.http_url}/iap/verify/public_key").json()
        token = assertion(first)
    with emulator_on_disk(tmp_path, "") as second:
        assert httpx.get(f"{second.http_url}/iap/verify/public_key").json() == before
        assert verify(second, token)["email"] == USER

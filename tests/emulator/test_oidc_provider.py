"""The emulator as Google sign-in: Authlib's own clients (the ones ``st.login`` runs) log in
against it, and google-auth verifies what they get, as both would against Google."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import warnings
from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlsplit

import authlib.deprecate  # noqa: F401  (imported first: it sets its warnings to "always")
import httpx
import pytest
from google.auth import exceptions as auth_exc
from google.auth.transport.requests import Request
from google.oauth2 import id_token as google_id_token

from tests.emulator.harness import ROOT, RunningEmulator, start_emulator

with warnings.catch_warnings():
    # Authlib prefers httpx2 but still works with httpx, the one installed here.
    warnings.filterwarnings("ignore", "The httpx module is deprecated")
    from authlib.common.security import generate_token
    from authlib.integrations.httpx_client import OAuth2Client
    from authlib.integrations.starlette_client import OAuth
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

CLIENT_ID, SECRET = "dashboard", "dashboard-secret"
REDIRECT = "http://localhost:8501/oauth2callback"
CONFIG = f"""
[oidc]
users = [
  "alice@example.com",
  {{ email = "bob@example.com", name = "Bob Example" }},
  {{ email = "eve@example.com", name = "<Eve & Co>" }},
]

[[oidc.clients]]
client_id = "{CLIENT_ID}"
client_secret = "{SECRET}"
redirect_uris = ["{REDIRECT}"]
"""
GOOGLE = "https://accounts.google.com"


class Page(HTMLParser):
    """The forms of a page: their action, hidden fields, buttons and text fields."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.forms: list[dict] = []
        self.text = text
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": a.get("method", ""),
                               "hidden": [], "buttons": [], "inputs": []})
        elif tag == "input" and a.get("type") == "hidden":
            self.forms[-1]["hidden"].append((a["name"], a.get("value", "")))
        elif tag == "input":
            self.forms[-1]["inputs"].append(a)
        elif tag == "button":
            self.forms[-1]["buttons"].append(a)

    def account_form(self, email: str) -> dict:
        return next(f for f in self.forms
                    if any(b.get("data-email") == email for b in f["buttons"]))

    def other_email_form(self) -> dict:
        return next(f for f in self.forms if any(i.get("type") == "email" for i in f["inputs"]))


def form_data(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    data: dict[str, list[str]] = {}
    for k, v in pairs:
        data.setdefault(k, []).append(v)
    return data


def choose(auth_url: str, email: str, other: bool = False) -> httpx.Response:
    """Open the login page and pick ``email``: its button, or typed in the other field."""
    page = httpx.get(auth_url)
    assert page.status_code == 200, page.text
    parsed = Page(page.text)
    form = parsed.other_email_form() if other else parsed.account_form(email)
    assert form["method"] == "post"
    return httpx.post(urljoin(str(page.url), form["action"]),
                      data=form_data([*form["hidden"], ("email", email)]))


def callback_params(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@pytest.fixture(scope="module")
def em(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    em = start_emulator(tmp_path_factory.mktemp("oidc"), CONFIG)
    try:
        yield em
    finally:
        assert em.stop() == 0, "".join(em.stderr)


@pytest.fixture(scope="module")
def meta(em: RunningEmulator) -> dict:
    return httpx.get(f"{em.http_url}/.well-known/openid-configuration").json()


def authlib_client(**kwargs: object) -> OAuth2Client:
    return OAuth2Client(CLIENT_ID, SECRET, scope="openid email profile", redirect_uri=REDIRECT,
                        code_challenge_method="S256", **kwargs)


def code_for(meta: dict, email: str = "alice@example.com", **params: str) -> tuple[str, str]:
    """A code for ``email`` with an S256 challenge, and its verifier."""
    client, verifier = authlib_client(), generate_token(48)
    url, state = client.create_authorization_url(meta["authorization_endpoint"],
                                                 code_verifier=verifier, nonce="n", **params)
    got = callback_params(choose(url, email))
    assert got["state"] == state
    return got["code"], verifier


def exchange(meta: dict, code: str, verifier: str | None, redirect_uri: str = REDIRECT,
             auth: tuple[str, str] = (CLIENT_ID, SECRET)) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if verifier is not None:
        data["code_verifier"] = verifier
    return httpx.post(meta["token_endpoint"], data=data, auth=auth)


def test_discovery_is_googles_with_the_emulators_endpoints(em, meta):
    assert meta["issuer"] == GOOGLE
    assert meta["authorization_endpoint"] == f"{em.http_url}/o/oauth2/v2/auth"
    assert meta["token_endpoint"] == f"{em.http_url}/token"
    assert meta["userinfo_endpoint"] == f"{em.http_url}/v1/userinfo"
    assert meta["jwks_uri"] == f"{em.http_url}/oauth2/v3/certs"
    assert "code" in meta["response_types_supported"]
    assert meta["code_challenge_methods_supported"] == ["plain", "S256"]
    assert meta["scopes_supported"] == ["openid", "email", "profile"]
    assert set(meta["token_endpoint_auth_methods_supported"]) == {"client_secret_post",
                                                                  "client_secret_basic"}
    assert meta["grant_types_supported"] == ["authorization_code"]
    assert meta["id_token_signing_alg_values_supported"] == ["RS256"]


def test_authlib_client_signs_in_and_google_auth_verifies_the_id_token(em, meta):
    client, nonce = authlib_client(), generate_token(20)
    verifier = generate_token(48)
    url, state = client.create_authorization_url(meta["authorization_endpoint"],
                                                 code_verifier=verifier, nonce=nonce)
    assert "code_challenge_method=S256" in url
    callback = choose(url, "bob@example.com").headers["location"]
    token = client.fetch_token(meta["token_endpoint"], authorization_response=callback,
                               state=state, code_verifier=verifier)
    assert token["token_type"] == "Bearer" and token["expires_in"] == 3599
    assert set(token["scope"].split()) == {"openid", "email", "profile"}

    claims = google_id_token.verify_token(token["id_token"], Request(), audience=CLIENT_ID,
                                          certs_url=f"{em.http_url}/oauth2/v1/certs")
    assert claims["iss"] == GOOGLE and claims["azp"] == CLIENT_ID
    assert claims["nonce"] == nonce
    assert claims["email"] == "bob@example.com" and claims["email_verified"] is True
    assert claims["name"] == "Bob Example" and claims["sub"].isdigit()
    assert claims["exp"] - claims["iat"] == 3600

    # The same token through joserfc (what Authlib verifies with), against the JWKS.
    keys = KeySet.import_key_set(httpx.get(meta["jwks_uri"]).json())
    decoded = jose_jwt.decode(token["id_token"], keys)
    jose_jwt.JWTClaimsRegistry(iss={"essential": True, "value": meta["issuer"]},
                               aud={"essential": True, "value": CLIENT_ID},
                               nonce={"essential": True, "value": nonce}).validate(decoded.claims)

    # The access token answers who signed in.
    me = client.get(meta["userinfo_endpoint"]).json()
    assert me == {"sub": claims["sub"], "email": "bob@example.com", "email_verified": True,
                  "name": "Bob Example"}


def test_what_st_login_runs_signs_in_with_another_email(em):
    """Streamlit's st.login: Authlib's Starlette app, discovery, S256, nonce, parse_id_token
    (which checks iss against discovery, aud, nonce and at_hash)."""
    oauth = OAuth()
    app = oauth.register(
        "emulator", client_id=CLIENT_ID, client_secret=SECRET,
        server_metadata_url=f"{em.http_url}/.well-known/openid-configuration",
        client_kwargs={"scope": "openid email profile", "prompt": "select_account",
                       "code_challenge_method": "S256"},
    )

    async def log_in() -> dict:
        started = await app.create_authorization_url(REDIRECT)
        got = callback_params(choose(started["url"], "carol@example.org", other=True))
        assert got["state"] == started["state"]
        token = await app.fetch_access_token(redirect_uri=REDIRECT, code=got["code"],
                                             code_verifier=started["code_verifier"])
        return dict(await app.parse_id_token(token, started["nonce"]))

    user = asyncio.run(log_in())
    assert user["email"] == "carol@example.org" and user["name"] == "carol"
    assert user["iss"] == GOOGLE and user["aud"] == CLIENT_ID


def test_login_page_lists_the_configured_accounts(meta):
    client = authlib_client()
    url, _ = client.create_authorization_url(meta["authorization_endpoint"],
                                             code_verifier=generate_token(48))
    page = httpx.get(url)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text.startswith("<!DOCTYPE html>") and "<h1>Choose an account</h1>" in page.text
    parsed = Page(page.text)
    emails = [b["data-email"] for f in parsed.forms for b in f["buttons"] if "data-email" in b]
    assert emails == ["alice@example.com", "bob@example.com", "eve@example.com"]
    # Each button's accessible name is the email; the name is what describes it.
    assert '>bob@example.com</button> <span id="user-1-name">Bob Example</span>' in page.text
    assert "&lt;Eve &amp; Co&gt;" in page.text and "<Eve" not in page.text
    assert 'for="other-email"' in page.text


def test_a_configured_name_with_markup_reaches_the_token_unescaped(meta):
    code, verifier = code_for(meta, "eve@example.com")
    token = exchange(meta, code, verifier).json()
    claims = google_id_token.verify_token(token["id_token"], Request(), audience=CLIENT_ID,
                                          certs_url=meta["jwks_uri"].replace("v3", "v1"))
    assert claims["name"] == "<Eve & Co>"


def test_another_email_that_is_not_one_is_refused_on_the_page(meta):
    client = authlib_client()
    url, _ = client.create_authorization_url(meta["authorization_endpoint"],
                                             code_verifier=generate_token(48))
    page = httpx.get(url)
    form = Page(page.text).other_email_form()
    bad = httpx.post(urljoin(str(page.url), form["action"]),
                     data=form_data([*form["hidden"], ("email", "carol@localhost")]))
    assert bad.status_code == 400 and "location" not in bad.headers
    assert "is not an email address" in bad.text and 'value="carol@localhost"' in bad.text
    # The page still works: the same form, fixed, signs in.
    again = Page(bad.text).other_email_form()
    ok = httpx.post(urljoin(str(page.url), again["action"]),
                    data=form_data([*again["hidden"], ("email", "carol@example.org")]))
    assert "code" in callback_params(ok)


def test_client_secret_post_and_plain_pkce(meta):
    client = OAuth2Client(CLIENT_ID, SECRET, scope="openid email", redirect_uri=REDIRECT,
                          code_challenge_method="plain",
                          token_endpoint_auth_method="client_secret_post")
    verifier = generate_token(48)
    url, state = client.create_authorization_url(meta["authorization_endpoint"],
                                                 code_verifier=verifier)
    callback = choose(url, "alice@example.com").headers["location"]
    token = client.fetch_token(meta["token_endpoint"], authorization_response=callback,
                               state=state, code_verifier=verifier)
    claims = google_id_token.verify_token(token["id_token"], Request(), audience=CLIENT_ID,
                                          certs_url=meta["jwks_uri"].replace("v3", "v1"))
    assert claims["email"] == "alice@example.com" and claims["name"] == "alice"
    assert "nonce" not in claims


def test_wrong_or_missing_code_verifier_is_invalid_grant(meta):
    code, _ = code_for(meta)
    wrong = exchange(meta, code, generate_token(48))
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert "code_verifier does not match" in wrong.json()["error_description"]
    code, _ = code_for(meta)
    missing = exchange(meta, code, None)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_grant"
    assert "code_verifier" in missing.json()["error_description"]


def test_a_code_works_once(meta):
    code, verifier = code_for(meta)
    assert exchange(meta, code, verifier).status_code == 200
    again = exchange(meta, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert "already used" in again.json()["error_description"]


def test_redirect_uri_must_match_at_the_token_endpoint(meta):
    code, verifier = code_for(meta)
    other = exchange(meta, code, verifier, redirect_uri="http://localhost:8501/elsewhere")
    assert other.status_code == 400 and other.json()["error"] == "invalid_grant"
    assert REDIRECT in other.json()["error_description"]


def test_bad_client_secret_is_401_invalid_client(meta):
    code, verifier = code_for(meta)
    bad = exchange(meta, code, verifier, auth=(CLIENT_ID, "not-the-secret"))
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    assert bad.headers["www-authenticate"].startswith("Basic")
    # The code was not spent by someone who could not authenticate.
    assert exchange(meta, code, verifier).status_code == 200


def test_token_endpoint_errors_say_what_to_fix(meta):
    post = httpx.post(meta["token_endpoint"], data={"grant_type": "password"},
                      auth=(CLIENT_ID, SECRET))
    assert post.status_code == 400 and post.json()["error"] == "unsupported_grant_type"
    no_code = httpx.post(meta["token_endpoint"], data={"grant_type": "authorization_code"},
                         auth=(CLIENT_ID, SECRET))
    assert no_code.json() == {"error": "invalid_request",
                              "error_description": "Missing required parameter: code."}
    anonymous = httpx.post(meta["token_endpoint"], data={"grant_type": "authorization_code"})
    assert anonymous.status_code == 401 and "client_secret_basic" in anonymous.text
    stranger = httpx.post(meta["token_endpoint"], data={"grant_type": "authorization_code"},
                          auth=("stranger", "x"))
    assert stranger.status_code == 401 and "'stranger'" in stranger.json()["error_description"]


def test_unknown_client_gets_an_error_page_not_a_redirect(meta):
    client = OAuth2Client("stranger", "x", scope="openid", redirect_uri=REDIRECT)
    url, _ = client.create_authorization_url(meta["authorization_endpoint"])
    page = httpx.get(url)
    assert page.status_code == 400 and "location" not in page.headers
    assert "invalid_client" in page.text and "&#x27;stranger&#x27;" in page.text


def test_unregistered_redirect_uri_gets_an_error_page_not_a_redirect(meta):
    evil = "http://evil.example/steal"
    client = OAuth2Client(CLIENT_ID, SECRET, scope="openid", redirect_uri=evil)
    url, _ = client.create_authorization_url(meta["authorization_endpoint"])
    page = httpx.get(url)
    assert page.status_code == 400 and "location" not in page.headers
    assert "redirect_uri_mismatch" in page.text and REDIRECT in page.text
    # Posting the page's form directly is refused the same way.
    posted = httpx.post(meta["authorization_endpoint"], data={
        "client_id": CLIENT_ID, "redirect_uri": evil, "response_type": "code",
        "scope": "openid", "email": "alice@example.com"})
    assert posted.status_code == 400 and "location" not in posted.headers


@pytest.mark.parametrize(("params", "error"), [
    ({"scope": "email profile"}, "invalid_scope"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"code_challenge": "short", "code_challenge_method": "S256"}, "invalid_request"),
    ({"prompt": "none"}, "login_required"),
])
def test_other_bad_requests_go_back_to_the_app_with_the_error(meta, params, error):
    query = {"client_id": CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code",
             "scope": "openid", "state": "s-1", **params}
    back = httpx.get(meta["authorization_endpoint"], params=query)
    got = callback_params(back)
    assert got["error"] == error and got["state"] == "s-1" and got["error_description"]


def test_userinfo_needs_a_live_access_token(meta):
    bare = httpx.get(meta["userinfo_endpoint"])
    assert bare.status_code == 401 and "Bearer" in bare.json()["error_description"]
    assert bare.headers["www-authenticate"].startswith("Bearer")
    bogus = httpx.get(meta["userinfo_endpoint"], headers={"Authorization": "Bearer ya29.x"})
    assert bogus.status_code == 401 and bogus.json()["error"] == "invalid_token"


def test_id_token_endpoint_mints_a_callers_token(em):
    caller, aud = "caller@test-project.iam.gserviceaccount.com", "https://brain.example"
    answer = httpx.post(f"{em.http_url}/emulator/v1/id-token",
                        json={"email": caller, "audience": aud})
    assert answer.status_code == 200
    claims = google_id_token.verify_token(answer.json()["id_token"], Request(), audience=aud,
                                          certs_url=f"{em.http_url}/oauth2/v1/certs")
    assert claims["email"] == caller and claims["iss"] == GOOGLE
    with pytest.raises(auth_exc.GoogleAuthError, match="audience"):
        google_id_token.verify_token(answer.json()["id_token"], Request(),
                                     audience="https://other.example",
                                     certs_url=f"{em.http_url}/oauth2/v1/certs")


@pytest.mark.parametrize(("body", "says"), [
    ({"email": "caller", "audience": "https://a.example"}, "not an email address"),
    ({"email": "c@x.example", "audience": "brain"}, "absolute http:// or https:// URL"),
    ({"email": "c@x.example"}, "missing field 'audience'"),
    ({"email": "c@x.example", "audience": "https://a.example", "ttl": 5}, "unknown field"),
    ([1, 2], "must be a JSON object"),
])
def test_id_token_endpoint_refuses_bad_input(em, body, says):
    answer = httpx.post(f"{em.http_url}/emulator/v1/id-token", json=body)
    assert answer.status_code == 400
    assert says in answer.json()["error"]["message"]


def test_without_clients_any_client_and_http_redirect_is_accepted(tmp_path):
    em = start_emulator(tmp_path, "")
    try:
        meta = httpx.get(f"{em.http_url}/.well-known/openid-configuration").json()
        redirect = "http://127.0.0.1:9999/cb?keep=1"
        client = OAuth2Client("any-app", "any-secret", scope="openid email",
                              redirect_uri=redirect, code_challenge_method="S256")
        verifier = generate_token(48)
        url, state = client.create_authorization_url(meta["authorization_endpoint"],
                                                     code_verifier=verifier)
        page = httpx.get(url)
        assert "No accounts are configured" in page.text
        form = Page(page.text).other_email_form()
        back = httpx.post(urljoin(str(page.url), form["action"]),
                          data=form_data([*form["hidden"], ("email", "dev@example.com")]))
        query = parse_qs(urlsplit(back.headers["location"]).query)
        assert query["keep"] == ["1"] and query["state"] == [state]
        token = client.fetch_token(meta["token_endpoint"], authorization_response=str(
            back.headers["location"]), state=state, code_verifier=verifier)
        claims = google_id_token.verify_token(token["id_token"], Request(), audience="any-app",
                                              certs_url=f"{em.http_url}/oauth2/v1/certs")
        assert claims["email"] == "dev@example.com"
        # Not http(s): an error page, still never a redirect.
        bad = httpx.get(meta["authorization_endpoint"], params={
            "client_id": "any-app", "redirect_uri": "javascript:alert(1)",
            "response_type": "code", "scope": "openid"})
        assert bad.status_code == 400 and "location" not in bad.headers
    finally:
        assert em.stop() == 0, "".join(em.stderr)


def test_a_bad_user_in_the_config_stops_the_emulator_with_the_fix(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[oidc]\nusers = ["alice@example.com", "bob"]\n')
    out = subprocess.run([sys.executable, "-m", "emulator", "--config", str(cfg), "--db",
                          ":memory:", "--port", "0", "--http-port", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "oidc.users.1.email" in out.stderr and '"alice@example.com"' in out.stderr


def test_basic_credentials_are_url_decoded(meta):
    # RFC 6749 2.3.1: client_secret_basic form-encodes the ID and secret first.
    code, verifier = code_for(meta)
    raw = base64.b64encode(f"{CLIENT_ID}:{SECRET.replace('-', '%2D')}".encode()).decode()
    answer = httpx.post(meta["token_endpoint"], headers={"Authorization": f"Basic {raw}"},
                        data={"grant_type": "authorization_code", "code": code,
                              "redirect_uri": REDIRECT, "code_verifier": verifier})
    assert answer.status_code == 200, answer.text

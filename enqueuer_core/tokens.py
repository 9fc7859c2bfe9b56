"""ID tokens for calling the API: from the emulator's issuer on the local stack.

``enqueuer --local token`` prints one, so that a local caller authenticates exactly as a
client program does on Google (``Authorization: Bearer <Google ID token>`` for the API's
URL). The emulator signs it with the keys it publishes where Google publishes its own
(``/oauth2/v1/certs``), so the API verifies it as it verifies Google's. On Google, Enqueuer
mints nothing: ``gcloud`` (or ``google.oauth2.id_token.fetch_id_token``) does, and
``google_command`` says how.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import httpx

from enqueuer_core.access import check_member
from enqueuer_core.config import LOCAL_API_CALLER, Settings, check_url
from enqueuer_core.errors import ConfigError, EnqueuerError, InvalidRequest, Unavailable

ID_TOKEN_PATH = "/emulator/v1/id-token"
TIMEOUT_S = 10.0


def token_email(value: str) -> str:
    """The email a token is for, from ``--as``: an email, or a ``user:``/``serviceAccount:``
    member (a token is one identity's, so never a group, a domain or everyone)."""
    value = value.strip()
    if ":" not in value:
        value = f"user:{value}"
    kind = value.partition(":")[0]
    if kind not in ("user", "serviceAccount"):
        raise InvalidRequest(
            f"--as {value!r}: a token is one account's, not a {kind}'s: pass an email, for "
            f"example --as {LOCAL_API_CALLER}")
    problem = check_member(value)
    if problem:
        raise InvalidRequest(f"--as {value.partition(':')[2]!r}: {problem}. Pass an email, "
                             f"for example --as {LOCAL_API_CALLER}")
    return value.partition(":")[2]


def token_audience(value: str) -> str:
    try:
        check_url("--audience", value)
    except ValueError:
        raise InvalidRequest(
            f"--audience {value!r} is not an http(s) URL: pass the API's URL, for example "
            "--audience http://127.0.0.1:8080") from None
    return value


def google_command(audience: str | None, email: str | None = None) -> str:
    """The gcloud line that prints the same kind of token on Google."""
    words = ["gcloud", "auth", "print-identity-token",
             f"--audiences={audience or 'API_URL'}"]
    if email:
        # Without --include-email an impersonated token names nobody the API could match.
        words += [f"--impersonate-service-account={email}", "--include-email"]
    return " ".join(shlex.quote(w) for w in words)


def token_command(settings: Settings) -> str:
    """The shell command that prints a token for calling this API: ``enqueuer --local token``
    on the local stack, gcloud on Google (for the account gcloud is logged in as)."""
    if settings.on_emulator:
        installed = Path(sys.executable).with_name("enqueuer")
        enqueuer = str(installed) if installed.is_file() else "enqueuer"
        return f"{shlex.quote(enqueuer)} --local token"
    return google_command(settings.api_audience)


def mint_id_token(emulator_http: str, email: str, audience: str,
                  timeout: float = TIMEOUT_S) -> str:
    """A Google-shaped ID token for ``email`` with ``aud`` = ``audience``, signed by the
    emulator at ``emulator_http``. ``Unavailable`` when it does not answer, with how to start
    it; ``InvalidRequest`` when it refuses the email or the audience."""
    url = emulator_http.rstrip("/") + ID_TOKEN_PATH
    try:
        r = httpx.post(url, json={"email": email, "audience": audience}, timeout=timeout)
    except httpx.TransportError as e:
        raise Unavailable(
            f"the emulator's identity provider at {emulator_http} does not answer "
            f"({type(e).__name__}: {e}): start the local stack with `make run` (or "
            "`.venv/bin/enqueuer dev`), then run this again. A stack started with --state "
            "DIR is found with ENQUEUER_STATE=DIR") from None
    if r.status_code == 400:
        raise InvalidRequest(f"the emulator refused the token: {_message(r)}")
    if r.status_code == 404:
        raise EnqueuerError(
            f"the emulator at {emulator_http} mints no ID tokens ({url} answered 404): it is "
            "older than this Enqueuer or not Enqueuer's emulator; restart `enqueuer dev`")
    if r.status_code != 200:
        raise EnqueuerError(f"the emulator answered {r.status_code} to {url}: {_message(r)}")
    try:
        return str(r.json()["id_token"])
    except (ValueError, KeyError, TypeError):
        raise EnqueuerError(f"the emulator's answer from {url} holds no id_token: "
                            f"{r.text[:200]!r}") from None


def _message(r: httpx.Response) -> str:
    try:
        return str(r.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return r.text[:500]


def local_id_token(settings: Settings | None, email: str | None = None,
                   audience: str | None = None) -> str:
    """``enqueuer token``: a token for ``email`` (default ``LOCAL_API_CALLER``, an operator
    of the local stack) and ``audience`` (default ``API_AUDIENCE``) from the emulator's issuer.

    Refused (``ConfigError``, with the gcloud line that does it) when the settings are
    Google's (``None``: Google's, and not even complete): there, tokens come from Google.
    """
    who = token_email(email) if email is not None else LOCAL_API_CALLER
    aud = token_audience(audience) if audience is not None else (
        settings.api_audience if settings else None)
    if settings is None or not settings.on_emulator:
        raise refused_on_google(aud, email and who)
    if not settings.emulator_http_url:
        raise ConfigError(
            "the emulator's HTTP address is unknown: set EMULATOR_HTTP_URL (for example "
            "http://127.0.0.1:8124), or use --local with `enqueuer dev` running")
    if not aud:
        raise InvalidRequest("no audience: pass --audience with the API's URL, or set "
                             "API_AUDIENCE")
    return mint_id_token(settings.emulator_http_url, who, aud)


def refused_on_google(audience: str | None, email: str | None = None) -> ConfigError:
    """Why ``enqueuer token`` mints nothing outside the local stack, and what does."""
    account = email if email and email.endswith(".gserviceaccount.com") else None
    if account:
        how = google_command(audience, account)
    else:
        # --audiences needs a service account's credentials: a user impersonates one.
        how = (f"{google_command(audience)} (from a laptop, add --impersonate-service-account="
               "CLIENT@PROJECT.iam.gserviceaccount.com --include-email, an account you hold "
               "roles/iam.serviceAccountTokenCreator on")
        how += (f"; a person's own token, {email}'s, carries gcloud's audience, not the API's)"
                if email else ")")
    return ConfigError(
        "enqueuer token mints tokens for the local stack only (use --local, or set "
        f"CLOUD_TASKS_EMULATOR_HOST); on Google, Google mints them: {how}")

"""Google sign-in, locally: the OpenID Connect authorization-code flow at Google's paths.

A client configured for Google (Streamlit's ``st.login``, Authlib, any OIDC library) is
pointed at ``http://EMULATOR_HTTP/.well-known/openid-configuration`` instead of
``https://accounts.google.com/...`` and works unchanged:

1. ``GET /o/oauth2/v2/auth``: "Choose an account" lists the ``[oidc] users`` of the config,
   and a field signs in as any other email. No password: this is a local stand-in.
2. Choosing one (``POST`` of that page) redirects to ``redirect_uri?code=...&state=...``.
3. ``POST /token`` exchanges the code (client_secret_basic or client_secret_post, PKCE
   ``plain`` or ``S256``) for an access token and an RS256 ID token signed with the
   emulator's OIDC key, so ``/oauth2/v3/certs`` and ``/oauth2/v1/certs`` verify it.
4. ``GET /v1/userinfo`` with the access token answers who signed in.

Like Google, a client's redirect URI must be one of those registered, character for
character, and a bad client or redirect URI gets an error page, never a redirect. Unlike
Google, with no ``[[oidc.clients]]`` configured any client ID and secret and any http(s)
redirect URI are accepted (the emulator's permissive default), codes and access tokens are
kept in memory (a restart forgets them; ID tokens still verify), there are no refresh
tokens, and the issuer (``https://accounts.google.com``, the ``iss`` of every token, which
clients check against discovery) differs from the URL the provider is served at.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from emulator.config import OidcConfig, OidcUser, email_problem, http_url_problem
from emulator.login_pages import AUTH_PATH, NO_STORE, choose_page, error_page
from emulator.oidc import Issuer, subject_id

TOKEN_PATH = "/token"
USERINFO_PATH = "/v1/userinfo"
CODE_LIFETIME_S = 600
ACCESS_TOKEN_LIFETIME_S = 3599
# RFC 7636 4.1: 43-128 characters of [A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~".
_PKCE_RE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


def discovery(base_url: str) -> dict[str, object]:
    """Google's discovery document, with the endpoints at ``base_url``."""
    return {
        **Issuer.discovery(base_url),
        "authorization_endpoint": f"{base_url}{AUTH_PATH}",
        "token_endpoint": f"{base_url}{TOKEN_PATH}",
        "userinfo_endpoint": f"{base_url}{USERINFO_PATH}",
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["plain", "S256"],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "grant_types_supported": ["authorization_code"],
    }


@dataclass(frozen=True)
class AuthorizationRequest:
    client_id: str
    redirect_uri: str
    state: str | None
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None


@dataclass(frozen=True)
class Grant:
    """What a code, and then an access token, stands for."""

    request: AuthorizationRequest
    user: OidcUser
    expires_at: float


class _OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


class _PageError(_OAuthError):
    """The client or redirect URI cannot be trusted: show the error, never redirect."""


class _RedirectError(_OAuthError):
    """RFC 6749 4.1.2.1: told to the client at its (verified) redirect URI."""


class _TokenError(_OAuthError):
    """RFC 6749 5.2, as JSON."""


class Provider:
    def __init__(self, config: OidcConfig, issuer: Issuer) -> None:
        self.config = config
        self.issuer = issuer
        self._codes: dict[str, Grant] = {}
        self._access_tokens: dict[str, Grant] = {}

    # -- the authorization endpoint ---------------------------------------------------

    async def authorize_page(self, request: web.Request) -> web.Response:
        return self._authorize(request.query, None)

    async def authorize_submit(self, request: web.Request) -> web.Response:
        form = await request.post()
        params = MultiDictProxy(MultiDict((k, v) for k, v in form.items() if isinstance(v, str)))
        # RFC 6749 3.1 allows the request itself as a POST: no email yet, show the page.
        email = params.get("email")
        return self._authorize(params, None if email is None else email.strip())

    def _authorize(self, params: MultiDictProxy[str], email: str | None) -> web.Response:
        try:
            client_id, redirect_uri = self._check_client(params)
            state = _one(params, "state", redirect=False)
        except _PageError as e:
            return error_page(e.error, e.description)
        try:
            req = self._check_request(params, client_id, redirect_uri, state)
        except _RedirectError as e:
            return _redirect(redirect_uri, error=e.error, error_description=e.description,
                             state=state)
        hidden = [(k, v) for k, v in params.items() if k != "email"]
        if email is None:
            hint = params.get("login_hint", "")
            return choose_page(client_id, self.config.users, hidden,
                                "" if email_problem(hint) else hint, None)
        if problem := email_problem(email):
            return choose_page(client_id, self.config.users, hidden, email, problem)
        now = time.time()
        self._codes = {c: g for c, g in self._codes.items() if g.expires_at > now}
        code = secrets.token_urlsafe(32)
        self._codes[code] = Grant(req, self.config.user(email), now + CODE_LIFETIME_S)
        return _redirect(redirect_uri, code=code, state=state)

    def _check_client(self, params: MultiDictProxy[str]) -> tuple[str, str]:
        client_id = _one(params, "client_id", redirect=False)
        redirect_uri = _one(params, "redirect_uri", redirect=False)
        if not client_id:
            raise _PageError("invalid_request", "Missing required parameter: client_id. "
                             "Send the OAuth client ID the app is configured with.")
        if not redirect_uri:
            raise _PageError("invalid_request", "Missing required parameter: redirect_uri. "
                             "Send the URL the app receives the code at.")
        if not self.config.clients:
            if problem := http_url_problem(redirect_uri, "redirect_uri"):
                raise _PageError("invalid_request", problem)
            return client_id, redirect_uri
        client = next((c for c in self.config.clients if c.client_id == client_id), None)
        if client is None:
            known = ", ".join(c.client_id for c in self.config.clients)
            raise _PageError("invalid_client", f"The OAuth client was not found: {client_id!r}"
                             f" is not configured. Use one of: {known}; or add it as an"
                             " [[oidc.clients]] entry in the emulator's config.")
        if redirect_uri not in client.redirect_uris:
            registered = ", ".join(client.redirect_uris)
            raise _PageError("redirect_uri_mismatch", f"redirect_uri {redirect_uri!r} is not "
                             f"registered for client {client_id!r} (registered: {registered})."
                             " Add it to that client's redirect_uris in the emulator's config, "
                             "or send one of those exactly.")
        return client_id, redirect_uri

    def _check_request(self, params: MultiDictProxy[str], client_id: str, redirect_uri: str,
                       state: str | None) -> AuthorizationRequest:
        response_type = _one(params, "response_type")
        if not response_type:
            raise _RedirectError("invalid_request", "Missing required parameter: response_type."
                                 " Send response_type=code.")
        if response_type != "code":
            raise _RedirectError("unsupported_response_type", f"response_type {response_type!r}"
                                 " is not supported here: send response_type=code (the "
                                 "authorization-code flow).")
        scope = _one(params, "scope")
        if not scope:
            raise _RedirectError("invalid_request", "Missing required parameter: scope. "
                                 'Send scope="openid email profile".')
        scopes = list(dict.fromkeys(scope.split()))
        if "openid" not in scopes:
            raise _RedirectError("invalid_scope", f"scope {scope!r} has no openid: add openid, "
                                 'for example scope="openid email profile".')
        challenge = _one(params, "code_challenge")
        method = _one(params, "code_challenge_method")
        if method and not challenge:
            raise _RedirectError("invalid_request", "code_challenge_method without "
                                 "code_challenge: send both, or neither.")
        if challenge:
            method = method or "plain"  # RFC 7636 4.3
            if method not in ("plain", "S256"):
                raise _RedirectError("invalid_request", f"code_challenge_method {method!r} is"
                                     " not supported: use S256 (or plain).")
            if not _PKCE_RE.match(challenge):
                raise _RedirectError("invalid_request", "code_challenge must be 43 to 128 "
                                     "characters of A-Z a-z 0-9 - . _ ~ (RFC 7636).")
        if "none" in (_one(params, "prompt") or "").split():
            raise _RedirectError("login_required", "The emulator keeps no sign-in session, so "
                                 "prompt=none cannot succeed: leave prompt out or use "
                                 "select_account.")
        return AuthorizationRequest(client_id, redirect_uri, state, " ".join(scopes),
                                    _one(params, "nonce"), challenge or None,
                                    method if challenge else None)

    # -- the token endpoint -----------------------------------------------------------

    async def token(self, request: web.Request) -> web.Response:
        try:
            if request.content_type != "application/x-www-form-urlencoded":
                raise _TokenError("invalid_request", "Send the token request as "
                                  "application/x-www-form-urlencoded form fields.")
            form = await request.post()
            fields = {k: str(v) for k, v in form.items()}
            if len(fields) != len(form):
                raise _TokenError("invalid_request", "Each parameter must be sent once.")
            client_id = self._authenticate(fields, request.headers.get("Authorization"))
            body = self._exchange(fields, client_id)
        except _TokenError as e:
            headers = dict(NO_STORE)
            if e.status == 401:
                headers["WWW-Authenticate"] = 'Basic realm="emulator"'
            return web.json_response({"error": e.error, "error_description": e.description},
                                     status=e.status, headers=headers)
        return web.json_response(body, headers=NO_STORE)

    def _authenticate(self, fields: dict[str, str], authorization: str | None) -> str:
        """The client ID, once its secret is checked (any secret when no client is set)."""
        client_id, secret = fields.get("client_id"), fields.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            if secret is not None:
                raise _TokenError("invalid_request", "The client authenticated twice (HTTP "
                                  "Basic and client_secret in the form): use one of them.")
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
                basic_id, basic_secret = (unquote(p) for p in decoded.split(":", 1))
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise _TokenError("invalid_client", "The Authorization header is not HTTP "
                                  "Basic base64(client_id:client_secret).", 401) from None
            if client_id is not None and client_id != basic_id:
                raise _TokenError("invalid_request", "client_id in the form differs from the"
                                  " one in the Authorization header.")
            client_id, secret = basic_id, basic_secret
        if not client_id:
            raise _TokenError("invalid_client", "No client authentication: send client_id and"
                              " client_secret as form fields (client_secret_post) or as HTTP "
                              "Basic (client_secret_basic).", 401)
        if not self.config.clients:
            return client_id
        client = next((c for c in self.config.clients if c.client_id == client_id), None)
        if client is None:
            raise _TokenError("invalid_client", f"The OAuth client was not found: {client_id!r}"
                              " is not in the emulator's [[oidc.clients]].", 401)
        if secret is None or not secrets.compare_digest(secret.encode(),
                                                        client.client_secret.encode()):
            raise _TokenError("invalid_client", f"Unauthorized: the client_secret sent for "
                              f"{client_id!r} is not the one configured for it.", 401)
        return client_id

    def _exchange(self, fields: dict[str, str], client_id: str) -> dict[str, object]:
        grant_type = fields.get("grant_type")
        if not grant_type:
            raise _TokenError("invalid_request", "Missing required parameter: grant_type. "
                              "Send grant_type=authorization_code.")
        if grant_type != "authorization_code":
            raise _TokenError("unsupported_grant_type", f"Invalid grant_type: {grant_type!r}. "
                              "The emulator supports authorization_code only.")
        code = fields.get("code")
        if not code:
            raise _TokenError("invalid_request", "Missing required parameter: code.")
        grant = self._codes.get(code)
        if grant is None or grant.expires_at <= time.time():
            raise _TokenError("invalid_grant", "The code is unknown, expired (codes last 10 "
                              "minutes) or already used: sign in again for a new one.")
        if grant.request.client_id != client_id:
            raise _TokenError("invalid_grant", f"The code was issued to another client, not "
                              f"{client_id!r}.")
        # Single use: whatever the outcome from here on, this code is spent.
        del self._codes[code]
        req = grant.request
        redirect_uri = fields.get("redirect_uri")
        if not redirect_uri:
            raise _TokenError("invalid_request", "Missing required parameter: redirect_uri. "
                              "Send the one the authorization request had.")
        if redirect_uri != req.redirect_uri:
            raise _TokenError("invalid_grant", f"redirect_uri {redirect_uri!r} is not the one"
                              f" the code was issued for ({req.redirect_uri!r}): send it "
                              "unchanged.")
        if req.code_challenge:
            _check_verifier(req.code_challenge, req.code_challenge_method or "plain",
                            fields.get("code_verifier"))
        access_token = "ya29." + secrets.token_urlsafe(32)  # Google's access-token prefix
        now = time.time()
        self._access_tokens = {t: g for t, g in self._access_tokens.items()
                               if g.expires_at > now}
        self._access_tokens[access_token] = Grant(req, grant.user,
                                                  now + ACCESS_TOKEN_LIFETIME_S)
        user = grant.user
        return {
            "access_token": access_token,
            "expires_in": ACCESS_TOKEN_LIFETIME_S,
            "token_type": "Bearer",
            "scope": req.scope,
            "id_token": self.issuer.user_token(user.email, client_id, user.display_name,
                                               req.nonce, access_token, now),
        }

    # -- userinfo ---------------------------------------------------------------------

    async def userinfo(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        grant = self._access_tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if grant is None or grant.expires_at <= time.time():
            error, description = (
                ("invalid_request", "Send Authorization: Bearer <access_token>, the "
                 "access_token of the token endpoint's answer.")
                if not token else
                ("invalid_token", "The access token is unknown or expired (they last 3599 s, "
                 "and the emulator forgets them when it restarts): sign in again."))
            return web.json_response(
                {"error": error, "error_description": description}, status=401,
                headers={"WWW-Authenticate": f'Bearer realm="emulator", error="{error}"'})
        user = grant.user
        return web.json_response({"sub": subject_id(user.email), "email": user.email,
                                  "email_verified": True, "name": user.display_name})


def _check_verifier(challenge: str, method: str, verifier: str | None) -> None:
    if not verifier:
        raise _TokenError("invalid_grant", "Missing code verifier: the authorization request "
                          "had a code_challenge, so send its code_verifier.")
    if not _PKCE_RE.match(verifier):
        raise _TokenError("invalid_request", "code_verifier must be 43 to 128 characters of "
                          "A-Z a-z 0-9 - . _ ~ (RFC 7636).")
    if method == "S256":
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    else:
        computed = verifier
    if not secrets.compare_digest(computed, challenge):
        raise _TokenError("invalid_grant", f"code_verifier does not match the code_challenge "
                          f"({method}) of the authorization request: send the verifier the "
                          "challenge was made from.")


def _one(params: MultiDictProxy[str], name: str, redirect: bool = True) -> str | None:
    """A parameter that RFC 6749 3.1 says must not be repeated."""
    values = params.getall(name, [])
    if len(values) > 1:
        message = f"Parameter {name} was sent {len(values)} times: send it once."
        raise (_RedirectError if redirect else _PageError)("invalid_request", message)
    return values[0] if values else None


def _redirect(uri: str, **params: str | None) -> web.Response:
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(k, v) for k, v in params.items() if v is not None]
    location = urlunsplit(parts._replace(query=urlencode(query)))
    return web.Response(status=302, headers={"Location": location, **NO_STORE})

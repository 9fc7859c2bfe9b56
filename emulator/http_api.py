"""The emulator's HTTP port: Google's sign-in, its keys, two emulator-only endpoints, and
the REST (HTTP/JSON) face of the APIs the gRPC port serves.

At Google's paths (see ``oidc_provider`` and ``iap``):

- ``/.well-known/openid-configuration``, ``/oauth2/v1/certs``, ``/oauth2/v3/certs``
- ``/o/oauth2/v2/auth`` (GET, POST), ``/token`` (POST), ``/v1/userinfo`` (GET, POST)
- ``/iap/verify/public_key``, ``/iap/verify/public_key-jwk``

Emulator-only, with no Google counterpart (Google mints these only for callers it has
authenticated; locally anyone may ask):

- ``POST /emulator/v1/id-token`` ``{"email", "audience"}`` -> ``{"id_token"}``: the same
  Google-shaped ID token Cloud Tasks' dispatches carry, for any email and an http(s)
  audience. How ``enqueuer --local token`` and tests get a caller's token.
- ``POST /emulator/v1/iap-assertion`` ``{"email", "audience", "issuer"?, "expires_in_s"?}``
  -> ``{"assertion"}``: what IAP would send an app in ``x-goog-iap-jwt-assertion``; a
  wrong issuer or a negative ``expires_in_s`` makes the bad ones a test needs.

Their errors are Google's JSON error shape, ``{"error": {"code", "status", "message"}}``,
the message saying what to fix.

REST, at Google's paths (``rest`` does the transcoding, ``rest_rules`` holds the table), the
same methods as on gRPC; what gcloud and the REST clients call with the endpoint set to
this port (``CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDTASKS=http://HOST:PORT/``):

- Cloud Tasks v2, ``Q`` = ``projects/P/locations/L/queues/ID``:
  ``GET|POST /v2/projects/P/locations/L/queues``, ``GET|PATCH|DELETE /v2/Q``
  (``?updateMask=``), ``POST /v2/Q:pause|:resume|:purge``,
  ``POST /v2/Q:getIamPolicy|:setIamPolicy|:testIamPermissions``,
  ``GET|POST /v2/Q/tasks``, ``GET|DELETE /v2/Q/tasks/ID``, ``POST /v2/Q/tasks/ID:run``;
  the locations mixin ``GET /v2/projects/P/locations`` and ``/v2/projects/P/locations/L``;
- Cloud Tasks v2beta3: ``GET /v2beta3/projects/P/locations/L/queues`` and ``/v2beta3/Q``
  with ``?readMask=stats`` (its other methods answer 501, as on gRPC);
- Cloud Run Admin v2, ``S`` = ``projects/P/locations/L/services/ID``:
  ``GET /v2/projects/P/locations/L/services``, ``GET /v2/S``, ``GET /v2/S:getIamPolicy``,
  ``POST /v2/S:setIamPolicy|:testIamPermissions``;
- Cloud Logging v2: ``POST /v2/entries:write``, ``POST /v2/entries:list``;
- IAM v1: ``GET|POST /v1/projects/P/serviceAccounts``, ``GET /v1/projects/P/serviceAccounts/E``,
  ``POST /v1/projects/P/serviceAccounts/E:getIamPolicy|:setIamPolicy|:testIamPermissions``;
- Resource Manager v3: ``GET /v3/projects/P``,
  ``POST /v3/projects/P:getIamPolicy|:setIamPolicy|:testIamPermissions``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from emulator.config import OidcConfig, email_problem, http_url_problem
from emulator.iap import ASSERTION_LIFETIME_S, IAP_ISSUER, IapKey
from emulator.oidc import Issuer
from emulator.oidc_provider import AUTH_PATH, TOKEN_PATH, USERINFO_PATH, Provider, discovery
from emulator.store import Store

# Long enough for any test, short enough that a forgotten assertion cannot live for days.
_MAX_ASSERTION_S = 24 * 3600


class _BadRequest(Exception):
    pass


def oidc_routes(app: web.Application, issuer: Issuer, config: OidcConfig, store: Store) -> None:
    """Every route of the HTTP port; the IAP key is made (or read back) from ``store``."""
    provider = Provider(config, issuer)

    async def discovery_doc(request: web.Request) -> web.Response:
        return web.json_response(discovery(f"{request.scheme}://{request.host}"))

    async def certs_v1(_: web.Request) -> web.Response:
        return web.json_response(issuer.certs_v1())

    async def certs_v3(_: web.Request) -> web.Response:
        return web.json_response(issuer.certs_v3())

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def id_token(request: web.Request) -> web.Response:
        try:
            body = await _json_body(request, required={"email", "audience"})
            email, audience = body["email"], body["audience"]
            if problem := email_problem(email) or http_url_problem(audience, "audience"):
                raise _BadRequest(problem)
        except _BadRequest as e:
            return _error(str(e))
        return web.json_response({"id_token": issuer.token(email, audience)})

    app.router.add_get("/.well-known/openid-configuration", discovery_doc)
    app.router.add_get("/oauth2/v1/certs", certs_v1)
    app.router.add_get("/oauth2/v3/certs", certs_v3)
    app.router.add_get("/healthz", healthz)
    app.router.add_get(AUTH_PATH, provider.authorize_page)
    app.router.add_post(AUTH_PATH, provider.authorize_submit)
    app.router.add_post(TOKEN_PATH, provider.token)
    app.router.add_get(USERINFO_PATH, provider.userinfo)
    app.router.add_post(USERINFO_PATH, provider.userinfo)
    app.router.add_post("/emulator/v1/id-token", id_token)
    iap_routes(app, IapKey(store))


def iap_routes(app: web.Application, key: IapKey) -> None:
    async def public_key(_: web.Request) -> web.Response:
        return web.json_response(key.public_key())

    async def public_key_jwk(_: web.Request) -> web.Response:
        return web.json_response(key.public_key_jwk())

    async def assertion(request: web.Request) -> web.Response:
        try:
            body = await _json_body(request, required={"email", "audience"},
                                    optional={"issuer", "expires_in_s"})
            email, audience = body["email"], body["audience"]
            issuer = body.get("issuer", IAP_ISSUER)
            expires_in_s = body.get("expires_in_s", ASSERTION_LIFETIME_S)
            if problem := email_problem(email):
                raise _BadRequest(problem)
            # IAP's audiences are paths such as /projects/NUMBER/global/backendServices/ID,
            # not URLs, so any non-blank string is taken.
            if not isinstance(audience, str) or not audience.strip():
                raise _BadRequest('audience must be a non-empty string, for example '
                                  '"/projects/123456789/apps/local-project"')
            if not isinstance(issuer, str) or not issuer.strip():
                raise _BadRequest(f'issuer must be a non-empty string; leave it out for '
                                  f'"{IAP_ISSUER}"')
            if (isinstance(expires_in_s, bool) or not isinstance(expires_in_s, int | float)
                    or not math.isfinite(expires_in_s) or expires_in_s == 0
                    or abs(expires_in_s) > _MAX_ASSERTION_S):
                raise _BadRequest(f"expires_in_s must be a non-zero number of seconds between "
                                  f"-{_MAX_ASSERTION_S} and {_MAX_ASSERTION_S} (negative: "
                                  f"already expired), got {expires_in_s!r}")
        except _BadRequest as e:
            return _error(str(e))
        return web.json_response({"assertion": key.assertion(email, audience, issuer,
                                                             float(expires_in_s))})

    app.router.add_get("/iap/verify/public_key", public_key)
    app.router.add_get("/iap/verify/public_key-jwk", public_key_jwk)
    app.router.add_post("/emulator/v1/iap-assertion", assertion)


async def _json_body(request: web.Request, required: set[str],
                     optional: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    example = ", ".join(f'"{k}": ...' for k in sorted(required))
    try:
        body = json.loads(await request.read() or b"null")
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise _BadRequest(f"the body must be a JSON object: {{{example}}}")
    if unknown := sorted(set(body) - required - set(optional)):
        allowed = ", ".join(sorted(required | set(optional)))
        raise _BadRequest(f"unknown field {unknown[0]!r}: the fields are {allowed}")
    if missing := sorted(required - set(body)):
        raise _BadRequest(f"missing field {missing[0]!r}: send {{{example}}}")
    return body


def _error(message: str) -> web.Response:
    return web.json_response(
        {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": message}}, status=400)

"""For worker teams: check that a request really comes from Cloud Tasks, for you, from us.

A worker behind Cloud Run's IAM front door gets this check for free. A worker whose door
is public (``--allow-unauthenticated``, for instance during a migration) must make it
itself::

    claims = verify_request(request.headers, "https://brain-xyz.a.run.app",
                            ["enqueuer-caller@acme.iam.gserviceaccount.com"])

The token is checked with google-auth only: Google's signature (certificates from
``certs_url``, Google's by default; pass the emulator's ``/oauth2/v1/certs`` locally),
expiry, audience, issuer, then the caller's email. Failures raise, with what was wrong and
what to change:

    EnqueuerError
    ├── RequestNotVerified   401  exit 8   no token, not a Google ID token, bad signature,
    │                                      expired, wrong issuer or audience
    ├── CallerNotAllowed     403  exit 9   a valid token of an account this worker refuses
    └── CertsUnavailable     503  exit 6   the certificates could not be fetched: retry

Certificates are cached in the process for the ``max-age`` the endpoint sends (5 minutes
when it sends none, 1 hour at most), and fetched again when a token names a key the cache
does not have (Google rotated its keys), at most once every 30 seconds; requests that miss
the cache together wait for one fetch and share its answer. A token that verified is
remembered until it expires (its senders reuse it): the next check of the same token is a
lookup and a look at the clock.

The same machinery (``bearer_token``, ``verified_claims``, the certificates cache) checks the
API's own callers (``enqueuer_core.access.callers``): it reports a refused token as facts
(``TokenRejected``), and each door words them for its callers.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Collection, Iterable, Mapping
from concurrent.futures import Future
from typing import Any, Literal

import requests
from google.auth import exceptions as gauth_exc
from google.auth import jwt, transport
from google.auth.transport.requests import Request as RequestsRequest
from google.oauth2 import id_token

from enqueuer_core.errors import EnqueuerError

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
CLOCK_SKEW_S = 10  # tolerated difference between Google's clock and the worker's
FETCH_TIMEOUT_S = 10.0
DEFAULT_TTL_S, MAX_TTL_S = 300.0, 3600.0
REFETCH_EVERY_S = 30.0  # an unknown key refetches the certs at most this often

Headers = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]


class RequestNotVerified(EnqueuerError):
    http_status = 401
    exit_code = 8
    code = "request_not_verified"


class CallerNotAllowed(EnqueuerError):
    http_status = 403
    exit_code = 9
    code = "caller_not_allowed"


class CertsUnavailable(EnqueuerError):
    http_status = 503
    exit_code = 6
    code = "certs_unavailable"


class _Cached(transport.Response):
    def __init__(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
        self._status, self._headers, self._data = status, headers, data

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    @property
    def data(self) -> bytes:
        return self._data


class CertsCachingRequest(transport.Request):
    """google-auth's requests transport, answering repeated GETs of a URL from memory.

    google-auth fetches the certificates on every ``verify_token``; this keeps each URL's
    successful answer until its ``max-age`` runs out. Threads that miss the same URL at once
    make one fetch: the first fetches, the others wait for it and get its answer (or its
    exception), so that a burst of requests after start or expiry is not a burst of fetches.
    """

    def __init__(self, inner: transport.Request) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, _Cached]] = {}  # url -> (expires, answer)
        self._forgotten: dict[str, float] = {}  # url -> when an unknown key dropped it
        self._fetching: dict[str, Future[transport.Response]] = {}  # url -> its fetch under way

    def __call__(self, url: str, method: str = "GET", body: bytes | None = None,
                 headers: Mapping[str, str] | None = None, timeout: float | None = None,
                 **kwargs: Any) -> transport.Response:
        timeout = timeout or FETCH_TIMEOUT_S
        if method != "GET" or body is not None:
            return self._inner(url, method=method, body=body, headers=headers,
                               timeout=timeout, **kwargs)
        hit = self.cached(url)
        if hit is not None:
            return hit
        with self._lock:
            hit = self.cached(url)  # a fetch that ended while this thread waited for the lock
            if hit is not None:
                return hit
            fetch = self._fetching.get(url)
            leads = fetch is None
            if fetch is None:
                fetch = self._fetching[url] = Future()
        if not leads:
            return fetch.result()  # the leader's answer, or its exception raised again
        now = time.monotonic()
        try:
            response = self._inner(url, method="GET", headers=headers, timeout=timeout, **kwargs)
        except BaseException as e:
            with self._lock:
                del self._fetching[url]
            fetch.set_exception(e)
            raise
        with self._lock:
            # Stored before the fetch is marked done: whoever comes next finds the answer.
            if response.status == 200:
                answer = _Cached(response.status, dict(response.headers), response.data)
                self._entries[url] = (now + _ttl(response.headers), answer)
            del self._fetching[url]
        fetch.set_result(response)
        return response

    @property
    def cached_only(self) -> transport.Request:
        """This transport answering only from memory: ``WouldFetch`` instead of a fetch."""
        return _CachedOnly(self)

    def cached(self, url: str) -> transport.Response | None:
        hit = self._entries.get(url)  # one dict read: atomic, no lock needed
        return hit[1] if hit and hit[0] > time.monotonic() else None

    def forget(self, url: str) -> bool:
        """Drop ``url``'s answer, unless that was done less than ``REFETCH_EVERY_S`` ago."""
        now = time.monotonic()
        with self._lock:
            if now - self._forgotten.get(url, -REFETCH_EVERY_S) < REFETCH_EVERY_S:
                return False
            self._forgotten[url] = now
            return self._entries.pop(url, None) is not None


class _CachedOnly(transport.Request):
    def __init__(self, cache: CertsCachingRequest) -> None:
        self._cache = cache

    def __call__(self, url: str, method: str = "GET", body: bytes | None = None,
                 headers: Mapping[str, str] | None = None, timeout: float | None = None,
                 **kwargs: Any) -> transport.Response:
        hit = self._cache.cached(url) if method == "GET" and body is None else None
        if hit is None:
            raise WouldFetch(url)
        return hit


def _ttl(headers: Mapping[str, str]) -> float:
    cache_control = next((v for k, v in headers.items() if k.lower() == "cache-control"), "")
    m = re.search(r"max-age=(\d+)", cache_control)
    return min(float(m[1]), MAX_TTL_S) if m else DEFAULT_TTL_S


_session = requests.Session()
_request = CertsCachingRequest(RequestsRequest(session=_session))


def verify_request(
    headers: Headers,
    audience: str | Collection[str],
    allowed_callers: str | Collection[str],
    certs_url: str | None = None,
) -> dict[str, Any]:
    """The verified claims of the request's ``Authorization: Bearer`` ID token.

    ``headers``: the request's headers, any mapping (FastAPI/Starlette ``request.headers``,
    a dict) or a list of ``(name, value)`` pairs; ``audience``: what the enqueuer sets as the
    task's audience for this worker (its ``AUD_*``, by default the scheme and host of the
    worker's URL), or several accepted ones; ``allowed_callers``: the service-account emails
    whose tokens are accepted (the enqueuer's ``CALLER_SA``); ``certs_url``: where the
    signing certificates are (PEM, ``/oauth2/v1/certs``), Google's when ``None``.
    """
    audiences = _non_empty("audience", audience)
    callers = _non_empty("allowed_callers", allowed_callers)
    url = certs_url or GOOGLE_CERTS_URL
    try:
        claims = verified_claims(bearer_token(headers), audiences, url)
    except TokenRejected as e:
        raise RequestNotVerified(_worker_message(e, audiences, url)) from None
    except CertsUnreachable as e:
        raise CertsUnavailable(
            f"Could not fetch the signing certificates from {url} ({e.detail}): the "
            "request was not verified; let Cloud Tasks retry it, and check that this "
            "worker can reach that URL."
        ) from None
    email = claims.get("email")
    if not email:
        raise CallerNotAllowed(
            "The token carries no email claim, so its caller cannot be checked: Cloud Tasks "
            "includes it for a service account; set CALLER_SA on the enqueuer to one of: "
            f"{', '.join(callers)}."
        )
    if email not in callers:
        raise CallerNotAllowed(
            f"The token is for {email}, which this worker does not accept (it accepts: "
            f"{', '.join(callers)}). Set CALLER_SA on the enqueuer to an accepted account, "
            f"or add {email} to this worker's allowed callers."
        )
    if claims.get("email_verified") is not True:
        raise CallerNotAllowed(
            f"The token's email {email} is not verified (email_verified is "
            f"{claims.get('email_verified')!r}): Google verifies service-account emails; "
            "send the task with a service account as its oidc_token."
        )
    return claims


def _non_empty(name: str, value: str | Collection[str]) -> list[str]:
    values = [value] if isinstance(value, str) else list(value)
    values = [v for v in values if v]
    if not values:
        raise ValueError(
            f"{name} must name at least one value: a worker that accepts any "
            f"{'caller' if name == 'allowed_callers' else 'audience'} should not call "
            "verify_request"
        )
    return values


def _worker_message(e: TokenRejected, audiences: list[str], certs_url: str) -> str:
    """What a worker's caller (Cloud Tasks, or whoever called it) is told, and what to change."""
    f = e.facts
    if e.reason == "no_header":
        return ("The request has no Authorization header: Cloud Tasks sends 'Bearer <ID token>' "
                "only for a task with an oidc_token. Set CALLER_SA on the enqueuer, and check "
                "that nothing between Cloud Tasks and this worker drops the header.")
    if e.reason == "several_headers":
        return f"The request has {f['count']} different Authorization headers: send one."
    if e.reason == "not_bearer":
        return (f"The Authorization header is {f['shown']!r}, not 'Bearer <ID token>': this "
                "worker accepts only the OIDC token Cloud Tasks sends for a task with an "
                "oidc_token.")
    if e.reason == "signature_removed":
        return ("The token's signature was removed by Google (SIGNATURE_REMOVED_BY_GOOGLE), as "
                "Cloud Run does to a token it has checked, so it cannot be verified here: verify "
                "the token Cloud Tasks sends in Authorization, or rely on Cloud Run's IAM check.")
    if e.reason == "audience":
        expected = audiences[0] if len(audiences) == 1 else f"one of {', '.join(audiences)}"
        return (f"The token's audience is {f['audience']!r}; this worker expects {expected}: set "
                f"the worker's AUD_* (or its audience in the workers file) to {audiences[0]} on "
                "the enqueuer.")
    if e.reason == "expired":
        return (f"The token expired at {f['expired_at']}: Cloud Tasks mints a fresh one for "
                "each attempt, so this request was replayed or this worker's clock is wrong.")
    if e.reason == "early":
        return f"The token is issued in the future ({f['detail']}): check this worker's clock."
    if e.reason == "unknown_key":
        return (f"The token is signed with a key {certs_url} does not publish: it was not minted "
                "by Google (locally: by the emulator whose certificates this worker reads).")
    if e.reason == "signature":
        return (f"The token's signature does not verify against {certs_url}: it was altered, "
                "or minted by someone other than Google.")
    if e.reason == "issuer":
        return (f"The token was issued by {f['issuer']!r}, not by Google ({GOOGLE_ISSUERS[0]}): "
                "only Google-signed ID tokens, as Cloud Tasks sends for a task with an "
                "oidc_token, are accepted.")
    return (f"The bearer token is not a valid Google ID token ({f.get('detail', e.reason)}): "
            "this worker accepts only the OIDC token Cloud Tasks sends for a task with an "
            "oidc_token.")


# ---- the machinery both doors share: workers (above) and the API's callers (access.callers) --


Reason = Literal["no_header", "several_headers", "not_bearer", "signature_removed", "malformed",
                 "audience", "expired", "early", "unknown_key", "signature", "issuer"]


class TokenRejected(Exception):
    """Why a bearer token was refused, as facts rather than words: ``reason`` and what goes
    with it (``header``, ``count``, ``shown``, ``audience``, ``expired_at``, ``issuer``,
    ``detail``). Each door tells its own callers what to do about it. Never the token."""

    def __init__(self, reason: Reason, **facts: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.facts = facts


class CertsUnreachable(Exception):
    """The signing certificates could not be fetched: nothing was verified; retry."""

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(f"{url}: {detail}")
        self.url, self.detail = url, detail


class WouldFetch(Exception):
    """``verified_claims(..., fetch=False)`` needed certificates it has not cached."""


REMOVED_SIGNATURE = "SIGNATURE_REMOVED_BY_GOOGLE"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9._~+/-]{0,19}$")  # an auth scheme, not a token


def header_values(headers: Headers, name: str) -> list[str]:
    """The distinct values of header ``name`` (any case), stripped, in order."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    wanted = name.lower()
    return list(dict.fromkeys(_text(v).strip() for k, v in pairs if _text(k).lower() == wanted))


def bearer_token(headers: Headers, header: str = "Authorization") -> str:
    """The token of ``header: Bearer <token>``, or ``TokenRejected`` saying what is wrong."""
    found = header_values(headers, header)
    if not found:
        raise TokenRejected("no_header", header=header)
    if len(found) > 1:
        raise TokenRejected("several_headers", header=header, count=len(found))
    scheme, _, token = found[0].partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        # The scheme is shown to say what came instead; a value with no scheme may be a bare
        # token, which is never echoed.
        shown = (("Bearer with a malformed token" if scheme.lower() == "bearer" else scheme)
                 if _SCHEME.match(scheme) else "a value with no scheme")
        raise TokenRejected("not_bearer", header=header, shown=shown)
    return token


def signature_removed(token: str) -> bool:
    """Whether Google replaced the token's signature (Cloud Run does, for the token it checked
    in ``X-Serverless-Authorization`` and for a user's gcloud token): it cannot be verified."""
    return token.rpartition(".")[2] == REMOVED_SIGNATURE


def verified_claims(token: str, audiences: list[str], certs_url: str, *,
                    fetch: bool = True,
                    issuers: tuple[str, ...] = GOOGLE_ISSUERS) -> dict[str, Any]:
    """The claims of a token signed by Google (an ID token; with ``issuers`` and IAP's keys
    as ``certs_url``, an IAP assertion) whose signature, expiry, audience and issuer hold.

    ``TokenRejected`` says why not; ``CertsUnreachable`` when the certificates could not be
    fetched. With ``fetch=False`` it answers only from cached certificates, raising
    ``WouldFetch`` when it would need the network (so that an event loop can verify inline and
    fetch in a thread).
    """
    if signature_removed(token):
        raise TokenRejected("signature_removed")
    key = (token, tuple(audiences), certs_url, issuers)
    known = _verified.get(key)
    if known is not None:
        _check_times(known)  # the signature, audience and issuer held; the time may not
        return dict(known)
    transport_ = _request if fetch else _request.cached_only
    for attempt in (1, 2):
        try:
            claims = dict(id_token.verify_token(token, transport_, audience=audiences,
                                                certs_url=certs_url,
                                                clock_skew_in_seconds=CLOCK_SKEW_S))
            break
        except gauth_exc.TransportError as e:
            raise CertsUnreachable(certs_url, str(e)) from None
        except ImportError:
            raise ValueError(
                f"{certs_url} serves JSON Web Keys, which google-auth reads only with pyjwt: "
                "use the PEM endpoint, .../oauth2/v1/certs"
            ) from None
        except (gauth_exc.GoogleAuthError, ValueError) as e:
            if attempt == 1 and "Certificate for key id" in str(e) and _request.forget(certs_url):
                continue  # Google rotated its keys since the certificates were cached
            raise _rejected(str(e), token) from None
    else:
        raise AssertionError("unreachable")
    issuer = claims.get("iss")
    if issuer not in issuers:  # verify_token checks signature, audience and time, not this
        raise TokenRejected("issuer", issuer=issuer)
    if len(_verified) >= MAX_VERIFIED:
        _verified.clear()
    _verified[key] = claims
    return dict(claims)


# Tokens already verified, by (token, audiences, certs URL): a caller sends the same token for
# as long as it lasts (Google's libraries until it nearly expires, Cloud Tasks and the emulator
# for minutes), and a dictionary lookup is ~50 times cheaper than parsing the certificate and
# checking an RSA signature again. Only the exact token string hits; its times are checked on
# every use.
_verified: dict[tuple[str, tuple[str, ...], str, tuple[str, ...]], dict[str, Any]] = {}
MAX_VERIFIED = 10_000


def _check_times(claims: Mapping[str, Any]) -> None:
    now = time.time()
    if now < claims["iat"] - CLOCK_SKEW_S:
        raise TokenRejected("early", detail=f"issued at {claims['iat']}, now {int(now)}")
    if claims["exp"] + CLOCK_SKEW_S < now:
        when = dt.datetime.fromtimestamp(claims["exp"], dt.UTC).isoformat()
        raise TokenRejected("expired", expired_at=when)


def _rejected(reason: str, token: str) -> TokenRejected:
    # google-auth checks the signature first: past it, the payload can be trusted.
    if "wrong audience" in reason:
        return TokenRejected("audience", audience=jwt.decode(token, verify=False).get("aud"))
    if "Token expired" in reason:
        exp = jwt.decode(token, verify=False).get("exp")
        when = dt.datetime.fromtimestamp(exp, dt.UTC).isoformat() if exp else "?"
        return TokenRejected("expired", expired_at=when)
    if "too early" in reason:
        return TokenRejected("early", detail=reason)
    if "Certificate for key id" in reason:
        return TokenRejected("unknown_key")
    if "signature" in reason:
        return TokenRejected("signature")
    if "Wrong number of segments" in reason:
        reason = "a JWT has three dot-separated parts"
    return TokenRejected("malformed", detail=reason.split(": b'")[0][:200])  # never the token


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value

"""Cloud Run's front door: what a request must get past before it reaches a service.

Checked in the order Cloud Run checks them, each answered as Cloud Run answers it:

1. **Ingress.** ``all`` lets everything in. ``internal`` (and
   ``internal-and-cloud-load-balancing``: the emulator has no load balancer) lets in only
   what Cloud Run counts as internal. Cloud Run's ingress page lists Cloud Tasks among the
   Google products that are internal "if they are in the same project or VPC Service
   Controls perimeter as your Cloud Run service" (cloud.google.com/run/docs/securing/ingress);
   the emulator has one project, so its own Cloud Tasks dispatches (``User-Agent:
   Google-Cloud-Tasks`` with ``X-CloudTasks-QueueName``) get in, and a direct call (curl, a
   browser) does not. Refused requests get Google's 404 page, which is what a caller outside
   the network sees (e.g. richardhe-fundamenta/practical-gcp-examples#11: "the curl test
   from outside the VPC now returns 404").
2. **Public or not.** A policy granting ``roles/run.invoker`` to ``allUsers`` (on the service
   or its project) makes the service public: no token is needed, and none is checked.
3. **The token** (``Authorization: Bearer <ID token>``): missing, not signed by the
   emulator's issuer, expired, or not issued by ``https://accounts.google.com`` -> 401.
   Its ``aud`` must be the service's URL or one of its ``custom_audiences``; any other
   audience -> 401 (cloud.google.com/run/docs/configuring/custom-audiences: the token's
   audience must match the service's ``*.run.app`` URL, or a custom audience, which is
   compared as the exact string configured). The service URL is accepted with a trailing
   slash (Google's samples use ``https://my-cloud-run-service.run.app/``) and with a path,
   but not with a query or fragment: Cloud Tasks uses the full task URL as audience when
   none is given, and Google's note on that default names only query parameters and
   fragments as what leads to 401 (googleapis/python-tasks#137).
4. **IAM.** The token's ``email`` is the member ``serviceAccount:EMAIL`` (the emulator mints
   tokens for service accounts only, as Cloud Tasks' ``oidc_token`` does); without
   ``run.routes.invoke`` on the service (``roles/run.invoker``, ``roles/run.admin``, owner or
   editor, on the service or its project, also through ``allAuthenticatedUsers``) -> 403.
   The policy is read on every request, so SetIamPolicy takes effect on the next one.

5. **Capacity** (``Capacity``), once the request is let in: a service takes at most
   ``max_instances`` x ``concurrency`` requests at once. Beyond that Cloud Run answers 429:
   "If no instances become available during the 60 second window, the request fails with a
   429 error code" (cloud.google.com/run/docs/about-instance-autoscaling, "Exceeding maximum
   instances"); its request log says "The request was aborted because there was no
   available instance." (severity WARNING, response code 429, when max instances stops the
   scaling: Cloud Run functions' troubleshooting page; googleapis/repo-automation-bots#4039,
   where Cloud Tasks retried such requests), and the caller gets the plain text body
   ``Rate exceeded.`` from the Google Front End, as users report it. The emulator answers
   at once instead of holding the request for up to 60 s, so that a queue pushing more than
   the service takes shows at the first burst; it does not emulate the 500s of a scale-up
   too slow for a spike either: its instances start instantly. A request counts from its
   admission until the worker answers, is cut off (504) or fails, whatever the
   caller does meanwhile (a caller that hangs up does not stop the instance's work).
   Cloud Tasks retries a 429 by the queue's RetryConfig, as the emulator's dispatcher does;
   Google adds that on 429 and 503 it "will use a higher backoff rate" and considers a
   ``Retry-After`` header (``HttpRequest`` in google/cloud/tasks/v2/target.proto). That
   slowing is not emulated, and the emulator's 429 carries no ``Retry-After``.

The 401 and 403 pages are Google's (the 401 as quoted in google/adk-python#3814, the 403
wording as quoted in datacommonsorg/docsite#463 and many others). The emulator adds one
header Google does not send, ``X-Emulator-Reason``, saying exactly which check failed.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from google.auth import jwt

from emulator.config import ServiceConfig
from emulator.iam import Authorizer
from emulator.oidc import ISSUER, Issuer

INVOKE = "run.routes.invoke"
_ISSUERS = (ISSUER, "accounts.google.com")
_TOKEN_CACHE_SIZE = 1024
# Google's pages, byte for byte but for the path.
_PAGE = (
    '<html><head>\n<meta http-equiv="content-type" content="text/html;charset=utf-8">\n'
    "<title>{title}</title>\n</head>\n<body text=#000000 bgcolor=#ffffff>\n"
    "<h1>Error: {heading}</h1>\n<h2>{text}</h2>\n<h2></h2>\n</body></html>\n"
)


def error_page(status: int, path: str) -> str:
    code = f"<code>{html.escape(path)}</code>"
    if status == 401:
        return _PAGE.format(title="401 Unauthorized", heading="Unauthorized",
                            text=f"Your client does not have permission to the requested URL "
                                 f"{code}.")
    if status == 403:
        return _PAGE.format(title="403 Forbidden", heading="Forbidden",
                            text=f"Your client does not have permission to get URL {code} "
                                 "from this server.")
    return _PAGE.format(title="404 Page not found", heading="Page not found",
                        text="The requested URL was not found on this server.")


@dataclass(frozen=True)
class Verdict:
    """What the door decided: ``status`` 0 lets the request through with ``claims``."""

    status: int = 0
    reason: str = ""
    claims: dict[str, Any] | None = None

    @property
    def admitted(self) -> bool:
        return self.status == 0


def audience_matches(aud: str, service_url: str, custom_audiences: list[str]) -> bool:
    """Whether a token audience is accepted by the service at ``service_url``."""
    if aud in custom_audiences:
        return True
    parts = urlsplit(aud)
    if parts.query or parts.fragment or not parts.scheme or not parts.netloc:
        return False
    return f"{parts.scheme}://{parts.netloc}".lower() == service_url.lower()


def from_cloud_tasks(headers: Mapping[str, str]) -> bool:
    """A dispatch of the emulator's own Cloud Tasks (the same project, so internal)."""
    return (headers.get("User-Agent") == "Google-Cloud-Tasks"
            and "X-CloudTasks-QueueName" in headers)


class FrontDoor:
    """The checks for one service; ``url`` is set once its port is bound."""

    def __init__(self, service: ServiceConfig, resource: str, authorizer: Authorizer,
                 issuer: Issuer) -> None:
        self.service = service
        self.resource = resource
        self.authorizer = authorizer
        self.issuer = issuer
        self.url = ""
        # Tokens are reused by their minters (5 min in the emulator): verify a signature once.
        self._verified: dict[str, dict[str, Any]] = {}

    def check(self, headers: Mapping[str, str]) -> Verdict:
        if self.service.ingress != "all" and not from_cloud_tasks(headers):
            return Verdict(404, f'ingress is "{self.service.ingress}": only requests from '
                                "inside the project (such as Cloud Tasks) reach this service")
        if self.authorizer.holds("allUsers", INVOKE, self.resource):
            return Verdict()  # public: Cloud Run passes the request on without looking
        token = _bearer(headers.get("Authorization", ""))
        if not token:
            return Verdict(401, "no Authorization: Bearer <ID token> header")
        claims, problem = self._verify(token)
        if claims is None:
            return Verdict(401, problem)
        auds = claims.get("aud")
        auds = auds if isinstance(auds, list) else [auds]
        if not any(isinstance(a, str) and audience_matches(a, self.url,
                                                           self.service.custom_audiences)
                   for a in auds):
            allowed = ", ".join([self.url, *self.service.custom_audiences])
            return Verdict(401, f"token audience {claims.get('aud')!r} is not this service's "
                                f"URL or one of its custom audiences ({allowed})")
        email = claims.get("email") or ""
        member = f"serviceAccount:{email}" if email else ""
        if not self.authorizer.holds(member, INVOKE, self.resource):
            who = member or "a token without an email"
            return Verdict(403, f"{who} lacks {INVOKE} on {self.resource}: grant it "
                                "roles/run.invoker on the service")
        return Verdict(claims=claims)

    def _verify(self, token: str) -> tuple[dict[str, Any] | None, str]:
        claims = self._verified.get(token)
        if claims is None:
            try:
                claims = jwt.decode(token, certs=self.issuer.certs_v1(), verify=True,
                                    clock_skew_in_seconds=10)
            except (ValueError, TypeError) as e:
                return None, f"the token could not be verified: {e}"
            if claims.get("iss") not in _ISSUERS:
                return None, f"token issuer {claims.get('iss')!r} is not {ISSUER}"
            if len(self._verified) >= _TOKEN_CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = claims
        elif time.time() > float(claims.get("exp", 0)) + 10:
            del self._verified[token]
            return None, "the token has expired"
        return claims, ""


RATE_EXCEEDED = "Rate exceeded."  # the Google Front End's body for Cloud Run's 429


class Capacity:
    """The requests one service has in flight, against ``max_instances`` x ``concurrency``.

    The emulator's event loop is the only thread that admits and releases, so a counter
    is enough. ``admit()`` either takes a slot (the caller must ``release()`` it on every
    path) or answers the 429 verdict.
    """

    def __init__(self, service: ServiceConfig) -> None:
        self.service = service
        self.limit = service.max_instances * service.concurrency
        self.in_flight = 0

    def admit(self) -> Verdict | None:
        """None: a slot is taken. Otherwise the 429, with what to change."""
        if self.in_flight < self.limit:
            self.in_flight += 1
            return None
        name, n, c = self.service.name, self.service.max_instances, self.service.concurrency
        return Verdict(429, f"no available instance: {name} already has {self.in_flight} "
                            f"requests in flight, its capacity (max_instances {n} x "
                            f"concurrency {c} = {self.limit}): raise max_instances or "
                            f"concurrency of [[services]] {name} (gcloud run services update "
                            f"{name} --max-instances=... / --concurrency=...), or lower the "
                            "callers' concurrency (a queue's max_concurrent_dispatches)")

    def release(self) -> None:
        self.in_flight -= 1


def _bearer(value: str) -> str:
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""

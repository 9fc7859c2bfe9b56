"""Where a worker's tasks really go: the request ``build`` makes, after the queue's
``http_target`` (queue-level routing) has had its say. Pure: no Google call.

Cloud Tasks applies a queue's ``http_target`` to every HTTP task when it is sent, also to
tasks created before it was set (cloud.google.com/tasks/docs/configuring-queues,
"Configure queue-level routing"): its ``uri_override`` replaces the scheme, host, port, path
or query of the task's URL (all of them under ``ALWAYS``, the default; only those the task's
URL lacks under ``IF_NOT_EXISTS``), its ``http_method`` the method, and its ``oidc_token`` or
``oauth_token`` the task's token ("Configuring authentication at the queue level overrides
task-level authentication").

The rules mirror ``emulator/http_target.py``, which applies them at dispatch: the emulator
stands in for Google and imports nothing of Enqueuer, and this module judges queues on
Google as well, so each keeps its own small copy; a test holds the two to the same answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.cloud import tasks_v2

from enqueuer_core.workers import WorkerSpec

_UriOverride = tasks_v2.UriOverride
_Mode = _UriOverride.UriOverrideEnforceMode


@dataclass(frozen=True)
class EffectiveTarget:
    url: str                 # after the queue's uri_override (enforce mode applied)
    method: str              # "POST" unless the queue's http_method overrides it
    audience: str | None     # OIDC audience actually sent (queue's oidc_token wins); None: no OIDC
    account: str | None      # the account the token is minted for (queue's wins)
    token: str               # "oidc" | "oauth" | "none"
    overrides: tuple[str, ...]  # one readable line per queue-level override applied


def effective_target(spec: WorkerSpec, caller_sa: str | None,
                     queue: tasks_v2.Queue | None) -> EffectiveTarget:
    """The request Cloud Tasks sends for a task of ``spec`` (as ``build`` makes it: POST to
    ``spec.url`` with an OIDC token for ``caller_sa``, audience ``spec.audience``) in
    ``queue`` (None: unknown or absent, so no queue-level routing is assumed)."""
    url, method, token = spec.url, "POST", "oidc"
    account, audience = caller_sa or None, spec.audience or None
    pb = tasks_v2.Queue.pb(queue) if queue is not None else None
    if pb is None or not pb.HasField("http_target"):
        # OidcToken.audience: "If not specified, the URI specified in target will be used."
        return EffectiveTarget(url, method, audience or url, account, token, ())
    target = pb.http_target
    overrides: list[str] = []
    if target.HasField("uri_override"):
        routed = override_url(url, target.uri_override)
        if routed != url:
            mode = _Mode(target.uri_override.uri_override_enforce_mode or _Mode.ALWAYS).name
            overrides.append(f"uri_override ({mode}): {url} -> {routed}")
            url = routed
    if target.http_method and tasks_v2.HttpMethod(target.http_method).name != method:
        name = tasks_v2.HttpMethod(target.http_method).name
        overrides.append(f"http_method: {method} -> {name}")
        method = name
    if target.header_overrides:
        names = ", ".join(h.header.key for h in target.header_overrides)
        overrides.append(f"header_overrides: {names}")
    kind = target.WhichOneof("authorization_header")
    if kind == "oidc_token":
        oidc = target.oidc_token
        new_audience = oidc.audience or url
        overrides.append(f"oidc_token: {account} -> {oidc.service_account_email}, audience "
                         f"{audience or url} -> {new_audience}")
        account, audience = oidc.service_account_email, new_audience
    elif kind == "oauth_token":
        oauth = target.oauth_token
        overrides.append(f"oauth_token: OIDC for {account} -> an OAuth access token for "
                         f"{oauth.service_account_email} (scope {oauth.scope or 'default'})")
        account, audience, token = oauth.service_account_email, None, "oauth"
    else:
        audience = audience or url
    return EffectiveTarget(url, method, audience, account, token, tuple(overrides))


def override_url(url: str, uo: Any) -> str:
    """``url`` with the parts ``uo`` (a protobuf ``UriOverride``) overrides."""
    always = uo.uri_override_enforce_mode != _Mode.IF_NOT_EXISTS
    scheme, rest = url.split("://", 1) if "://" in url else ("https", url)
    rest, _, fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    path = slash + path
    userinfo, _, hostport = netloc.rpartition("@")
    if hostport.startswith("["):  # [IPv6]:port
        end = hostport.find("]") + 1
        host, port = hostport[:end], hostport[end + 1:]
    else:
        host, _, port = hostport.partition(":")
    if always and uo.HasField("scheme"):
        # Scheme.SCHEME_UNSPECIFIED: "Defaults to HTTPS".
        scheme = "http" if uo.scheme == _UriOverride.Scheme.HTTP else "https"
    if always and uo.HasField("host"):
        host = uo.host
    if uo.HasField("port") and (always or not port):
        port = str(uo.port) if uo.port else ""  # 0 clears the port
    if uo.HasField("path_override") and (always or path in ("", "/")):
        path = uo.path_override.path  # "" clears the path
        path = path if not path or path.startswith("/") else "/" + path
    if uo.HasField("query_override") and (always or not query):
        query = uo.query_override.query_params.removeprefix("?")
    netloc = (f"{userinfo}@" if userinfo else "") + host + (f":{port}" if port else "")
    return (f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")
            + (f"#{fragment}" if fragment else ""))

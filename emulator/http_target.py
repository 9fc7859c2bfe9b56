"""Queue-level routing: the request a task's ``http_request`` becomes under its queue's
``http_target``, and the check of an ``http_target`` a client sets.

As Cloud Tasks v2 documents it (the ``HttpTarget``, ``UriOverride``, ``PathOverride`` and
``QueryOverride`` comments of google/cloud/tasks/v2/target.proto, as shipped in
google-cloud-tasks 2.x ``tasks_v2/types/target.py``; and cloud.google.com/tasks/docs/
configuring-queues, "Configure queue-level routing"):

- "Queue-level routing applies to: tasks that are in the queue; tasks that are added to the
  queue after queue-level routing has been set": the queue's *current* ``http_target`` is
  applied at each dispatch, never copied into the stored task (GetTask shows the task's own).
- ``uri_override``: "When specified, all the HTTP tasks inside the queue will be partially or
  fully overridden". ``scheme`` replaces the scheme (SCHEME_UNSPECIFIED: "Defaults to
  HTTPS"); ``host`` the host ("Host value cannot be an empty string (INVALID_ARGUMENT)");
  ``port`` the port ("Setting the port to 0 (Zero) clears the URI port"); ``path_override``
  the path ("Setting the path value to an empty string clears the URI path segment");
  ``query_override`` the query (likewise for an empty query). Fields left unset keep the
  task's part (scheme, host and port are proto3 ``optional``; the two overrides are
  messages, present or not).
- ``uri_override_enforce_mode``: ALWAYS (also when unspecified: "Defaults to ALWAYS"), the
  queue's parts override the task's; IF_NOT_EXISTS, "queue-level configuration is only
  applied where task-level configuration does not exist". A task URL always has a scheme
  and a host, so under IF_NOT_EXISTS only a port, a path (none, or just ``/``) and a query
  the task's URL lacks are filled in. The mode governs the URI only: it is a field of
  ``UriOverride``.
- ``http_method``: "When specified, it overrides [the method] for the task. Note that if the
  value is set to GET the body of the task will be ignored at execution time." The emulator
  drops the body for every method that may not carry one (HttpRequest.body: "allowed only if
  the HTTP method is POST, PUT, or PATCH").
- ``header_overrides``: "If a task has a header with the same Key as a queue-level header
  override, then the value of the task header will be overriden with the value of the
  queue-level header. Otherwise, the queue-level header will be added" (gcloud's help of
  ``--http-header-override``). Names compare without regard to case, as HTTP's do. Headers
  Cloud Tasks owns (Host, Content-Length, User-Agent, X-CloudTasks-*, X-Google-*,
  X-AppEngine-*) "will be ignored or replaced": the dispatcher drops them as it drops a
  task's own.
- ``oidc_token`` / ``oauth_token``: "Configuring authentication at the queue level overrides
  task-level authentication"; the queue's token replaces the task's, whichever kind each is.
  "Note that both the service account email and the audience MUST be specified when using
  the queue-level authorization override" (and the email and the scope for OAuth): checked
  on CreateQueue/UpdateQueue. An Authorization header from the task or the queue's headers
  is replaced by the token (HttpRequest: "all Authorization headers ... will be overridden").

Where Google's documents disagree the emulator follows the more specific one: gcloud's help
of ``--http-oidc-token-audience-override`` says "If not specified, the URI specified in the
target will be used", copied from the task-level OidcToken; the queue-level HttpTarget
comment says the audience MUST be given, and the emulator refuses a queue token without it.
"""

from __future__ import annotations

import re

from google.cloud import tasks_v2

from emulator.errors import invalid

HttpTarget = tasks_v2.HttpTarget.pb()
HttpRequest = tasks_v2.HttpRequest.pb()
UriOverride = tasks_v2.UriOverride.pb()
HTTP = tasks_v2.UriOverride.Scheme.HTTP.value
IF_NOT_EXISTS = tasks_v2.UriOverride.UriOverrideEnforceMode.IF_NOT_EXISTS.value
_SCHEMES = {v.value for v in tasks_v2.UriOverride.Scheme}
_MODES = {v.value for v in tasks_v2.UriOverride.UriOverrideEnforceMode}
_METHODS = {m.value for m in tasks_v2.HttpMethod}
_WITH_BODY = {tasks_v2.HttpMethod.POST.value, tasks_v2.HttpMethod.PUT.value,
              tasks_v2.HttpMethod.PATCH.value}
# RFC 9110 5.1: a field name is a token.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# A DNS name or an IPv4 address, or an IPv6 address in brackets: nothing else is a host.
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9\-_.]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])$")
_SA_DOMAIN = ".iam.gserviceaccount.com"


# -- dispatch ---------------------------------------------------------------------------

def effective_request(target: HttpTarget, request: HttpRequest) -> HttpRequest:
    """The request Cloud Tasks sends for ``request`` in a queue with ``target``: a new
    message, the stored task untouched."""
    out = HttpRequest()
    out.CopyFrom(request)
    if target.HasField("uri_override"):
        out.url = override_url(request.url, target.uri_override)
    if target.http_method:
        out.http_method = target.http_method
        if target.http_method not in _WITH_BODY:
            out.ClearField("body")
    for override in target.header_overrides:
        key = override.header.key
        for k in [k for k in out.headers if k.lower() == key.lower()]:
            del out.headers[k]
        out.headers[key] = override.header.value
    kind = target.WhichOneof("authorization_header")
    if kind is not None:
        getattr(out, kind).CopyFrom(getattr(target, kind))  # clears the task's other kind
    return out


def override_url(url: str, uo: UriOverride) -> str:
    """``url`` with the parts ``uo`` overrides, by its enforce mode."""
    always = uo.uri_override_enforce_mode != IF_NOT_EXISTS
    scheme, rest = url.split("://", 1) if "://" in url else ("https", url)
    netloc, path, query, fragment = _split(rest)
    userinfo, _, hostport = netloc.rpartition("@")
    host, port = _host_port(hostport)
    if always and uo.HasField("scheme"):
        scheme = "http" if uo.scheme == HTTP else "https"
    if always and uo.HasField("host"):
        host = uo.host
    if uo.HasField("port") and (always or not port):
        port = str(uo.port) if uo.port else ""
    if uo.HasField("path_override") and (always or path in ("", "/")):
        path = uo.path_override.path
        if path and not path.startswith("/"):
            path = "/" + path  # "job" is the path /job, not a part of the host
    if uo.HasField("query_override") and (always or not query):
        query = uo.query_override.query_params.removeprefix("?")
    netloc = (f"{userinfo}@" if userinfo else "") + host + (f":{port}" if port else "")
    return (f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")
            + (f"#{fragment}" if fragment else ""))


def _split(rest: str) -> tuple[str, str, str, str]:
    """``netloc``, ``path``, ``query``, ``fragment`` of what follows ``scheme://``."""
    rest, _, fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    slash = rest.find("/")
    if slash < 0:
        return rest, "", query, fragment
    return rest[:slash], rest[slash:], query, fragment


def _host_port(hostport: str) -> tuple[str, str]:
    if hostport.startswith("["):  # [v6]:port
        end = hostport.find("]") + 1
        return hostport[:end], hostport[end + 1:] if hostport[end:end + 1] == ":" else ""
    host, _, port = hostport.partition(":")
    return host, port


# -- CreateQueue / UpdateQueue ----------------------------------------------------------

def drop_empty(target: HttpTarget) -> None:
    """Forget the parts whose every field was cleared: gcloud's ``--clear-http-oidc-service-
    account-email-override --clear-http-oidc-token-audience-override`` clears the two fields
    (update mask ``httpTarget.oidcToken.audience,httpTarget.oidcToken.serviceAccountEmail``),
    which means no queue-level token, not an empty one."""
    for part in ("uri_override", "oidc_token", "oauth_token"):
        if target.HasField(part) and not getattr(target, part).ByteSize():
            target.ClearField(part)


def validate(target: HttpTarget, project: str) -> None:
    """Refuse an ``http_target`` Cloud Tasks would not run, in its style and with the fix."""
    if target.HasField("uri_override"):
        _validate_uri(target.uri_override)
    if target.http_method not in _METHODS:
        raise invalid(f"HttpTarget.httpMethod {target.http_method} is not an HTTP method: "
                      "use POST, GET, HEAD, PUT, DELETE, PATCH or OPTIONS.")
    for override in target.header_overrides:
        key, value = override.header.key, override.header.value
        if not _TOKEN.match(key):
            raise invalid(f'HttpTarget.headerOverrides: "{key}" is not a valid HTTP header '
                          "name: a name is letters, digits and !#$%&'*+-.^_`|~ only, for "
                          'example "X-Tenant".')
        if "\r" in value or "\n" in value or "\0" in value:
            raise invalid(f'HttpTarget.headerOverrides: the value of "{key}" contains a line '
                          "break: a header value is one line.")
    if target.HasField("oidc_token"):
        token = target.oidc_token
        _validate_account("oidcToken", token.service_account_email, project)
        if not token.audience:
            raise invalid(
                "HttpTarget.oidcToken.audience is required when the queue overrides the "
                "token: set it to the base URL of the service the tasks go to (gcloud: "
                "--http-oidc-token-audience-override=https://SERVICE-HASH-uc.a.run.app)."
            )
    if target.HasField("oauth_token"):
        token = target.oauth_token
        _validate_account("oauthToken", token.service_account_email, project)
        if not token.scope:
            raise invalid(
                "HttpTarget.oauthToken.scope is required when the queue overrides the token, "
                "for example https://www.googleapis.com/auth/cloud-platform (gcloud: "
                "--http-oauth-token-scope-override)."
            )


def _validate_uri(uo: UriOverride) -> None:
    if uo.HasField("scheme") and uo.scheme not in _SCHEMES:
        raise invalid("UriOverride.scheme must be HTTP or HTTPS.")
    if uo.uri_override_enforce_mode not in _MODES:
        raise invalid("UriOverride.uriOverrideEnforceMode must be ALWAYS or IF_NOT_EXISTS.")
    if uo.HasField("host"):
        if not uo.host:
            raise invalid("UriOverride.host cannot be an empty string: give the host the "
                          "tasks go to, or leave host unset to keep each task's.")
        if not _HOST.match(uo.host):
            raise invalid(f'UriOverride.host "{uo.host}" is not a host name: give the host '
                          'alone, for example "worker-abc123-uc.a.run.app"; the scheme, port '
                          "and path have fields of their own.")
    if uo.HasField("port") and not 0 <= uo.port <= 65535:
        raise invalid(f"UriOverride.port {uo.port} must be a positive integer up to 65535 "
                      "(0 clears the port).")
    path = uo.path_override.path
    if any(c in path for c in "?# \t\r\n"):
        raise invalid(f'PathOverride.path "{path}" must be a URI path such as "/process": '
                      "the query goes in QueryOverride, and spaces must be %-encoded.")
    query = uo.query_override.query_params
    if any(c in query for c in "# \t\r\n"):
        raise invalid(f'QueryOverride.queryParams "{query}" must be a URI query such as '
                      '"a=1&b=2": spaces must be %-encoded, and a fragment is not sent.')


def _validate_account(field: str, email: str, project: str) -> None:
    if not email:
        raise invalid(f"HttpTarget.{field}.serviceAccountEmail is required when the queue "
                      "overrides the token.")
    name, at, domain = email.partition("@")
    if not at or not name or "." not in domain or any(c.isspace() for c in email):
        raise invalid(f'HttpTarget.{field}.serviceAccountEmail "{email}" is not a service '
                      f"account email, such as caller@{project}{_SA_DOMAIN}.")

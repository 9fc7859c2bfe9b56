"""HTTP/JSON transcoding on the emulator's HTTP port: the REST face of the gRPC methods.

A request is matched against the ``google.api.http`` rules (``rest_rules``), turned into the
method's request message (path variables, then the JSON body, then query parameters, as
``rest_json`` maps them) and answered by the very method the gRPC port calls, through
``GrpcRouter.invoke``: same checks, same messages, same state.

What Google's front end does and the emulator does too:

- JSON is protobuf's JSON mapping: lowerCamelCase names (proto names accepted), durations
  "700s", RFC 3339 times, enums by name, bytes in base64 (standard or URL-safe alphabet);
  ``$alt=json;enum-encoding=int`` (what the Python REST clients send) answers enums as
  numbers. Fields with default values are left out of answers.
- Path variables win over body and query; with body "*" the query binds nothing but system
  parameters (``alt``, ``prettyPrint``, ``key``, ``fields``, ``$.xgafv``...), which are
  ignored everywhere.
- Errors are ``{"error": {"code": HTTP, "message", "status": "GRPC_CODE"}}`` with the HTTP
  status of the gRPC code (ALREADY_EXISTS -> 409, NOT_FOUND -> 404...); a refused write of
  Logging also carries its ``details``. A path no rule matches answers 404 in that shape.
- ``X-HTTP-Method-Override`` on a POST is honoured. The caller is the ``x-emulator-principal``
  header, as on gRPC (every header reaches the method as metadata, lower-cased); an
  ``Authorization`` header is accepted and not checked.

Where it differs, on purpose: answers are always compact JSON (``prettyPrint`` and ``fields``
are ignored, so answers are whole), ``alt=proto`` and JSONP ``callback`` are not served,
and a known path called with the wrong verb answers 404 naming the verbs it takes.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.rpc import status_pb2

from emulator.errors import ApiError
from emulator.grpc_server import GrpcRouter
from emulator.rest_json import bind_query, check_path, merge_json, parse_body, set_path
from emulator.rest_rules import RULES, HttpRule

log = logging.getLogger("emulator.rest")
C = grpc.StatusCode
# google/rpc/code.proto: the HTTP mapping of each canonical code.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    C.OK: 200, C.CANCELLED: 499, C.UNKNOWN: 500, C.INVALID_ARGUMENT: 400,
    C.DEADLINE_EXCEEDED: 504, C.NOT_FOUND: 404, C.ALREADY_EXISTS: 409,
    C.PERMISSION_DENIED: 403, C.RESOURCE_EXHAUSTED: 429, C.FAILED_PRECONDITION: 400,
    C.ABORTED: 409, C.OUT_OF_RANGE: 400, C.UNIMPLEMENTED: 501, C.INTERNAL: 500,
    C.UNAVAILABLE: 503, C.DATA_LOSS: 500, C.UNAUTHENTICATED: 401,
}
_VARIABLE = re.compile(r"\{([a-z_.]+)(?:=([^}]*))?\}")
_HAS_VERB = re.compile(r":[A-Za-z]+$")


@dataclass(frozen=True)
class Route:
    """A rule made ready to match: its regex, its variables' field paths, its request type
    (None when no service registered the method)."""

    rule: HttpRule
    regex: re.Pattern[str]
    fields: tuple[str, ...]
    request_type: type | None


def compile_template(template: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """A path template (``/v2/{name=projects/*/locations/*}:verb``) as an anchored regex on
    the raw (percent-encoded) path, with one group per variable in order."""
    pattern, fields, pos = "", [], 0
    for m in _VARIABLE.finditer(template):
        pattern += _literal(template[pos:m.start()])
        pattern += f"({_literal(m[2] or '*')})"
        fields.append(m[1])
        pos = m.end()
    pattern += _literal(template[pos:])
    return re.compile(f"^{pattern}$"), tuple(fields)


def _literal(text: str) -> str:
    return "/".join("[^/]+" if s == "*" else ".+" if s == "**" else re.escape(s)
                    for s in text.split("/"))


class RestGateway:
    """Serves ``rules`` on an aiohttp app by calling ``router``'s methods."""

    def __init__(self, router: GrpcRouter, rules: tuple[HttpRule, ...] = RULES) -> None:
        self.router = router
        # (verb, first path segment) -> routes, those ending in ":verb" first, so that
        # ".../services/s:getIamPolicy" is not read as the service "s:getIamPolicy".
        self._routes: dict[tuple[str, str], list[Route]] = {}
        for rule in sorted(rules, key=lambda r: not _HAS_VERB.search(r.template)):
            regex, fields = compile_template(rule.template)
            method = router.methods.get((rule.service, rule.method))
            request_type = method.request_type if method else None
            if request_type is not None:  # a wrong table fails at start, not on a call
                for field in fields:
                    check_path(request_type.DESCRIPTOR, field)
                if rule.body not in ("", "*", *request_type.DESCRIPTOR.fields_by_name):
                    raise ValueError(f"{rule.method} has no field {rule.body!r} for a body")
            key = (rule.verb, rule.template.split("/")[1])
            self._routes.setdefault(key, []).append(Route(rule, regex, fields, request_type))
        self.prefixes = sorted({f"/{prefix}" for _, prefix in self._routes})

    def add_routes(self, app: web.Application) -> None:
        # One catch-all per API version; aiohttp tries its exact paths (/v1/userinfo) first.
        for prefix in self.prefixes:
            app.router.add_route("*", prefix + "/{tail:.*}", self.handle)

    def match(self, verb: str, path: str) -> tuple[Route, tuple[str, ...]] | None:
        prefix = path.split("/", 2)[1] if path.count("/") >= 2 else ""
        for route in self._routes.get((verb, prefix), ()):
            m = route.regex.match(path)
            if m:
                return route, m.groups()
        return None

    async def handle(self, request: web.Request) -> web.Response:
        verb = request.method
        if verb == "POST" and (override := request.headers.get("X-HTTP-Method-Override")):
            verb = override.upper()
        path = request.rel_url.raw_path
        found = self.match(verb, path)
        if found is None:
            return self._not_found(verb, path)
        route, values = found
        rule = route.rule
        try:
            if route.request_type is None:
                raise ApiError(C.UNIMPLEMENTED, f"Method not implemented: the emulator does "
                               f"not serve {rule.service}.{rule.method}.")
            message = await _request_message(route, values, request)
            metadata = {k.lower(): v for k, v in request.headers.items()}
            answer = await self.router.invoke(rule.service, rule.method, message, metadata)
            alt = request.query.get("$alt") or request.query.get("alt") or ""
            body = json_format.MessageToDict(
                answer, use_integers_for_enums="enum-encoding=int" in alt)
        except ApiError as e:
            return error_response(e.code, e.message, getattr(e, "status_details", None))
        except Exception as e:  # a bug here must still answer in Google's shape
            log.exception("%s %s failed", verb, path)
            return error_response(C.INTERNAL, f"The emulator failed on {verb} {path}: "
                                  f"{type(e).__name__}: {e}. See the emulator's log.")
        return _json(200, body)

    def _not_found(self, verb: str, path: str) -> web.Response:
        prefix = path.split("/", 2)[1] if path.count("/") >= 2 else ""
        verbs = sorted({v for (v, p), routes in self._routes.items() if p == prefix
                        and any(r.regex.match(path) for r in routes)})
        if verbs:
            takes = verbs[0] if len(verbs) == 1 else f"{', '.join(verbs[:-1])} or {verbs[-1]}"
            message = f"{verb} {path} is not a method: that path takes {takes}."
        else:
            message = (f"The requested URL {path} was not found on this server: no method of "
                       "the emulator's APIs (Cloud Tasks v2 and v2beta3 with its locations, "
                       "Cloud Run Admin v2, Cloud Logging v2, IAM v1, Resource Manager v3) "
                       "has that path. Check the API version and the resource name.")
        return error_response(C.NOT_FOUND, message)


async def _request_message(route: Route, values: tuple[str, ...],
                           request: web.Request) -> Any:
    assert route.request_type is not None
    rule = route.rule
    message = route.request_type()
    js: Any = {}
    if rule.body:
        raw = await request.read()
        if raw.strip():
            body = parse_body(raw)
            js = body if rule.body == "*" else {rule.body: body}
    query = bind_query(request.query.items(), message.DESCRIPTOR, rule.body)
    if query:  # never with body "*", so js is a dict here
        js = {**js, **query}
    if js or not isinstance(js, dict):
        merge_json(js, message)
    for field, value in zip(route.fields, values, strict=True):
        set_path(message, field, unquote(value))
    return message


def error_response(code: grpc.StatusCode, message: str,
                   status_details: bytes | None = None) -> web.Response:
    """Google's JSON error, with the HTTP status of ``code``."""
    http = HTTP_STATUS.get(code, 500)
    error: dict[str, Any] = {"code": http, "message": message, "status": code.name}
    if status_details:
        try:
            status = status_pb2.Status.FromString(status_details)
            error["details"] = [json_format.MessageToDict(d) for d in status.details]
        except Exception:  # details are a courtesy: the code and message still go out
            log.exception("could not write the error's details as JSON")
    return _json(http, {"error": error})


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=json.dumps(body, ensure_ascii=False).encode(),
                        content_type="application/json", charset="utf-8")

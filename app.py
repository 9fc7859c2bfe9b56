"""The HTTP API: ``POST /enqueue`` (the original service's contract) and a few read-outs.

``uvicorn app:app --port 8080`` from the repository root. Settings come from the
environment (see ``enqueuer_core/config.py``); a setting that cannot work stops the start
with the reason on stderr. All logic lives in ``enqueuer_core``: this module only parses
requests, names the caller and renders answers.

    POST /enqueue   200 {"ok": true, "task", "service", "queue", "deadline_s", "idempotency_key"}
                    4xx/5xx {"ok": false, "error": {"code", "message"}}
    GET  /workers   the registry: queue, url, audience, deadline and payload schema per worker
    GET  /healthz   the process is up
    GET  /readyz    Cloud Tasks answers (503 otherwise)

Callers of ``/enqueue`` and ``/workers`` send a Google ID token (``API_AUTH=google``, see
``enqueuer_core.access.callers``) and act with the role the access config gives them; each
enqueue, allowed or refused, leaves an audit line on stdout. ``/openapi.json`` describes each
worker's payload, built from the registry at start.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import sys
import uuid
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from enqueuer_core.access import ALL_USERS, AccessPolicy, Acting, Action, Role
from enqueuer_core.access.callers import AUTHORIZATION, Callers, www_authenticate
from enqueuer_core.build import MAX_SCHEDULE_S, MAX_TASK_BYTES, EnqueueRequest
from enqueuer_core.config import Settings, load_settings
from enqueuer_core.enqueue import Enqueuer
from enqueuer_core.errors import (
    ConfigError,
    EnqueuerError,
    Forbidden,
    InvalidRequest,
    PayloadTooLarge,
    Unauthenticated,
)
from enqueuer_core.task_names import MAX_KEY_CHARS, task_id_for_key
from enqueuer_core.verify import TokenRejected
from enqueuer_core.workers import WorkerSpec

log = logging.getLogger("enqueuer.api")

# A request body is refused unread past this size. JSON escapes (``\u00f1`` is 6 bytes for
# 2 in the task) and whitespace make a body bigger than the task it becomes, so the cap is
# well above the task limit; the task's own size is checked by the library, with its message.
MAX_BODY_BYTES = 4 * MAX_TASK_BYTES
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
FIELDS = tuple(EnqueueRequest.model_fields)
SHORT_EXAMPLE = '{"service": "brain", "payload": {...}}'
# What ``task_names.check_key`` refuses, as a JSON Schema (ECMA-262) pattern: control characters.
KEY_PATTERN = r"^[^\x00-\x1f\x7f]*$"
SECURITY_SCHEME = "googleIdToken"


def _failure(status: int, code: str, message: str,
             headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"ok": False, "error": {"code": code, "message": message}}, status,
                        headers=headers)


def _error_response(error: EnqueuerError) -> JSONResponse:
    return _failure(error.http_status, error.code, error.message)


class Enqueued(BaseModel):
    """The answer to an enqueue that worked (``EnqueueResult.to_api()``)."""

    ok: Literal[True]
    task: str
    service: str
    queue: str
    deadline_s: int
    idempotency_key: str


class ErrorDetail(BaseModel):
    code: str
    message: str


class Failure(BaseModel):
    """Every failure: a stable ``code`` and a message that says what to do."""

    ok: Literal[False]
    error: ErrorDetail


class Worker(BaseModel):
    """A worker as ``GET /workers`` shows it (``WorkerSpec.public()``)."""

    name: str
    queue: str
    url: str
    audience: str
    deadline_s: int
    description: str
    payload_schema: dict[str, Any]
    example: dict[str, Any] | None


class Workers(BaseModel):
    workers: list[Worker]


class Ok(BaseModel):
    ok: Literal[True]


# -- what each operation may answer, with examples -------------------------------------------

Responses = dict[int | str, dict[str, Any]]
Example = tuple[str, str, str]  # name, code, message


def _failures(status: int, description: str, *examples: Example,
              headers: dict[str, Any] | None = None) -> Responses:
    """A documented failure status, with one named example per ``(name, code, message)``."""
    response: dict[str, Any] = {"model": Failure, "description": description, "content": {
        "application/json": {"examples": {name: {
            "summary": code if name == code else f"{code}: {name.replace('_', ' ')}",
            "value": {"ok": False, "error": {"code": code, "message": message}}}
            for name, code, message in examples}}}}
    if headers:
        response["headers"] = headers
    return {status: response}


_QUEUE = "projects/my-project/locations/us-central1/queues/queue-brain"
_TASK = f"{_QUEUE}/tasks/{task_id_for_key('report-2026-11-29')}"
_PERMISSION_DENIED = (
    "enqueuer@my-project.iam.gserviceaccount.com lacks the permission iam.serviceAccounts.actAs "
    "on the caller account caller@my-project.iam.gserviceaccount.com. Grant it "
    "roles/iam.serviceAccountUser: gcloud iam service-accounts add-iam-policy-binding "
    "caller@my-project.iam.gserviceaccount.com --member=serviceAccount:enqueuer@my-project.iam."
    "gserviceaccount.com --role=roles/iam.serviceAccountUser --project=my-project")
_INTERNAL = ("Enqueuer failed unexpectedly; the error is in its log. Nothing is known to be "
             "enqueued: retry with the same idempotency key, which is safe.")
_CERTS = ("Enqueuer could not fetch the certificates that verify callers' tokens from "
          "https://www.googleapis.com/oauth2/v1/certs (...): nothing was done; retry later.")


def _forbidden_example() -> str:
    """The refusal the access config gives a viewer who enqueues (its real words)."""
    try:
        AccessPolicy({"user:ana@example.com": Role.VIEWER}).decide("user:ana@example.com",
                                                                  Action.ENQUEUE)
    except Forbidden as e:
        return e.message
    raise AssertionError("a viewer may not enqueue")


def _responses(callers: Callers, *, enqueue: bool) -> Responses:
    """Every failure an operation that names its caller can answer (``enqueue``: and the
    ones of creating a task)."""
    out: Responses = {}
    if not callers.anonymous:
        out |= _failures(
            401, "No valid Google ID token: the message says why, and the command that gets one.",
            *[(name, "unauthenticated", callers.refusal(TokenRejected(reason, **facts),
                                                        AUTHORIZATION).message)
              for name, reason, facts in (
                  ("no_token", "no_header", {}),
                  ("wrong_audience", "audience", {"audience": "https://other.example.com"}),
                  ("expired", "expired", {"expired_at": "2026-12-02T10:00:00+00:00"}))],
            headers={"WWW-Authenticate": {
                "description": 'Bearer (RFC 6750), with error="invalid_token" when a token '
                               "was sent.", "schema": {"type": "string"}}})
    refusals: list[Example] = [("forbidden", "forbidden", _forbidden_example())]
    if enqueue:
        refusals.append(("permission_denied", "permission_denied", _PERMISSION_DENIED))
    out |= _failures(
        403, "Refused: by Enqueuer's access config (forbidden: the message names the role "
        "needed and the [access] line that grants it)" + (
            ", or by Google (permission_denied: the missing permission and the fix)."
            if enqueue else "."), *refusals)
    unavailable: list[Example] = []
    if enqueue:
        unavailable.append(("unavailable", "unavailable", (
            "Cloud Tasks is unreachable or too slow (ServiceUnavailable: failed to connect to "
            "all addresses). Nothing was enqueued; retry later.")))
    if not callers.anonymous:
        unavailable.append(("certs_unavailable", "certs_unavailable", _CERTS))
    if unavailable:
        out |= _failures(503, "Something Enqueuer needs is unreachable: nothing was done; retry.",
                         *unavailable)
    if not enqueue:
        return out
    return out | _failures(
        422, "Invalid input, or an unknown service (the message lists the valid ones).",
        ("invalid_request", "invalid_request",
         "payload for brain does not match its schema: payload: 'output_doc_id' is a required "
         "property"),
        ("unknown_service", "unknown_service",
         "unknown service 'brian': use one of brain, testimonios, transcripciones"),
    ) | _failures(
        413, "The task would exceed Cloud Tasks' size limit.",
        ("payload_too_large", "payload_too_large",
         f"the task would be 1,200,345 bytes; Cloud Tasks takes at most {MAX_TASK_BYTES:,}. Send "
         "a smaller payload (for example a reference to the data, not the data)."),
    ) | _failures(
        409, "A task with this idempotency key exists or existed recently.",
        ("duplicate", "duplicate",
         f"A task with this idempotency key is already queued: {_TASK}. Send a new idempotency "
         "key to enqueue the job again."),
    ) | _failures(
        502, "Any other upstream failure (a missing queue, an unexpected error).",
        ("queue_not_found", "queue_not_found",
         f"The queue {_QUEUE} does not exist. Create it with: gcloud tasks queues create "
         "queue-brain --location=us-central1 --project=my-project"),
        ("internal", "internal", _INTERNAL),
    )


def _field(loc: tuple[Any, ...]) -> str:
    parts = [p for p in loc if p != "body"]
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p))
                   for i, p in enumerate(parts))


def _explain(err: dict[str, Any]) -> str:
    """One validation error of the request body, as what is wrong and what to send."""
    kind, field = err["type"], _field(tuple(err["loc"]))
    if kind == "json_invalid":
        where = err["loc"][-1] if isinstance(err["loc"][-1], int) else None
        at = f" at character {where}" if where is not None else ""
        why = err.get("ctx", {}).get("error", err["msg"])
        return f"the body is not valid JSON ({why}{at}): send a JSON object like {SHORT_EXAMPLE}"
    if not field:  # the body itself: missing, not JSON, or not an object
        if isinstance(err.get("input"), bytes):
            return ("the body must be JSON, sent with the header Content-Type: "
                    f"application/json: a JSON object like {SHORT_EXAMPLE}")
        return (f"the body must be a JSON object like {SHORT_EXAMPLE}, "
                f"not {_json_type(err.get('input'))}")
    if kind == "extra_forbidden":
        return f"{field} is not a field of the request: use only {', '.join(FIELDS)}"
    if kind == "value_error":  # the model's own validators: the message says what to do
        return str(err.get("ctx", {}).get("error", err["msg"]))
    wanted = {
        "service": "a string, the worker's name (brain, testimonios, ...)",
        "payload": "a JSON object: the worker's input",
        "schedule_in_s": "a number of seconds from now, from 0 to 30 days",
        "idempotency_key": "a string of 1 to 500 characters",
    }.get(field)
    if wanted:
        return f"{field} must be {wanted}, not {_json_type(err.get('input'))}"
    return f"{field}: {err['msg']}"


def _explain_all(errors: list[dict[str, Any]]) -> str:
    # A body that is not an object is reported once, not once per field the model wanted.
    whole = [e for e in errors if e["type"] == "json_invalid" or not _field(e["loc"])]
    if whole:
        return _explain(whole[0])
    missing = [_field(e["loc"]) for e in errors if e["type"] == "missing"]
    parts = [_explain(e) for e in errors if e["type"] != "missing"]
    if missing:
        verb, them = ("is", "it") if len(missing) == 1 else ("are", "them")
        parts.insert(0, f"{' and '.join(missing)} {verb} required: add {them} to the body, "
                        f"like {SHORT_EXAMPLE}")
    return "; ".join(dict.fromkeys(parts))


def _json_type(value: object) -> str:
    if value is None:
        return "empty or null"
    for kind, name in ((bool, "a boolean"), (int, "a number"), (float, "a number"),
                       (str, "a string"), (list, "an array"), (dict, "an object"),
                       (bytes, "a body that is not JSON")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


# -- the body as JSON, strictly ---------------------------------------------------------------

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_BIG_INT = re.compile(r"-?\d{4000,}")


class _NotJson(ValueError):
    def __init__(self, message: str, near: str) -> None:
        super().__init__(message)
        self.message, self.near = message, near


def _refuse_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON value: send a number or null", name)


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _NotJson(f"{text[:20]} is too large for a number", text)
    return value


def json_body(body: bytes) -> Any:
    """The body as JSON as RFC 8259 has it, or ``json.JSONDecodeError`` (which FastAPI answers
    as 422 ``json_invalid``): UTF-8 only, no NaN or Infinity, no string that is half a
    surrogate pair. Python's ``json`` alone takes UTF-16 and those values, and the task made
    from them would reach the worker as something that is not JSON, or not be made at all."""
    try:
        text = body.decode("utf-8-sig")  # a byte order mark is tolerated, as json does
    except UnicodeDecodeError as e:
        at = len(body[:e.start].decode("utf-8", "replace"))
        raise json.JSONDecodeError(f"JSON is sent as UTF-8: byte 0x{body[e.start]:02x} is not",
                                   body.decode("utf-8", "replace"), at) from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    except _NotJson as e:
        raise json.JSONDecodeError(e.message, text, max(text.find(e.near), 0)) from None
    except json.JSONDecodeError:
        raise
    except ValueError as e:  # an integer of more digits than Python converts
        m = _BIG_INT.search(text)
        raise json.JSONDecodeError(f"a number is too long ({str(e).split(':')[0]})", text,
                                   m.start() if m else 0) from None
    if "\\u" in text and (m := _SURROGATE_ESCAPE.search(text)):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            lone = f"\\u{ord(e.object[e.start]):04x}"
            at = text.lower().find(lone)
            raise json.JSONDecodeError(f"{lone} is half of a surrogate pair, not a character",
                                       text, at if at >= 0 else m.start()) from None
    return value


class _JsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_strict_json"):
            self._strict_json = json_body(await self.body())
        return self._strict_json


# -- who calls ---------------------------------------------------------------------------------

_CLOUD_TRACE = re.compile(r"^([0-9a-fA-F]{32})(?:[/;]|$)")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def trace_of(headers: Headers, project: str | None) -> str | None:
    """The request's Cloud Logging trace, ``projects/PROJECT/traces/TRACE_ID``, from Cloud
    Run's ``X-Cloud-Trace-Context`` (else W3C ``traceparent``), so that the audit line sits
    with the request's other entries."""
    m = (_CLOUD_TRACE.match(headers.get("x-cloud-trace-context", ""))
         or _TRACEPARENT.match(headers.get("traceparent", "")))
    return f"projects/{project}/traces/{m[1]}" if m and project else None


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _acting_route(callers: Callers, enqueuer: Enqueuer) -> type[APIRoute]:
    """A route that names its caller before anything else: without a good token the answer is
    401 whatever the body holds, and the body is never read."""

    class ActingRoute(APIRoute):
        def get_route_handler(self) -> Handler:
            handler = super().get_route_handler()

            async def route(request: Request) -> Response:
                request = _JsonRequest(request.scope, request.receive)
                member = await callers.member_async(request.headers)
                request.state.acting = Acting(
                    member, enqueuer.access, "api", uuid.uuid4().hex,
                    trace_of(request.headers, enqueuer.settings.project_id))
                return await handler(request)

            return route

    return ActingRoute


async def _acting(request: Request) -> Acting:  # async: FastAPI runs a plain def in a thread
    acting: Acting = request.state.acting
    return acting


ActingCaller = Annotated[Acting, Depends(_acting)]


def _anonymous_warning(enqueuer: Enqueuer) -> str:
    """What ``API_AUTH=none`` lets anybody do, as the access config has it."""
    policy = enqueuer.access
    workers = [w.name for w in enqueuer.registry if policy.may(ALL_USERS, Action.ENQUEUE, w.name)]
    may = []
    if workers:
        may.append(f"enqueue to {', '.join(workers)}")
    if policy.may(ALL_USERS, Action.READ):
        may.append("read GET /workers")
    what = (f"allUsers may {' and '.join(may)}" if may else
            'allUsers may do nothing: POST /enqueue and GET /workers answer 403 until [access] '
            'grants it a role (for example "allUsers" = "operator")')
    return (f"API_AUTH=none: the API is anonymous: it does not check who calls, and every caller "
            f"acts as allUsers. Under {policy.source}, {what}. Set API_AUTH=google (the default) "
            "to require Google ID tokens.")


# -- the request as each worker takes it, for /openapi.json -------------------------------------

def _names(workers: list[str], taken: set[str]) -> dict[str, str]:
    """A component name per worker (``brain`` -> ``Brain``; ``my-worker`` -> ``MyWorker``)."""
    names: dict[str, str] = {}
    for worker in workers:
        base = "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", worker) if p)
        base = base if base[:1].isalpha() else f"Worker{base}"
        name, n = base, 1
        while {f"{name}Job", f"{name}Payload"} & taken:
            n += 1
            name = f"{base}{n}"
        taken |= {f"{name}Job", f"{name}Payload"}
        names[worker] = name
    return names


def _pointing_into(schema: Any, at: str) -> Any:
    """``schema`` with its own ``#...`` references pointing at where it now sits (``at``)."""
    if isinstance(schema, dict):
        return {k: (at + v[1:] if k == "$ref" and isinstance(v, str) and v.startswith("#")
                    else _pointing_into(v, at)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_pointing_into(v, at) for v in schema]
    return schema


def _valid(worker: WorkerSpec, payload: object) -> bool:
    try:
        worker.check_payload(payload)
    except InvalidRequest:
        return False
    return True


def _request_schemas(workers: list[WorkerSpec], fields: dict[str, Any], taken: set[str],
                     example: dict[str, Any]) -> dict[str, Any]:
    """``EnqueueRequest`` as a union discriminated by ``service``: a ``<Worker>Job`` per worker
    whose ``payload`` is its ``<Worker>Payload`` (the worker's JSON Schema; any object without
    one), with the request's other fields and their real limits."""
    names = _names([w.name for w in workers], taken)
    schemas: dict[str, Any] = {}
    for worker in workers:
        name = names[worker.name]
        payload = copy.deepcopy(worker.payload_schema)
        for key in ("$schema", "$id"):
            payload.pop(key, None)
        payload = _pointing_into(payload, f"#/components/schemas/{name}Payload")
        payload.setdefault("title", f"{name}Payload")
        payload.setdefault("description", f"What {worker.name} receives"
                           + (f": {worker.description}" if worker.description else "."))
        schemas[f"{name}Payload"] = payload
        job: dict[str, Any] = {
            "title": f"{name}Job",
            "description": f"A job for {worker.name}" + (f": {worker.description}"
                                                         if worker.description else "."),
            "type": "object",
            "properties": {
                "service": {"type": "string", "enum": [worker.name],
                            "description": f"The worker: {worker.name}."},
                "payload": {"$ref": f"#/components/schemas/{name}Payload"},
                "schedule_in_s": {
                    "anyOf": [{"type": "number", "minimum": 0, "maximum": MAX_SCHEDULE_S},
                              {"type": "null"}],
                    "default": None, "description": fields["schedule_in_s"]["description"]},
                "idempotency_key": {
                    "anyOf": [{"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS,
                               "pattern": KEY_PATTERN}, {"type": "null"}],
                    "default": None,
                    "description": fields["idempotency_key"]["description"]
                    + " No control characters (it travels as the X-Idempotency-Key header)."},
            },
            "required": ["service", "payload"],
            "additionalProperties": False,
        }
        if worker.example is not None and _valid(worker, worker.example):
            job["examples"] = [{"service": worker.name, "payload": worker.example}]
        schemas[f"{name}Job"] = job
    union: dict[str, Any] = {
        "title": "EnqueueRequest",
        "description": ("One job: which worker (service), what it gets (payload, as that "
                        "worker's schema says), when, and the key that makes it unique."),
        "oneOf": [{"$ref": f"#/components/schemas/{names[w.name]}Job"} for w in workers],
        "discriminator": {"propertyName": "service", "mapping": {
            w.name: f"#/components/schemas/{names[w.name]}Job" for w in workers}},
    }
    by_name = {w.name: w for w in workers}
    if example["service"] in by_name and _valid(by_name[example["service"]], example["payload"]):
        union["examples"] = [example]
    return schemas | {"EnqueueRequest": union}


def _document(app: FastAPI, enqueuer: Enqueuer, callers: Callers) -> dict[str, Any]:
    """The OpenAPI document: FastAPI's, with the request body as the registry has it and the
    callers' token as the security scheme."""
    doc = get_openapi(title=app.title, version=app.version, description=app.description,
                      routes=app.routes)
    schemas = doc["components"]["schemas"]
    fields = schemas["EnqueueRequest"]["properties"]
    example = EnqueueRequest.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]
    schemas |= _request_schemas(list(enqueuer.registry), fields, set(schemas), example)
    if not callers.anonymous:
        doc["components"]["securitySchemes"] = {SECURITY_SCHEME: {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": (
                f"A Google ID token whose audience is {callers.audience} (API_AUDIENCE), with a "
                "verified email: the caller acts with the role the access config gives that "
                "email. X-Serverless-Authorization: Bearer <token> is read first when its token "
                "is signed (Cloud Run removes the signature of the token it checked there).")}}
        for path, method in (("/enqueue", "post"), ("/workers", "get")):
            doc["paths"][path][method]["security"] = [{SECURITY_SCHEME: []}]
    return doc


class _Guard:
    """Outermost layer of the app (inside Starlette's own): body size cap and never a 500.

    A body past ``MAX_BODY_BYTES`` is answered 413 without being read any further. An
    exception nothing else handled is logged with its traceback and answered 502
    ``internal`` (unless the answer had already started, which leaves only closing it).
    FastAPI's own ``max_body_size`` answers a declared oversized body in plain text, and
    Starlette's catch-all logs the traceback a second time, hence this.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            if scope["method"] in ("POST", "PUT", "PATCH"):
                too_big = _declared_length(scope) > MAX_BODY_BYTES
                if not too_big:
                    receive, too_big = await _buffered(receive)
                if too_big:
                    await _error_response(_body_too_large())(scope, receive, tracking_send)
                    return
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if started:
                raise
            message = ("Enqueuer failed unexpectedly; the error is in its log. Nothing is "
                       "known to be enqueued: retry with the same idempotency key, which "
                       "is safe.")
            await _failure(502, "internal", message)(scope, receive, send)


def _declared_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


async def _buffered(receive: Receive) -> tuple[Receive, bool]:
    """Read the body (a chunked one declares no length) up to the cap; replay it after."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return receive, False  # the client left: the app sees it as usual
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > MAX_BODY_BYTES:
            return receive, True
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay, False


def _body_too_large() -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is larger than {MAX_BODY_BYTES:,} bytes; a task takes at most "
        f"{MAX_TASK_BYTES:,}. Send a smaller payload (for example a reference to the data, "
        "not the data)."
    )


def create_app(settings: Settings | None = None, enqueuer: Enqueuer | None = None) -> FastAPI:
    """The API over one ``Enqueuer`` (one gRPC channel for the process).

    Without arguments, settings come from the environment; settings that cannot work stop
    the process with the reason (``SystemExit``), as ``uvicorn app:app`` should.
    """
    try:
        enqueuer = enqueuer or Enqueuer(settings or load_settings())
        enqueuer.settings.check_api_auth()
    except ConfigError as e:
        # Once on stderr, no traceback; exit status as the CLI's for a ConfigError.
        # (``SystemExit(message)`` would print the message a second time.)
        print(e.message, file=sys.stderr, flush=True)
        raise SystemExit(e.exit_code) from None
    callers = Callers(enqueuer.settings)
    if callers.anonymous:
        log.warning(_anonymous_warning(enqueuer))

    app = FastAPI(
        title="Enqueuer",
        version="1",
        description=(
            "Run jobs on Cloud Run workers through Google Cloud Tasks.\n\n"
            "Every failure answers `{\"ok\": false, \"error\": {\"code\", \"message\"}}`, the "
            "message saying what to do; so do a path that is not here (404 `not_found`) and a "
            "method an operation does not take (405 `method_not_allowed`, with `Allow`)."),
    )
    app.state.enqueuer = enqueuer
    app.add_middleware(_Guard)

    @app.exception_handler(EnqueuerError)
    async def enqueuer_error(request: Request, exc: EnqueuerError) -> JSONResponse:
        if isinstance(exc, Unauthenticated):
            return _failure(exc.http_status, exc.code, exc.message,
                            {"WWW-Authenticate": www_authenticate(request.headers)})
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        # 404, 405 and the like, in the same shape as every other failure.
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        response = _failure(exc.status_code, code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _failure(422, "invalid_request", _explain_all(list(exc.errors())))

    acting_routes = APIRouter(route_class=_acting_route(callers, enqueuer))

    @acting_routes.post(
        "/enqueue", response_model=Enqueued, summary="Enqueue a job for a worker",
        responses={200: {"description": "The task was created.", "content": {
            "application/json": {"example": {
                "ok": True, "task": _TASK, "service": "brain", "queue": "queue-brain",
                "deadline_s": 700, "idempotency_key": "report-2026-11-29"}}}}}
        | _responses(callers, enqueue=True))
    async def enqueue(request: EnqueueRequest, acting: ActingCaller) -> JSONResponse:
        # The asyncio gRPC client: the call never holds the event loop, and no thread is
        # spent waiting on it.
        return JSONResponse((await enqueuer.enqueue_async(request, acting)).to_api())

    @acting_routes.get("/workers", response_model=Workers,
                       summary="The workers this Enqueuer can reach",
                       responses=_responses(callers, enqueue=False))
    async def workers(acting: ActingCaller) -> dict[str, list[dict[str, Any]]]:
        acting.check(Action.READ)
        return {"workers": [spec.public() for spec in enqueuer.registry]}

    app.include_router(acting_routes)

    # The probes stay open: Cloud Run's startup and liveness probes carry no token, and they
    # tell only that the process is up and that Cloud Tasks answers.
    @app.get("/healthz", response_model=Ok, summary="The process is up")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/readyz", response_model=Ok, summary="Cloud Tasks answers",
             responses=_failures(503, "Cloud Tasks is unreachable.", (
                 "unavailable", "unavailable",
                 "Cloud Tasks is unreachable or too slow (...). Retry later.")))
    async def readyz() -> JSONResponse:
        try:
            await enqueuer.check_reachable_async()
        except EnqueuerError as e:
            return _failure(503, e.code, e.message)
        return JSONResponse({"ok": True})

    document = _document(app, enqueuer, callers)
    app.openapi = lambda: document  # type: ignore[method-assign]
    return app


def __getattr__(name: str) -> FastAPI:
    # ``app`` is made on first use, which is ``uvicorn app:app`` loading it: importing this
    # module (tests, other tools) does not need a usable environment, running it does.
    if name == "app":
        globals()["app"] = created = create_app()
        return created
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

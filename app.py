"""The HTTP API: ``POST /enqueue`` (the original service's contract) and a few read-outs.

``uvicorn app:app --port 8080`` from the repository root. Settings come from the
environment (see ``enqueuer_core/config.py``); a setting that cannot work stops the start
with the reason on stderr. All logic lives in ``enqueuer_core``: this module only parses
requests and renders answers.

    POST /enqueue   200 {"ok": true, "task", "service", "queue", "deadline_s", "idempotency_key"}
                    4xx/5xx {"ok": false, "error": {"code", "message"}}
    GET  /workers   the registry: queue, url, audience, deadline and payload schema per worker
    GET  /healthz   the process is up
    GET  /readyz    Cloud Tasks answers (503 otherwise)
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from enqueuer_core.build import MAX_TASK_BYTES, EnqueueRequest
from enqueuer_core.config import Settings, load_settings
from enqueuer_core.enqueue import Enqueuer
from enqueuer_core.errors import ConfigError, EnqueuerError, PayloadTooLarge
from enqueuer_core.task_names import task_id_for_key

log = logging.getLogger("enqueuer.api")

# A request body is refused unread past this size. JSON escapes (``\u00f1`` is 6 bytes for
# 2 in the task) and whitespace make a body bigger than the task it becomes, so the cap is
# well above the task limit; the task's own size is checked by the library, with its message.
MAX_BODY_BYTES = 4 * MAX_TASK_BYTES
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
FIELDS = tuple(EnqueueRequest.model_fields)
SHORT_EXAMPLE = '{"service": "brain", "payload": {...}}'


def _failure(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": {"code": code, "message": message}}, status)


def _error_response(error: EnqueuerError) -> JSONResponse:
    return _failure(error.http_status, error.code, error.message)


class Enqueued(BaseModel):
    """The answer to an enqueue that worked (``EnqueueResult.to_api()``)."""

    ok: bool
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

    ok: bool
    error: ErrorDetail


def _example(status: int, description: str, code: str, message: str) -> dict[int | str, Any]:
    return {status: {"model": Failure, "description": description, "content": {
        "application/json": {"example": {"ok": False, "error": {"code": code,
                                                                  "message": message}}}}}}


_QUEUE = "projects/my-project/locations/us-central1/queues/queue-brain"
_TASK = f"{_QUEUE}/tasks/{task_id_for_key('report-2026-11-29')}"
ENQUEUE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The task was created.", "content": {"application/json": {"example": {
        "ok": True, "task": _TASK, "service": "brain", "queue": "queue-brain",
        "deadline_s": 700, "idempotency_key": "report-2026-11-29",
    }}}},
    **_example(422, "Invalid input, or an unknown service (the message lists the valid ones).",
               "unknown_service",
               "unknown service 'brian': use one of brain, testimonios, transcripciones"),
    **_example(413, "The task would exceed Cloud Tasks' size limit.", "payload_too_large",
               f"the task would be 1,200,345 bytes; Cloud Tasks takes at most "
               f"{MAX_TASK_BYTES:,}. Send a smaller payload (for example a reference to the "
               "data, not the data)."),
    **_example(409, "A task with this idempotency key exists or existed recently.",
               "duplicate",
               f"A task with this idempotency key is already queued: {_TASK}. Send a new "
               "idempotency key to enqueue the job again."),
    **_example(403, "Google refused: the message names the missing permission and the fix.",
               "permission_denied",
               "enqueuer@my-project.iam.gserviceaccount.com lacks the permission "
               "iam.serviceAccounts.actAs on the caller account caller@my-project.iam."
               "gserviceaccount.com. Grant it roles/iam.serviceAccountUser: gcloud iam "
               "service-accounts add-iam-policy-binding caller@my-project.iam.gserviceaccount"
               ".com --member=serviceAccount:enqueuer@my-project.iam.gserviceaccount.com "
               "--role=roles/iam.serviceAccountUser --project=my-project"),
    **_example(502, "Any other upstream failure (a missing queue, an unexpected error).",
               "queue_not_found",
               f"The queue {_QUEUE} does not exist. Create it with: gcloud tasks queues "
               "create queue-brain --location=us-central1 --project=my-project"),
    **_example(503, "Cloud Tasks is unreachable or too slow: nothing was enqueued, retry.",
               "unavailable",
               "Cloud Tasks is unreachable or too slow (ServiceUnavailable: failed to "
               "connect to all addresses). Nothing was enqueued; retry later."),
}


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
    if enqueuer is None:
        try:
            enqueuer = Enqueuer(settings or load_settings())
        except ConfigError as e:
            # Once on stderr, no traceback; exit status as the CLI's for a ConfigError.
            # (``SystemExit(message)`` would print the message a second time.)
            print(e.message, file=sys.stderr, flush=True)
            raise SystemExit(e.exit_code) from None

    app = FastAPI(
        title="Enqueuer",
        version="1",
        description="Run jobs on Cloud Run workers through Google Cloud Tasks.",
    )
    app.state.enqueuer = enqueuer
    app.add_middleware(_Guard)

    @app.exception_handler(EnqueuerError)
    async def enqueuer_error(_: Request, exc: EnqueuerError) -> JSONResponse:
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

    @app.post("/enqueue", response_model=Enqueued, responses=ENQUEUE_RESPONSES,
              summary="Enqueue a job for a worker")
    async def enqueue(request: EnqueueRequest) -> JSONResponse:
        # The asyncio gRPC client: the call never holds the event loop, and no thread is
        # spent waiting on it.
        return JSONResponse((await enqueuer.enqueue_async(request)).to_api())

    @app.get("/workers", summary="The workers this Enqueuer can reach")
    def workers() -> dict[str, list[dict[str, Any]]]:
        return {"workers": [spec.public() for spec in enqueuer.registry]}

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/readyz", summary="Cloud Tasks answers",
             responses=_example(503, "Cloud Tasks is unreachable.", "unavailable",
                                "Cloud Tasks is unreachable or too slow (...). Retry later."))
    async def readyz() -> JSONResponse:
        try:
            await enqueuer.check_reachable_async()
        except EnqueuerError as e:
            return _failure(503, e.code, e.message)
        return JSONResponse({"ok": True})

    return app


def __getattr__(name: str) -> FastAPI:
    # ``app`` is made on first use, which is ``uvicorn app:app`` loading it: importing this
    # module (tests, other tools) does not need a usable environment, running it does.
    if name == "app":
        globals()["app"] = created = create_app()
        return created
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

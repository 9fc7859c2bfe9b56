"""The HTTP API: ``POST /enqueue`` (the original service's contract) and a few read-outs.

``uvicorn app:app --port 8080`` from the repository root. Settings come from the
environment (see ``enqueuer_core/config.py``); a setting that cannot work stops the start
with the reason on stderr. All logic lives in ``enqueuer_core``: this module and its parts
in ``api/`` only parse requests, name the caller and render answers.

    POST /enqueue   200 {"ok": true, "task", "service", "queue", "deadline_s", "idempotency_key"}
                    4xx/5xx {"ok": false, "error": {"code", "message"}}
    GET  /workers   the registry: queue, url, audience, deadline and payload schema per worker
    GET  /healthz   the process is up
    GET  /readyz    Cloud Tasks answers (503 otherwise)

Callers of ``/enqueue`` and ``/workers`` send a Google ID token (``API_AUTH=google``, see
``enqueuer_core.access.callers``) and act with the role the access config gives them; each
enqueue, allowed or refused, leaves an audit line on stdout. ``/openapi.json`` describes each
worker's payload, built from the registry at start.

Here: ``create_app`` and the routes. The parts (``api/``): the failure shape and validation
messages (``errors``), the strict body and its guard (``body``), who calls (``acting``), the
everyday ``POST /enqueue`` answered without FastAPI's machinery (``fast_path``), and the
OpenAPI document (``contract``).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from api import collector
from api.acting import ActingCaller, acting_route, anonymous_warning
from api.body import MAX_BODY_BYTES, Guard
from api.contract import (
    DESCRIPTION,
    ENQUEUED,
    KEY_PATTERN,
    NOT_READY,
    Enqueued,
    Ok,
    Workers,
    document,
    responses,
)
from api.errors import HTTP_CODES, enqueuer_error_response, explain_all, failure
from api.fast_path import EnqueueFastPath
from enqueuer_core.access import Action
from enqueuer_core.access.callers import Callers
from enqueuer_core.build import EnqueueRequest
from enqueuer_core.config import Settings, load_settings
from enqueuer_core.enqueue import Enqueuer
from enqueuer_core.errors import ConfigError, EnqueuerError

# Imported from here by the tests: the body cap, the idempotency key's documented pattern.
__all__ = ["KEY_PATTERN", "MAX_BODY_BYTES", "create_app"]

log = logging.getLogger("enqueuer.api")


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
        log.warning(anonymous_warning(enqueuer))

    app = FastAPI(title="Enqueuer", version="1", description=DESCRIPTION)
    app.state.enqueuer = enqueuer
    # Added first, so inside Guard: the everyday POST /enqueue skips FastAPI's machinery.
    app.add_middleware(EnqueueFastPath, callers=callers, enqueuer=enqueuer)
    app.add_middleware(Guard)

    @app.exception_handler(EnqueuerError)
    async def enqueuer_error(request: Request, exc: EnqueuerError) -> JSONResponse:
        return enqueuer_error_response(exc, request.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        # 404, 405 and the like, in the same shape as every other failure.
        code = HTTP_CODES.get(exc.status_code, "http_error")
        response = failure(exc.status_code, code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        return failure(422, "invalid_request", explain_all(list(exc.errors())))

    acting_routes = APIRouter(route_class=acting_route(callers, enqueuer))

    @acting_routes.post("/enqueue", response_model=Enqueued, summary="Enqueue a job for a worker",
                        responses=ENQUEUED | responses(callers, enqueue=True))
    async def enqueue(request: EnqueueRequest, acting: ActingCaller) -> JSONResponse:
        # The asyncio gRPC client: the call never holds the event loop, and no thread is
        # spent waiting on it.
        return JSONResponse((await enqueuer.enqueue_async(request, acting)).to_api())

    @acting_routes.get("/workers", response_model=Workers,
                       summary="The workers this Enqueuer can reach",
                       responses=responses(callers, enqueue=False))
    async def workers(acting: ActingCaller) -> dict[str, list[dict[str, Any]]]:
        acting.check(Action.READ)
        return {"workers": [spec.public() for spec in enqueuer.registry]}

    app.include_router(acting_routes)

    # The probes stay open: Cloud Run's startup and liveness probes carry no token, and they
    # tell only that the process is up and that Cloud Tasks answers.
    @app.get("/healthz", response_model=Ok, summary="The process is up")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/readyz", response_model=Ok, summary="Cloud Tasks answers", responses=NOT_READY)
    async def readyz() -> JSONResponse:
        try:
            await enqueuer.check_reachable_async()
        except EnqueuerError as e:
            return failure(503, e.code, e.message)
        return JSONResponse({"ok": True})

    openapi = document(app, enqueuer, callers)
    app.openapi = lambda: openapi  # type: ignore[method-assign]
    return app


def __getattr__(name: str) -> FastAPI:
    # ``app`` is made on first use, which is ``uvicorn app:app`` loading it: importing this
    # module (tests, other tools) does not need a usable environment, running it does.
    if name == "app":
        globals()["app"] = created = create_app()
        # This process is the API server: its garbage collector is set for one.
        collector.settle()
        return created
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

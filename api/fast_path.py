"""``POST /enqueue`` as most requests are, answered without FastAPI's request machinery.

FastAPI routes a request, solves the route's dependencies, reads, parses and validates the
body through layers built for any route: for ``/enqueue`` that cost as much CPU as the rest
of the API's work except the gRPC call, and the API's CPU per enqueue is what bounds its rate
(bench/api.py). The everyday request needs none of that generality.

The everyday request: ``POST /enqueue`` (no ``root_path``), ``Content-Type: application/json``,
from a caller whose token verifies from the cached certificates (or any caller, with
``API_AUTH=none``), with a body that the API's strict JSON reader reads as an object that
``EnqueueRequest`` accepts. It is answered by the parts the route uses, in the route's order:
the caller named as ``api.acting`` names it, ``Enqueuer.enqueue_async``, then the result, or
the ``EnqueuerError``, rendered as the app renders it.

Any other request goes on to the app as it came (its body replayed), and is answered as it
always was: a refusal of the token, the content type or the body keeps its status, code and
message, because the same code still says them. Nothing here refuses anything.
"""

from __future__ import annotations

import json

from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.acting import acting_for
from api.body import json_body, replaying
from api.errors import enqueuer_error_response
from enqueuer_core.access.callers import Callers
from enqueuer_core.build import EnqueueRequest
from enqueuer_core.enqueue import Enqueuer
from enqueuer_core.errors import EnqueuerError

PATH = "/enqueue"
# Where callers' tokens travel (ASGI servers give header names in lower case).
_TOKEN_HEADERS = (b"authorization", b"x-serverless-authorization")


class EnqueueFastPath:
    """ASGI middleware, inside ``body.Guard`` (which has read the body and answers a 502 for
    what fails unexpectedly here, as for the app)."""

    def __init__(self, app: ASGIApp, callers: Callers, enqueuer: Enqueuer) -> None:
        self.app = app
        self.callers = callers
        self.enqueuer = enqueuer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH
                or scope.get("root_path")):
            await self.app(scope, receive, send)
            return
        message = await receive()
        headers = Headers(scope=scope)
        request = self._everyday(message, headers)
        if request is None:
            await self.app(scope, replaying(message, receive), send)
            return
        # Only the headers that carry tokens: the check reads each header it is given.
        member = self.callers.cached_member(
            [(k, v) for k, v in scope["headers"] if k in _TOKEN_HEADERS])
        if member is None:  # no token, a refused one, or certificates to fetch: the app says
            await self.app(scope, replaying(message, receive), send)
            return
        acting = acting_for(member, headers, self.enqueuer)
        try:
            response = JSONResponse(
                (await self.enqueuer.enqueue_async(request, acting)).to_api())
        except EnqueuerError as e:
            response = enqueuer_error_response(e, headers)
        await response(scope, receive, send)

    @staticmethod
    def _everyday(message: Message, headers: Headers) -> EnqueueRequest | None:
        """The request the body holds, when it is one FastAPI would take as it is (the same
        reader, the same validation); otherwise None."""
        if (message["type"] != "http.request" or message.get("more_body", False)
                or headers.get("content-type") != "application/json"):
            return None
        try:
            value = json_body(message.get("body", b""))
        except json.JSONDecodeError:
            return None
        if not isinstance(value, dict):
            return None
        try:
            # As FastAPI validates a body parameter (``validate_python``, from attributes).
            return EnqueueRequest.model_validate(value, from_attributes=True)
        except ValidationError:
            return None

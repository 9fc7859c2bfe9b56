"""Who calls: the routes of ``/enqueue`` and ``/workers`` name their caller (a Google ID token,
``enqueuer_core.access.callers``) before anything else, and hand the operation an ``Acting``
that the access config decides for, with an id and a trace for the audit line.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.responses import Response

from api.body import StrictJsonRequest
from enqueuer_core.access import ALL_USERS, Acting, Action
from enqueuer_core.access.callers import Callers
from enqueuer_core.enqueue import Enqueuer

_CLOUD_TRACE = re.compile(r"^([0-9a-fA-F]{32})(?:[/;]|$)")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def trace_of(headers: Headers, project: str | None) -> str | None:
    """The request's Cloud Logging trace, ``projects/PROJECT/traces/TRACE_ID``, from Cloud
    Run's ``X-Cloud-Trace-Context`` (else W3C ``traceparent``), so that the audit line sits
    with the request's other entries."""
    m = (_CLOUD_TRACE.match(headers.get("x-cloud-trace-context", ""))
         or _TRACEPARENT.match(headers.get("traceparent", "")))
    return f"projects/{project}/traces/{m[1]}" if m and project else None


def acting_for(member: str, headers: Headers, enqueuer: Enqueuer) -> Acting:
    """What an API request acts as: the caller's member under the access config, a new
    request id, and the request's trace."""
    return Acting(member, enqueuer.access, "api", uuid.uuid4().hex,
                  trace_of(headers, enqueuer.settings.project_id))


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def acting_route(callers: Callers, enqueuer: Enqueuer) -> type[APIRoute]:
    """A route that names its caller before anything else: without a good token the answer is
    401 whatever the body holds, and the body is never read."""

    class ActingRoute(APIRoute):
        def get_route_handler(self) -> Handler:
            handler = super().get_route_handler()

            async def route(request: Request) -> Response:
                request = StrictJsonRequest(request.scope, request.receive)
                member = await callers.member_async(request.headers)
                request.state.acting = acting_for(member, request.headers, enqueuer)
                return await handler(request)

            return route

    return ActingRoute


async def _acting(request: Request) -> Acting:  # async: FastAPI runs a plain def in a thread
    acting: Acting = request.state.acting
    return acting


# The caller an ``acting_route`` named, as an operation's parameter.
ActingCaller = Annotated[Acting, Depends(_acting)]


def anonymous_warning(enqueuer: Enqueuer) -> str:
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

"""The request body: read as JSON strictly (RFC 8259, UTF-8), refused unread past a size cap,
and the app's outermost guard, which also answers any error nothing else handled.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import INTERNAL_MESSAGE, error_response, failure
from enqueuer_core.build import MAX_TASK_BYTES
from enqueuer_core.errors import PayloadTooLarge

log = logging.getLogger("enqueuer.api")

# A request body is refused unread past this size. JSON escapes (``\u00f1`` is 6 bytes for
# 2 in the task) and whitespace make a body bigger than the task it becomes, so the cap is
# well above the task limit; the task's own size is checked by the library, with its message.
MAX_BODY_BYTES = 4 * MAX_TASK_BYTES


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


class StrictJsonRequest(Request):
    """A request whose ``json()`` is ``json_body``'s: what FastAPI validates a body with."""

    async def json(self) -> Any:
        if not hasattr(self, "_strict_json"):
            self._strict_json = json_body(await self.body())
        return self._strict_json


# -- the size cap, and never a 500 ------------------------------------------------------------

class Guard:
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
                    await error_response(_body_too_large())(scope, receive, tracking_send)
                    return
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if started:
                raise
            await failure(502, "internal", INTERNAL_MESSAGE)(scope, receive, send)


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
    return replaying({"type": "http.request", "body": body, "more_body": False}, receive), False


def replaying(first: Message, receive: Receive) -> Receive:
    """``receive`` with ``first``, already received, in front."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return first

    return replay


def _body_too_large() -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is larger than {MAX_BODY_BYTES:,} bytes; a task takes at most "
        f"{MAX_TASK_BYTES:,}. Send a smaller payload (for example a reference to the data, "
        "not the data)."
    )

"""The API's failures: one shape, ``{"ok": false, "error": {"code", "message"}}``, whatever
failed (an ``EnqueuerError``, a path or method that is not here, a body that does not
validate), and the message of an invalid body written as what is wrong and what to send.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from enqueuer_core.access.callers import www_authenticate
from enqueuer_core.build import EnqueueRequest
from enqueuer_core.errors import EnqueuerError, Unauthenticated
from enqueuer_core.verify import Headers

# Starlette's own refusals (an unknown path, a method a route does not take), by status.
HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
FIELDS = tuple(EnqueueRequest.model_fields)
SHORT_EXAMPLE = '{"service": "brain", "payload": {...}}'
# The answer to an error nothing else handled (body.Guard), and its documented example.
INTERNAL_MESSAGE = ("Enqueuer failed unexpectedly; the error is in its log. Nothing is known to "
                    "be enqueued: retry with the same idempotency key, which is safe.")


class ErrorDetail(BaseModel):
    code: str
    message: str


class Failure(BaseModel):
    """Every failure: a stable ``code`` and a message that says what to do."""

    ok: Literal[False]
    error: ErrorDetail


def failure(status: int, code: str, message: str,
            headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"ok": False, "error": {"code": code, "message": message}}, status,
                        headers=headers)


def error_response(error: EnqueuerError) -> JSONResponse:
    return failure(error.http_status, error.code, error.message)


def enqueuer_error_response(error: EnqueuerError, headers: Headers) -> JSONResponse:
    """The answer to an ``EnqueuerError``; a 401 carries its ``WWW-Authenticate`` challenge."""
    if isinstance(error, Unauthenticated):
        return failure(error.http_status, error.code, error.message,
                       {"WWW-Authenticate": www_authenticate(headers)})
    return error_response(error)


# -- a body that does not validate, explained -------------------------------------------------

def explain_all(errors: list[dict[str, Any]]) -> str:
    """FastAPI's validation errors of the request body, as one message: what is wrong and what
    to send instead."""
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


def _json_type(value: object) -> str:
    if value is None:
        return "empty or null"
    for kind, name in ((bool, "a boolean"), (int, "a number"), (float, "a number"),
                       (str, "a string"), (list, "an array"), (dict, "an object"),
                       (bytes, "a body that is not JSON")):
        if isinstance(value, kind):
            return name
    return type(value).__name__

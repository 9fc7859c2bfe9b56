"""What ``/openapi.json`` says the API does: the answers' models, every status an operation can
answer with real examples (the words the code would use), and the request as a union of one
branch per worker of the registry, each with that worker's payload schema. Built once, at
start, from the registry and the settings (``document``).
"""

from __future__ import annotations

import copy
import re
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from api.errors import INTERNAL_MESSAGE, Failure
from enqueuer_core.access import AccessPolicy, Action, Role
from enqueuer_core.access.callers import AUTHORIZATION, Callers
from enqueuer_core.build import MAX_SCHEDULE_S, MAX_TASK_BYTES, EnqueueRequest
from enqueuer_core.enqueue import Enqueuer
from enqueuer_core.errors import Forbidden, InvalidRequest
from enqueuer_core.task_names import MAX_KEY_CHARS, task_id_for_key
from enqueuer_core.verify import TokenRejected
from enqueuer_core.workers import WorkerSpec

DESCRIPTION = (
    "Run jobs on Cloud Run workers through Google Cloud Tasks.\n\n"
    "Every failure answers `{\"ok\": false, \"error\": {\"code\", \"message\"}}`, the "
    "message saying what to do; so do a path that is not here (404 `not_found`) and a "
    "method an operation does not take (405 `method_not_allowed`, with `Allow`).")
# What ``task_names.check_key`` refuses, as a JSON Schema (ECMA-262) pattern: control characters.
KEY_PATTERN = r"^[^\x00-\x1f\x7f]*$"
SECURITY_SCHEME = "googleIdToken"


class Enqueued(BaseModel):
    """The answer to an enqueue that worked (``EnqueueResult.to_api()``)."""

    ok: Literal[True]
    task: str
    service: str
    queue: str
    deadline_s: int
    idempotency_key: str


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


def failures(status: int, description: str, *examples: Example,
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
_CERTS = ("Enqueuer could not fetch the certificates that verify callers' tokens from "
          "https://www.googleapis.com/oauth2/v1/certs (...): nothing was done; retry later.")

# ``POST /enqueue``'s 200, with the task a real enqueue of that key would name.
ENQUEUED: Responses = {200: {"description": "The task was created.", "content": {
    "application/json": {"example": {
        "ok": True, "task": _TASK, "service": "brain", "queue": "queue-brain",
        "deadline_s": 700, "idempotency_key": "report-2026-11-29"}}}}}
# ``GET /readyz``'s failure: Cloud Tasks did not answer.
NOT_READY = failures(503, "Cloud Tasks is unreachable.", (
    "unavailable", "unavailable",
    "Cloud Tasks is unreachable or too slow (...). Retry later."))


def _forbidden_example() -> str:
    """The refusal the access config gives a viewer who enqueues (its real words)."""
    try:
        AccessPolicy({"user:ana@example.com": Role.VIEWER}).decide("user:ana@example.com",
                                                                  Action.ENQUEUE)
    except Forbidden as e:
        return e.message
    raise AssertionError("a viewer may not enqueue")


def responses(callers: Callers, *, enqueue: bool) -> Responses:
    """Every failure an operation that names its caller can answer (``enqueue``: and the
    ones of creating a task)."""
    out: Responses = {}
    if not callers.anonymous:
        out |= failures(
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
    out |= failures(
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
        out |= failures(503, "Something Enqueuer needs is unreachable: nothing was done; retry.",
                        *unavailable)
    if not enqueue:
        return out
    return out | failures(
        422, "Invalid input, or an unknown service (the message lists the valid ones).",
        ("invalid_request", "invalid_request",
         "payload for brain does not match its schema: payload: 'output_doc_id' is a required "
         "property"),
        ("unknown_service", "unknown_service",
         "unknown service 'brian': use one of brain, testimonios, transcripciones"),
    ) | failures(
        413, "The task would exceed Cloud Tasks' size limit.",
        ("payload_too_large", "payload_too_large",
         f"the task would be 1,200,345 bytes; Cloud Tasks takes at most {MAX_TASK_BYTES:,}. Send "
         "a smaller payload (for example a reference to the data, not the data)."),
    ) | failures(
        409, "A task with this idempotency key exists or existed recently.",
        ("duplicate", "duplicate",
         f"A task with this idempotency key is already queued: {_TASK}. Send a new idempotency "
         "key to enqueue the job again."),
    ) | failures(
        502, "Any other upstream failure (a missing queue, an unexpected error).",
        ("queue_not_found", "queue_not_found",
         f"The queue {_QUEUE} does not exist. Create it with: gcloud tasks queues create "
         "queue-brain --location=us-central1 --project=my-project"),
        ("internal", "internal", INTERNAL_MESSAGE),
    )


# -- the request as each worker takes it -------------------------------------------------------

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


def request_schemas(workers: list[WorkerSpec], fields: dict[str, Any], taken: set[str],
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


def document(app: FastAPI, enqueuer: Enqueuer, callers: Callers) -> dict[str, Any]:
    """The OpenAPI document: FastAPI's, with the request body as the registry has it and the
    callers' token as the security scheme."""
    doc = get_openapi(title=app.title, version=app.version, description=app.description,
                      routes=app.routes)
    schemas = doc["components"]["schemas"]
    fields = schemas["EnqueueRequest"]["properties"]
    example = EnqueueRequest.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]
    schemas |= request_schemas(list(enqueuer.registry), fields, set(schemas), example)
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

"""Requests to enqueue, and the pure step that turns one into the Cloud Task to create.

Nothing here does I/O: the dashboard's preview, the API's answer and ``Enqueuer.enqueue``
all come from ``build_task``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from google.cloud import tasks_v2
from google.protobuf import duration_pb2
from pydantic import BaseModel, ConfigDict, Field, field_validator

from enqueuer_core.config import Settings
from enqueuer_core.errors import PayloadTooLarge
from enqueuer_core.task_names import check_key, task_id_for_key
from enqueuer_core.workers import WorkerSpec

MAX_SCHEDULE_S = 30 * 24 * 3600  # Cloud Tasks refuses a schedule more than 720 h ahead
# Cloud Tasks refuses a stored task larger than this (measured; its docs say "1 MB").
MAX_TASK_BYTES = 1_048_569


class EnqueueRequest(BaseModel):
    """One job: which worker, what it gets, when, and the key that makes it unique."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "service": "brain",
            "payload": {"system_instructions_doc_id": "1AbC", "base_prompt_doc_id": "1DeF",
                        "input_doc_id": "1GhI", "output_doc_id": "1JkL"},
            "schedule_in_s": 0,
            "idempotency_key": "report-2026-11-29",
        }]},
    )

    service: str = Field(description="The worker: brain, testimonios, transcripciones, ...")
    payload: dict[str, Any] = Field(description="The JSON object the worker receives.")
    schedule_in_s: float | None = Field(
        None, strict=True, description="Run it this many seconds from now (up to 30 days)."
    )
    idempotency_key: str | None = Field(
        None, description="1-500 characters; the same key never enqueues twice. "
        "A UUID is made when it is omitted."
    )

    @field_validator("schedule_in_s")
    @classmethod
    def _schedule(cls, v: float | None) -> float | None:
        if v is not None and not 0 <= v <= MAX_SCHEDULE_S:
            raise ValueError(f"schedule_in_s must be from 0 to {MAX_SCHEDULE_S} "
                             "(30 days, Cloud Tasks' limit)")
        return v

    @field_validator("idempotency_key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        if v is not None:
            check_key(v)
        return v


@dataclass(frozen=True)
class BuiltTask:
    task: tasks_v2.Task
    queue: str  # full queue name
    idempotency_key: str
    schedule_time: dt.datetime | None
    # The raw protobuf message ``task`` wraps (the same object, no copy).
    message: Any = field(repr=False, compare=False)


# The raw protobuf classes under the client's proto-plus types. Building the task from them
# and wrapping it once costs a fraction of proto-plus's field-by-field conversion, which was
# the library's largest share of CPU per enqueue after the gRPC call itself.
_TASK = tasks_v2.Task.pb()
_HTTP_REQUEST = tasks_v2.HttpRequest.pb()
_OIDC_TOKEN = tasks_v2.OidcToken.pb()


# json.dumps with options builds an encoder per call; one, made once, writes the same.
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def body_of(payload: dict[str, Any]) -> bytes:
    return _COMPACT.encode(payload).encode("utf-8")


def build_task(
    request: EnqueueRequest, worker: WorkerSpec, settings: Settings, key: str,
    now: dt.datetime,
) -> BuiltTask:
    """The Cloud Task for ``request``, named after ``key``; checks payload and size."""
    worker.check_payload(request.payload)
    queue = settings.queue_path(worker.queue)
    schedule = None
    if request.schedule_in_s:
        schedule = now + dt.timedelta(seconds=request.schedule_in_s)
    task = _TASK(
        name=f"{queue}/tasks/{task_id_for_key(key)}",
        http_request=_HTTP_REQUEST(
            url=worker.url,
            http_method=tasks_v2.HttpMethod.POST,
            headers={"Content-Type": "application/json", "X-Idempotency-Key": key},
            body=body_of(request.payload),
            oidc_token=_OIDC_TOKEN(
                service_account_email=settings.caller_sa, audience=worker.audience
            ),
        ),
        dispatch_deadline=duration_pb2.Duration(seconds=worker.deadline_s),
    )
    if schedule is not None:
        task.schedule_time.FromDatetime(schedule)
    size = task.ByteSize()
    if size > MAX_TASK_BYTES:
        raise PayloadTooLarge(
            f"the task would be {size:,} bytes; Cloud Tasks takes at most {MAX_TASK_BYTES:,}. "
            "Send a smaller payload (for example a reference to the data, not the data)."
        )
    return BuiltTask(tasks_v2.Task.wrap(task), queue, key, schedule, task)

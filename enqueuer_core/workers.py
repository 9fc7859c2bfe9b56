"""The workers Enqueuer can reach: built-in ones from the settings, more from a TOML file.

A workers file (``WORKERS_FILE``) adds workers and gives any worker a payload JSON Schema,
an example payload and a description, without a code change::

    [workers.brain]
    description = "Runs a prompt over Google Docs"
    example = { system_instructions_doc_id = "1a", base_prompt_doc_id = "1b",
                input_doc_id = "1c", output_doc_id = "1d" }

    [workers.resumenes]
    queue = "queue-resumenes"
    url = "https://resumenes-abc123-uc.a.run.app/summarize"
    deadline_s = 300                      # audience: scheme + host of url unless given
    typical_duration_s = 40               # how long a job usually runs (the capacity check)
    schema_file = "schemas/resumenes.json"   # or an inline `schema = {...}`
    # The queue as `enqueuer setup` makes it (Cloud Tasks' defaults for what is not given):
    rate_limits = { max_dispatches_per_second = 5, max_concurrent_dispatches = 10 }
    retry_config = { max_attempts = 5, min_backoff_s = 1, max_backoff_s = 60, max_doublings = 3 }
    # Only these may enqueue to it (IAM member syntax; see enqueuer_core/access):
    enqueuers = ["serviceAccount:intake@acme.iam.gserviceaccount.com"]

The file's ``[access]`` section says who may do what (``enqueuer_core.access``).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from enqueuer_core.config import Settings, base_url, check_audience, check_deadline, check_url
from enqueuer_core.errors import ConfigError, InvalidRequest, UnknownService

ANY_OBJECT: dict[str, Any] = {"type": "object"}
BRAIN_FIELDS = ("system_instructions_doc_id", "base_prompt_doc_id", "input_doc_id",
                "output_doc_id")
BRAIN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": list(BRAIN_FIELDS),
    "properties": {f: {"type": "string", "minLength": 1, "description": f"Google Doc ID ({f})"}
                   for f in BRAIN_FIELDS},
}


class RateLimits(BaseModel):
    """A queue's rate limits, within what Cloud Tasks accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_dispatches_per_second: float | None = Field(None, gt=0, le=500)
    max_concurrent_dispatches: int | None = Field(None, gt=0, le=5000)


class RetryConfig(BaseModel):
    """A queue's retry configuration (``-1`` attempts: unlimited; durations in seconds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_attempts: int | None = Field(None, ge=-1)
    min_backoff_s: float | None = Field(None, ge=0)
    max_backoff_s: float | None = Field(None, ge=0)
    max_doublings: int | None = Field(None, ge=0)
    max_retry_duration_s: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _backoffs_in_order(self) -> RetryConfig:
        low, high = self.min_backoff_s, self.max_backoff_s
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_backoff_s = {low} is more than max_backoff_s = {high}: "
                             "Cloud Tasks refuses it; make min_backoff_s the smaller")
        return self


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    queue: str  # the queue ID
    url: str
    audience: str
    deadline_s: int
    description: str = ""
    payload_schema: dict[str, Any] = field(default_factory=lambda: dict(ANY_OBJECT))
    example: dict[str, Any] | None = None
    # The queue's configuration when the workers file gives it (for `enqueuer setup`).
    rate_limits: RateLimits | None = None
    retry_config: RetryConfig | None = None
    # Who alone may enqueue to it (IAM members), when the workers file narrows it.
    enqueuers: tuple[str, ...] | None = None
    # How long a job usually takes, when the workers file says: diagnostics multiply it by
    # the queue's dispatch rate to know how many requests the worker has in flight.
    typical_duration_s: float | None = None
    # Built once: building a validator costs more than validating a payload. None for the
    # schema of any object, which the check that the payload is an object already applies.
    _validator: jsonschema.Draft202012Validator | None = field(init=False, repr=False,
                                                                compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_validator", None if self.payload_schema == ANY_OBJECT
                           else jsonschema.Draft202012Validator(self.payload_schema))

    def check_payload(self, payload: object) -> None:
        """Refuse a payload that its schema does not accept, saying where and why."""
        if not isinstance(payload, dict):
            raise InvalidRequest(
                f"payload for {self.name} must be a JSON object, not {type(payload).__name__}"
            )
        if self._validator is None:
            return
        errors = sorted(self._validator.iter_errors(payload),
                        key=lambda e: list(e.absolute_path))
        if errors:
            where = lambda e: "payload" + "".join(  # noqa: E731
                f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in e.absolute_path)
            raise InvalidRequest(
                f"payload for {self.name} does not match its schema: "
                + "; ".join(f"{where(e)}: {e.message}" for e in errors)
            )

    def public(self) -> dict[str, Any]:
        """What ``GET /workers`` shows: no secrets here, only routing and the contract."""
        return {
            "name": self.name, "queue": self.queue, "url": self.url,
            "audience": self.audience, "deadline_s": self.deadline_s,
            "description": self.description, "payload_schema": self.payload_schema,
            "example": self.example,
        }


class _WorkerEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queue: str | None = None
    url: str | None = None
    audience: str | None = None
    deadline_s: int | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = None
    schema_file: str | None = None
    example: dict[str, Any] | None = None
    rate_limits: RateLimits | None = None
    retry_config: RetryConfig | None = None
    enqueuers: list[str] | None = None
    typical_duration_s: float | None = Field(None, gt=0)

    def __init__(self, **data: Any) -> None:
        if "schema" in data:
            data["schema_"] = data.pop("schema")
        super().__init__(**data)


def builtin_workers(settings: Settings) -> dict[str, WorkerSpec]:
    def spec(name: str, short: str, description: str, schema: dict[str, Any]) -> WorkerSpec:
        s = short.lower()
        return WorkerSpec(
            name=name, queue=getattr(settings, f"queue_{s}"), url=getattr(settings, f"url_{s}"),
            audience=getattr(settings, f"aud_{s}"),
            deadline_s=getattr(settings, f"deadline_{s}_s"), description=description,
            payload_schema=schema,
        )

    return {
        "brain": spec("brain", "BRAIN", "Runs a prompt over Google Docs (/process).",
                      BRAIN_SCHEMA),
        "testimonios": spec("testimonios", "TESTI",
                            "Generates testimonies (/generate-testimony).", ANY_OBJECT),
        "transcripciones": spec("transcripciones", "TRANS",
                                "Transcribes audio (/api/transcribe).", ANY_OBJECT),
    }


class Registry:
    def __init__(self, workers: dict[str, WorkerSpec]) -> None:
        self.workers = dict(sorted(workers.items()))

    def get(self, name: str) -> WorkerSpec:
        try:
            return self.workers[name]
        except KeyError:
            raise UnknownService(
                f"unknown service {name!r}: use one of {', '.join(self.workers)}"
            ) from None

    def __iter__(self) -> Iterator[WorkerSpec]:
        return iter(self.workers.values())


def load_registry(settings: Settings) -> Registry:
    workers = builtin_workers(settings)
    if settings.workers_file:
        workers.update(_from_file(Path(settings.workers_file), workers))
    return Registry(workers)


def _from_file(path: Path, builtin: dict[str, WorkerSpec]) -> dict[str, WorkerSpec]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"WORKERS_FILE={path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"WORKERS_FILE={path}: not valid TOML: {e}") from None
    out: dict[str, WorkerSpec] = {}
    for name, raw in (data.get("workers") or {}).items():
        where = f"WORKERS_FILE={path}, [workers.{name}]"
        try:
            entry = _WorkerEntry(**raw)
        except ValidationError as e:
            raise ConfigError(f"{where}: " + "; ".join(
                f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()
            )) from None
        out[name] = _spec(name, entry, builtin.get(name), path.parent, where)
    return out


def _spec(name: str, e: _WorkerEntry, base: WorkerSpec | None, folder: Path,
          where: str) -> WorkerSpec:
    url = e.url or (base.url if base else None)
    if not url:
        raise ConfigError(f"{where}: a new worker needs `url` (its endpoint)")
    schema = e.schema_
    if e.schema_file:
        try:
            schema = json.loads((folder / e.schema_file).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{where}: schema_file {e.schema_file}: {err}") from None
    schema = schema or (base.payload_schema if base else dict(ANY_OBJECT))
    try:
        check_url(f"{where} url", url)
        audience = e.audience or (base.audience if base and not e.url else base_url(url))
        check_audience(f"{where} audience", audience)
        deadline = e.deadline_s or (base.deadline_s if base else 600)
        check_deadline(f"{where} deadline_s", deadline)
        typical = e.typical_duration_s or (base.typical_duration_s if base else None)
        if typical is not None and typical > deadline:
            raise ValueError(f"{where}: typical_duration_s = {typical:g} is more than "
                             f"deadline_s = {deadline}: every such job would outlive its "
                             "dispatch deadline; raise deadline_s or give the real duration")
        jsonschema.Draft202012Validator.check_schema(schema)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    except jsonschema.SchemaError as err:
        raise ConfigError(f"{where}: the payload schema is not valid: {err.message}") from None
    spec = WorkerSpec(
        name=name, queue=e.queue or (base.queue if base else f"queue-{name}"), url=url,
        audience=audience, deadline_s=deadline,
        description=e.description or (base.description if base else ""),
        payload_schema=schema, example=e.example or (base.example if base else None),
        rate_limits=e.rate_limits or (base.rate_limits if base else None),
        retry_config=e.retry_config or (base.retry_config if base else None),
        enqueuers=tuple(e.enqueuers) if e.enqueuers is not None else None,
        typical_duration_s=typical,
    )
    if spec.example is not None:
        try:
            spec.check_payload(spec.example)
        except InvalidRequest as err:
            raise ConfigError(f"{where}: the example does not match: {err.message}") from None
    return spec

"""``Enqueuer.enqueue``: validate, build, create, and say what happened or why not.

The blocking ``enqueue`` serves the CLI, the dashboard and scripts; ``enqueue_async``
serves the API, on its event loop. Both run the same steps; only the client call differs.
Both take who is acting: the access config decides first, and one audit line records the
outcome (``enqueuer_core.access``): the task, the key, the payload's size and hash (and the
payload itself with ``AUDIT_PAYLOADS=full``), and ``replay_of``, the task an enqueue replays.
"""

from __future__ import annotations

import datetime as dt
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from google.cloud import tasks_v2

from enqueuer_core.access import AccessPolicy, Acting, Action, load_access
from enqueuer_core.access.audit import payload_record
from enqueuer_core.build import BuiltTask, EnqueueRequest, build_task
from enqueuer_core.clients import AsyncTasks, CreateTask, principal, tasks_async, tasks_client
from enqueuer_core.config import Settings
from enqueuer_core.errors import PermissionDenied, QueueNotFound, translate_google_errors
from enqueuer_core.task_names import new_key
from enqueuer_core.workers import Registry, WorkerSpec, load_registry

CALL_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 5.0
_CREATE_TASK_REQUEST = tasks_v2.CreateTaskRequest.pb()


def create_request(built: BuiltTask) -> Any:
    """The CreateTask request for ``built``, as the raw protobuf message ``CreateTask`` sends
    (proto-plus would convert the task into it field by field)."""
    return _CREATE_TASK_REQUEST(parent=built.queue, task=built.message)


@dataclass(frozen=True)
class EnqueueResult:
    task: str
    service: str
    queue: str
    deadline_s: int
    idempotency_key: str
    schedule_time: dt.datetime | None

    def to_api(self) -> dict[str, object]:
        """The original service's answer: these keys, exactly."""
        return {"ok": True, "task": self.task, "service": self.service, "queue": self.queue,
                "deadline_s": self.deadline_s, "idempotency_key": self.idempotency_key}


class Enqueuer:
    """One per process: the Cloud Tasks clients (gRPC channels), the registry and the access
    config."""

    def __init__(
        self, settings: Settings, client: tasks_v2.CloudTasksClient | None = None,
        registry: Registry | None = None, access: AccessPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry or load_registry(settings)
        self.access = access or load_access(
            settings, {w.name: w.enqueuers for w in self.registry if w.enqueuers is not None})
        self._client = client
        self._create: CreateTask | None = None
        self._async: AsyncTasks | None = None

    @property
    def client(self) -> tasks_v2.CloudTasksClient:
        # Made on first use: the API never needs the blocking one.
        if self._client is None:
            self._client = tasks_client(self.settings)
        return self._client

    def _tasks_async(self) -> AsyncTasks:
        if self._async is None:
            self._async = tasks_async(self.settings)
        return self._async

    @property
    def async_client(self) -> tasks_v2.CloudTasksAsyncClient:
        return self._tasks_async().client

    def _creating(self) -> CreateTask:
        if self._create is None:
            self._create = CreateTask.of(self.client)
        return self._create

    def _prepare(self, request: EnqueueRequest, now: dt.datetime | None,
                 ) -> tuple[WorkerSpec, BuiltTask]:
        worker = self.registry.get(request.service)
        key = request.idempotency_key or new_key()
        return worker, build_task(request, worker, self.settings, key,
                                  now or dt.datetime.now(dt.UTC))

    def _translating(self, built: BuiltTask, client: object) -> AbstractContextManager[None]:
        return translate_google_errors(queue=built.queue, caller=self.settings.caller_sa,
                                       principal=principal(client), task=built.message.name)

    @staticmethod
    def _result(created: tasks_v2.Task, worker: WorkerSpec, built: BuiltTask) -> EnqueueResult:
        return EnqueueResult(
            task=tasks_v2.Task.pb(created).name, service=worker.name, queue=worker.queue,
            deadline_s=worker.deadline_s, idempotency_key=built.idempotency_key,
            schedule_time=built.schedule_time,
        )

    def _doing(self, request: EnqueueRequest, acting: Acting,
               replay_of: str | None) -> AbstractContextManager[dict[str, Any]]:
        known = self.registry.workers.get(request.service)
        target = (self.settings.queue_path(known.queue) if known
                  else f"unknown service {request.service!r}")
        return acting.doing(Action.ENQUEUE, target, worker=request.service,
                            idempotency_key=request.idempotency_key, replay_of=replay_of)

    def _built(self, record: dict[str, Any], request: EnqueueRequest, built: BuiltTask) -> None:
        record["idempotency_key"] = built.idempotency_key
        record["task"] = built.message.name
        # The body is already built; `full` adds the request's payload object as it is.
        record["payload"] = payload_record(built.message.http_request.body,
                                           request.payload, self.settings.audit_payloads)

    def enqueue(self, request: EnqueueRequest, acting: Acting,
                now: dt.datetime | None = None, replay_of: str | None = None) -> EnqueueResult:
        """Create the task for ``request`` as ``acting``; ``replay_of``: the task it replays
        (its full name), kept in the audit line."""
        with self._doing(request, acting, replay_of) as record:
            worker, built = self._prepare(request, now)
            self._built(record, request, built)
            create = self._creating()
            with self._translating(built, self.client):
                # No automatic retry: a create whose answer was lost would come back as a
                # duplicate. The name makes a retry by the caller safe instead.
                created = create(create_request(built), timeout=CALL_TIMEOUT_S)
        return self._result(created, worker, built)

    async def enqueue_async(
        self, request: EnqueueRequest, acting: Acting, now: dt.datetime | None = None,
        replay_of: str | None = None,
    ) -> EnqueueResult:
        with self._doing(request, acting, replay_of) as record:
            worker, built = self._prepare(request, now)
            self._built(record, request, built)
            client, create = self._tasks_async()
            with self._translating(built, client):
                created = await create(create_request(built), timeout=CALL_TIMEOUT_S)
        return self._result(created, worker, built)

    def _ready_queue(self) -> str:
        return self.settings.queue_path(next(iter(self.registry)).queue)

    def check_reachable(self) -> None:
        """Raise ``Unavailable`` unless Cloud Tasks answers (readiness).

        Any answer proves it reachable, a refusal too: the enqueuer's account may create
        tasks without being allowed to read queues.
        """
        queue = self._ready_queue()
        try:
            with translate_google_errors(queue=queue, principal=principal(self.client)):
                self.client.get_queue(name=queue, retry=None, timeout=READY_TIMEOUT_S)
        except (PermissionDenied, QueueNotFound):
            pass

    async def check_reachable_async(self) -> None:
        queue = self._ready_queue()
        try:
            with translate_google_errors(queue=queue, principal=principal(self.async_client)):
                await self.async_client.get_queue(name=queue, retry=None,
                                                  timeout=READY_TIMEOUT_S)
        except (PermissionDenied, QueueNotFound):
            pass

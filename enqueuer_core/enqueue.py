"""``Enqueuer.enqueue``: validate, build, create, and say what happened or why not."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from google.cloud import tasks_v2

from enqueuer_core.build import EnqueueRequest, build_task
from enqueuer_core.clients import principal, tasks_client
from enqueuer_core.config import Settings
from enqueuer_core.errors import PermissionDenied, QueueNotFound, translate_google_errors
from enqueuer_core.task_names import new_key
from enqueuer_core.workers import Registry, load_registry

CALL_TIMEOUT_S = 10.0


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
    """One per process: it holds the Cloud Tasks client (a gRPC channel) and the registry."""

    def __init__(
        self, settings: Settings, client: tasks_v2.CloudTasksClient | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.settings = settings
        self.client = client or tasks_client(settings)
        self.registry = registry or load_registry(settings)
        self.principal = principal(self.client)

    def enqueue(self, request: EnqueueRequest, now: dt.datetime | None = None) -> EnqueueResult:
        worker = self.registry.get(request.service)
        key = request.idempotency_key or new_key()
        built = build_task(request, worker, self.settings, key,
                           now or dt.datetime.now(dt.UTC))
        with translate_google_errors(queue=built.queue, caller=self.settings.caller_sa,
                                     principal=self.principal, task=built.task.name):
            # No automatic retry: a create whose answer was lost would come back as a
            # duplicate. The name makes a retry by the caller safe instead.
            created = self.client.create_task(
                parent=built.queue, task=built.task, retry=None, timeout=CALL_TIMEOUT_S
            )
        return EnqueueResult(
            task=created.name, service=worker.name, queue=worker.queue,
            deadline_s=worker.deadline_s, idempotency_key=key,
            schedule_time=built.schedule_time,
        )

    def check_reachable(self) -> None:
        """Raise ``Unavailable`` unless Cloud Tasks answers (readiness).

        Any answer proves it reachable, a refusal too: the enqueuer's account may create
        tasks without being allowed to read queues.
        """
        queue = self.settings.queue_path(next(iter(self.registry)).queue)
        try:
            with translate_google_errors(queue=queue, caller=self.settings.caller_sa,
                                         principal=self.principal):
                self.client.get_queue(name=queue, retry=None, timeout=5.0)
        except (PermissionDenied, QueueNotFound):
            pass

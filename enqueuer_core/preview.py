"""What a job would become, before it is enqueued, and the same job as a shell command.

``preview_task`` runs the very builder ``Enqueuer.enqueue`` runs (``build_task``), so the
preview is the task that gets created, provided the caller enqueues with the preview's
idempotency key (``pinned_request``) and, for a scheduled job, the same ``now``.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
from dataclasses import dataclass

from google.cloud import tasks_v2

from enqueuer_core.build import EnqueueRequest, build_task
from enqueuer_core.enqueue import Enqueuer
from enqueuer_core.task_names import new_key

JSON_HEADERS = "Content-Type: application/json"


@dataclass(frozen=True)
class TaskPreview:
    """The Cloud Task a request makes: where it goes, what it carries, who signs it."""

    task_name: str  # full: projects/P/locations/L/queues/Q/tasks/T
    queue: str  # full queue path
    queue_id: str
    url: str
    method: str
    headers: dict[str, str]  # as sent; Cloud Tasks adds ``User-Agent: Google-Cloud-Tasks``
    body: str  # the JSON text as sent
    audience: str
    service_account: str
    deadline_s: int
    schedule_time: dt.datetime | None  # UTC; None: as soon as possible
    idempotency_key: str

    @property
    def task_id(self) -> str:
        return self.task_name.rsplit("/", 1)[-1]

    @property
    def project(self) -> str:
        return self.queue.split("/")[1]

    @property
    def location(self) -> str:
        return self.queue.split("/")[3]


def preview_task(enqueuer: Enqueuer, request: EnqueueRequest,
                 now: dt.datetime | None = None) -> TaskPreview:
    """The task ``enqueuer.enqueue(request)`` would create; nothing is sent anywhere.

    A request without an idempotency key gets a fresh one (a UUID) in the preview: enqueue
    ``pinned_request(request, preview)`` so that the task created is the one previewed.
    Raises what ``enqueue`` would raise for bad input (unknown service, payload refused by
    its schema, payload too large).
    """
    worker = enqueuer.registry.get(request.service)
    key = request.idempotency_key or new_key()
    built = build_task(request, worker, enqueuer.settings, key, now or dt.datetime.now(dt.UTC))
    http = built.task.http_request
    return TaskPreview(
        task_name=built.task.name, queue=built.queue,
        queue_id=built.queue.rsplit("/", 1)[-1], url=http.url,
        method=tasks_v2.HttpMethod(http.http_method).name,
        # A protobuf map has no order: sorted, the preview reads the same every time.
        headers=dict(sorted(http.headers.items())),
        body=http.body.decode("utf-8"), audience=http.oidc_token.audience,
        service_account=http.oidc_token.service_account_email, deadline_s=worker.deadline_s,
        schedule_time=built.schedule_time, idempotency_key=key,
    )


def pinned_request(request: EnqueueRequest, preview: TaskPreview) -> EnqueueRequest:
    """``request`` with the preview's idempotency key: it enqueues the previewed task."""
    return request.model_copy(update={"idempotency_key": preview.idempotency_key})


def api_body(request: EnqueueRequest) -> str:
    """The ``POST /enqueue`` body for ``request`` (optional fields only when set)."""
    return json.dumps(request.model_dump(exclude_none=True), ensure_ascii=False,
                      separators=(",", ":"))


def curl_command(api_url: str, request: EnqueueRequest, token_command: str) -> str:
    """The ``curl`` that sends ``request`` to the API at ``api_url`` (POSIX-shell quoted),
    with the caller's ID token from ``token_command`` (``tokens.token_command``), run by the
    shell: the API answers 401 without one."""
    bearer = f'"Authorization: Bearer $({token_command})"'
    return " ".join([shlex.join(["curl", "-s", "-X", "POST", f"{api_url.rstrip('/')}/enqueue"]),
                     "-H", bearer, shlex.join(["-H", JSON_HEADERS, "-d", api_body(request)])])


def rfc3339(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def gcloud_command(preview: TaskPreview) -> str:
    """The ``gcloud tasks create-http-task`` that creates the previewed task by hand.

    gcloud has no flag for the dispatch deadline: a task it creates gets Cloud Tasks'
    default (10 minutes), not the worker's ``deadline_s``.
    """
    args = ["gcloud", "tasks", "create-http-task", preview.task_id,
            f"--queue={preview.queue_id}", f"--location={preview.location}",
            f"--project={preview.project}", f"--url={preview.url}",
            f"--method={preview.method}"]
    args += [f"--header={name}:{value}" for name, value in preview.headers.items()]
    args += [f"--body-content={preview.body}",
             f"--oidc-service-account-email={preview.service_account}",
             f"--oidc-token-audience={preview.audience}"]
    if preview.schedule_time is not None:
        args.append(f"--schedule-time={rfc3339(preview.schedule_time)}")
    return shlex.join(args)

"""``enqueuer history|dead|replay|activity``: what happened to the jobs, from Cloud Logging.

Registered on ``cli.app`` (``cli.py`` imports this module); the rendering helpers, the
settings and who acts are ``cli``'s own.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any

import click
import typer

from enqueuer_core import history, inspect
from enqueuer_core.cli import (
    JsonFlag,
    _acting,
    _print_json,
    _reporting,
    _settings,
    _table,
    _when,
    app,
)
from enqueuer_core.clients import logging_client
from enqueuer_core.config import Settings
from enqueuer_core.enqueue import Enqueuer
from enqueuer_core.errors import EnqueuerError, InvalidRequest
from enqueuer_core.history.queries import worker_of
from enqueuer_core.workers import Registry

# The options the listing commands share.
LimitOption = Annotated[int, typer.Option("--limit", min=1, max=1000,
                                          help="At most N per page.")]
PageTokenOption = Annotated[str, typer.Option(
    "--page-token", help="The next page, as the previous one printed it.")]
SinceOption = Annotated[str | None, typer.Option(
    "--since", help="How far back: 30m, 24h, 7d, or an RFC 3339 time.")]


def resolve_task(name: str, settings: Settings, registry: Registry) -> str:
    """A full task name from a full name or ``QUEUE/TASK_ID`` or ``QUEUE/KEY`` (the queue as
    a queue ID or a worker name, as ``enqueuer tasks`` takes it; the key it was enqueued
    with names the task, see ``history.task_for``)."""
    if name.startswith("projects/"):
        return name
    queue, _, ref = name.removeprefix("queues/").partition("/")
    ref = ref.removeprefix("tasks/")
    if not queue or not ref:
        raise InvalidRequest(
            f"TASK {name!r} needs its queue: write QUEUE/TASK_ID or QUEUE/KEY (for example "
            "brain/report-1, the queue as a worker name or a queue ID) or the full name "
            "projects/P/locations/L/queues/Q/tasks/T, as `enqueuer tasks QUEUE` lists it")
    return history.task_for(ref, inspect.resolve_queue(queue, settings, registry))


def _since(text: str | None) -> dt.datetime | None:
    return history.parse_since(text) if text else None


# -- enqueuer history TASK ------------------------------------------------------------------

@app.command("history")
def history_command(
    task: Annotated[str, typer.Argument(
        help="QUEUE/TASK_ID or QUEUE/KEY (the queue as a worker name or queue ID; the "
        "idempotency key the job was enqueued with) or the full task name.")],
    as_json: JsonFlag = False,
) -> None:
    """Every attempt of one task, oldest first, from Cloud Tasks' logs.

    Its creation, each dispatch and each response (status, duration, counts, when it
    retries); the likely cause when it failed for good.
    """
    with _reporting(as_json):
        settings = _settings()
        enqueuer = Enqueuer(settings)
        name = resolve_task(task, settings, enqueuer.registry)
        attempts = history.task_attempts(logging_client(settings), name)
        sampling_off = None if attempts else _sampling_off(enqueuer, name)
    if as_json:
        _print_json({"task": name, "attempts": [a.to_dict() for a in attempts],
                     "log_sampling_fix": sampling_off})
        return
    if not attempts:
        typer.echo(f"No attempts of {name} are on record in Cloud Logging.")
        if sampling_off:
            typer.echo(f"Its queue does not log task operations; turn it on: {sampling_off}")
        return
    typer.echo(f"Task {name}")
    _table(["TIME", "EVENT", "STATUS", "DURATION", "DISPATCHES", "RESPONSES", "NEXT TRY"],
           [[_when(a.time), a.event, a.status,
             None if a.duration_s is None else f"{a.duration_s:.3f} s", a.dispatch_count,
             a.response_count, "never (final)" if a.final else _when(a.retry_time)]
            for a in attempts])
    last = attempts[-1]
    if last.final and last.status:
        worker = worker_of(enqueuer.registry, inspect.queue_of_task(name), last.target)
        cause = history.cause_of(last.status, worker, settings.caller_sa)
        typer.echo(f"\nFailed for good: {cause}\nRun it again: enqueuer replay {task}")


def _sampling_off(enqueuer: Enqueuer, task_name: str) -> str | None:
    """The gcloud fix when the task's queue logs nothing; None when it logs, or is unknown."""
    queue = inspect.queue_of_task(task_name)
    try:
        with inspect.task_call(enqueuer.client, task_name):
            got = enqueuer.client.get_queue(name=queue, timeout=10.0)
    except EnqueuerError:
        return None  # the queue cannot be read: say nothing rather than guess
    return history.sampling_fix(queue) if history.log_sampling(got) == 0 else None


# -- enqueuer dead QUEUE ----------------------------------------------------------------------

@app.command("dead")
def dead_command(
    queue: Annotated[str, typer.Argument(
        help="A queue ID, a worker name (its queue) or a full queue name.")],
    since: SinceOption = "24h",
    limit: LimitOption = 50,
    page_token: PageTokenOption = "",
    as_json: JsonFlag = False,
) -> None:
    """The queue's jobs that failed for good, newest first, with their likely cause.

    A job fails for good when its retries are used up. `enqueuer replay` runs one again.
    """
    with _reporting(as_json):
        settings = _settings()
        enqueuer = Enqueuer(settings)
        start = history.parse_since(since or "24h")
        path = inspect.resolve_queue(queue, settings, enqueuer.registry)
        page = history.dead_letters(logging_client(settings), path, start, page_size=limit,
                                    page_token=page_token, registry=enqueuer.registry,
                                    caller=settings.caller_sa)
    if as_json:
        _print_json({"queue": path, "since": start.isoformat(),
                     "dead_letters": [d.to_dict() for d in page.items],
                     "next_page_token": page.next_page_token})
        return
    if not page.items:
        typer.echo(f"No job of {path} failed for good since {_when(start)}.")
    else:
        _table(["FAILED AT", "TASK", "STATUS", "ATTEMPTS", "OF"],
               [[_when(d.time), d.task_id, d.status, d.dispatch_count, d.max_attempts]
                for d in page.items])
        typer.echo("\nLikely causes:")
        for status in dict.fromkeys(d.status for d in page.items):
            cause = next(d.cause for d in page.items if d.status == status)
            typer.echo(f"  {status}: {cause}")
        typer.echo(f"\nRun one again: enqueuer replay {queue}/TASK [--edit]")
    if page.next_page_token:
        typer.echo(f"(more: add --page-token {page.next_page_token})")


# -- enqueuer replay TASK ---------------------------------------------------------------------

@app.command("replay")
def replay_command(
    task: Annotated[str, typer.Argument(
        help="QUEUE/TASK_ID or QUEUE/KEY (the queue as a worker name or queue ID; the "
        "idempotency key the job was enqueued with) or the full task name.")],
    edit: Annotated[bool, typer.Option(
        "--edit", help="Edit the payload in $EDITOR first (also when the logs do not keep "
        "it: then write it from your records).")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Enqueue a dead job again, with a new key derived from the old one.

    Same worker and payload (from its enqueue audit line, kept with AUDIT_PAYLOADS=full),
    key report-1 -> report-1-r1, linked to the old task in the audit. Replaying the same
    task twice is refused (exit 3), naming the first replay.
    """
    with _reporting(as_json):
        settings = _settings()
        enqueuer = Enqueuer(settings)
        name = resolve_task(task, settings, enqueuer.registry)
        client = logging_client(settings)
        payload = None
        if edit:
            payload = _edited(history.replay_source(client, name, enqueuer.registry),
                              enqueuer.registry)
        result = history.replay(enqueuer, client, name,
                                _acting(settings, enqueuer.access), payload)
    if as_json:
        _print_json({**result.to_api(), "replay_of": name})
        return
    typer.echo(f"Replayed {name}\n     as {result.task}")
    for label, value in [("service", result.service), ("queue", result.queue),
                         ("key", result.idempotency_key)]:
        typer.echo(f"  {label:<8} {value}")


def _edited(source: history.ReplaySource, registry: Registry) -> Any:
    if source.worker is None:
        raise InvalidRequest(f"Task {source.task} cannot be replayed: {source.why_not}")
    # Without the payload on record, the worker's example is a start to edit from.
    start = source.payload if source.payload is not None else (
        registry.workers[source.worker].example or {})
    text = json.dumps(start, indent=2, ensure_ascii=False) + "\n"
    # Typer 0.29 vendors a click without edit(); click itself is installed (uvicorn's and
    # streamlit's dependency, pinned in requirements.txt).
    edited = click.edit(text, extension=".json")
    edited = text if edited is None else edited  # closed without saving: as it was
    try:
        return json.loads(edited)
    except json.JSONDecodeError as e:
        raise InvalidRequest(
            f"the edited payload is not valid JSON: {e.msg} at line {e.lineno}, column "
            f"{e.colno}. Nothing was enqueued; run `enqueuer replay {source.task} --edit` "
            "again.") from None


# -- enqueuer activity ------------------------------------------------------------------------

@app.command("activity")
def activity_command(
    who: Annotated[str | None, typer.Option(
        "--who", help="Who acted: user:ana@example.com, serviceAccount:…, or an email.")
    ] = None,
    action: Annotated[str | None, typer.Option(
        "--action", help="enqueue, run, delete, pause, resume, purge, setup_apply, …")] = None,
    queue: Annotated[str | None, typer.Option(
        "--queue", help="A queue ID, a worker name (its queue) or a full queue name.")] = None,
    outcome: Annotated[str | None, typer.Option(
        "--outcome", help="ok, refused or failed.")] = None,
    since: SinceOption = None,
    limit: LimitOption = 50,
    page_token: PageTokenOption = "",
    as_json: JsonFlag = False,
) -> None:
    """Who did what, when, with what outcome (Enqueuer's audit lines), newest first."""
    with _reporting(as_json):
        settings = _settings()
        start = _since(since)
        path = None
        if queue:
            path = inspect.resolve_queue(queue, settings, Enqueuer(settings).registry)
        page = history.actions(logging_client(settings), str(settings.project_id), who=who,
                               action=action, queue=path, outcome=outcome, since=start,
                               page_size=limit, page_token=page_token)
    if as_json:
        _print_json({"actions": [a.to_dict() for a in page.items],
                     "next_page_token": page.next_page_token})
        return
    if not page.items:
        typer.echo("No action on record" + (" matches these filters." if any(
            (who, action, queue, outcome, since)) else "."))
    else:
        _table(["TIME", "WHO", "ACTION", "TARGET", "OUTCOME", "VIA", "DETAIL"],
               [[_when(a.time), a.principal, a.action, _short(a.target),
                 a.outcome + (f" ({a.error_code})" if a.error_code else ""), a.via,
                 _detail(a)] for a in page.items])
    if page.next_page_token:
        typer.echo(f"(more: add --page-token {page.next_page_token})")


def _short(target: str) -> str:
    """``projects/P/locations/L/queues/Q[/tasks/T]`` as ``Q[/T]``."""
    if "/queues/" not in target:
        return target
    return target.split("/queues/", 1)[1].replace("/tasks/", "/")


def _detail(a: history.ActionRecord) -> str | None:
    bits = [f"key {a.idempotency_key}" if a.idempotency_key else "",
            f"{a.count} task(s)" if a.count is not None else "",
            f"replays {a.replay_of.rsplit('/', 1)[-1]}" if a.replay_of else ""]
    return ", ".join(b for b in bits if b) or None


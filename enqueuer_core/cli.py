"""The ``enqueuer`` command: parse the arguments, call the library, render the answer.

Every ``EnqueuerError`` ends the command with its exit code and its message on stderr
(with ``--json`` also ``{"ok": false, "error": {...}}`` on stdout); no traceback.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from enqueuer_core import devstack, inspect, tokens
from enqueuer_core.access import AccessPolicy, Acting
from enqueuer_core.build import EnqueueRequest
from enqueuer_core.clients import caller_member
from enqueuer_core.config import LOCAL_API_CALLER, Settings, load_settings
from enqueuer_core.deploy import deploy_plan
from enqueuer_core.enqueue import Enqueuer, EnqueueResult
from enqueuer_core.errors import ConfigError, EnqueuerError, InvalidRequest

app = typer.Typer(
    help="Enqueue jobs for the Cloud Run workers through Cloud Tasks, and look at the queues.",
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
# The flag that sets each field of an EnqueueRequest, for error messages.
_FLAGS = {"service": "SERVICE", "payload": "--payload", "schedule_in_s": "--in",
          "idempotency_key": "--key"}


@contextmanager
def _reporting(as_json: bool) -> Iterator[None]:
    """Turn an ``EnqueuerError`` into its message, its exit code and (``--json``) JSON."""
    try:
        yield
    except EnqueuerError as err:
        if as_json:
            _print_json({"ok": False, "error": err.to_dict()})
        typer.echo(f"error: {err.message}", err=True)
        raise typer.Exit(err.exit_code) from None


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r]
                                           for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _when(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ") if value else None


def _settings() -> Settings:
    return load_settings()


def _acting(settings: Settings, policy: AccessPolicy) -> Acting:
    """The CLI acts as whom it calls Google as (``EMULATOR_OPERATOR`` on the emulator)."""
    return Acting(caller_member(settings), policy, "cli")


def read_payload(value: str) -> Any:
    """``--payload``: JSON text, ``@FILE`` (JSON read from the file) or ``@-`` (stdin)."""
    where = "--payload"
    if value.startswith("@"):
        path = value[1:]
        where = "stdin" if path == "-" else f"the payload file {path}"
        try:
            value = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            reason = getattr(e, "strerror", None) or e
            raise InvalidRequest(
                f"cannot read {where}: {reason}. "
                "Pass --payload '{...}' or --payload @FILE with JSON in it."
            ) from None
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        raise InvalidRequest(
            f"{where} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno} "
            f"(character {e.pos}). Pass a JSON object, for example --payload "
            "'{\"input_doc_id\": \"1GhI\"}'."
        ) from None


def make_request(service: str, payload: Any, schedule_in_s: float | None,
                 key: str | None) -> EnqueueRequest:
    """An ``EnqueueRequest``, or ``InvalidRequest`` naming the flag to change."""
    try:
        return EnqueueRequest(service=service, payload=payload, schedule_in_s=schedule_in_s,
                              idempotency_key=key)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            message = err["msg"].removeprefix("Value error, ")
            if field == "payload" and err["type"] == "dict_type":
                message = f"must be a JSON object, not {type(payload).__name__}"
            problems.append(f"{_FLAGS.get(field, field)}: {message}")
        raise InvalidRequest("; ".join(problems)) from None


@app.command()
def enqueue(
    service: Annotated[str, typer.Argument(help="The worker: brain, testimonios, ...")],
    payload: Annotated[str, typer.Option(
        "--payload", help="The JSON object the worker gets, or @FILE to read it from a file "
        "(@- for stdin).")],
    schedule_in: Annotated[float | None, typer.Option(
        "--in", help="Run it this many seconds from now (up to 30 days).")] = None,
    key: Annotated[str | None, typer.Option(
        "--key", help="Idempotency key: the same key never enqueues twice (default: a UUID).",
    )] = None,
    as_json: JsonFlag = False,
) -> None:
    """Enqueue one job for a worker."""
    with _reporting(as_json):
        request = make_request(service, read_payload(payload), schedule_in, key)
        enqueuer = Enqueuer(_settings())
        result = enqueuer.enqueue(request, _acting(enqueuer.settings, enqueuer.access))
    if as_json:
        _print_json(result.to_api())
    else:
        _render_result(result)


def _render_result(result: EnqueueResult) -> None:
    typer.echo(f"Enqueued {result.task}")
    for label, value in [("service", result.service), ("queue", result.queue),
                         ("deadline", f"{result.deadline_s} s"),
                         ("key", result.idempotency_key),
                         ("runs at", _when(result.schedule_time) or "now")]:
        typer.echo(f"  {label:<9} {value}")


@app.command()
def workers(as_json: JsonFlag = False) -> None:
    """The workers this enqueuer can reach: queue, URL, token audience, deadline."""
    with _reporting(as_json):
        # The access config is checked here too: a malformed [access] stops every command.
        registry = Enqueuer(_settings()).registry
    if as_json:
        _print_json([spec.public() for spec in registry])
        return
    _table(["WORKER", "QUEUE", "URL", "AUDIENCE", "DEADLINE"],
           [[w.name, w.queue, w.url, w.audience, f"{w.deadline_s} s"] for w in registry])


@app.command()
def queues(as_json: JsonFlag = False) -> None:
    """The workers' queues: state, rate limits and how many tasks they hold."""
    with _reporting(as_json):
        settings = _settings()
        snapshots = inspect.list_queues(Enqueuer(settings).client, settings)
    if as_json:
        _print_json([q.to_dict() for q in snapshots])
        return
    _table(["QUEUE", "STATE", "WORKERS", "RATE/S", "CONCURRENT", "TASKS"],
           [[q.queue_id, q.state, ",".join(q.workers), q.rate, q.max_concurrent,
             q.tasks_count_text] for q in snapshots])
    for q in snapshots:
        if q.error:
            typer.echo(f"\n{q.queue_id}: {q.error}")


@app.command()
def tasks(
    queue: Annotated[str, typer.Argument(
        help="A queue ID, a worker name (its queue) or a full queue name.")],
    failing: Annotated[bool, typer.Option(
        "--failing", help="Only the tasks whose last attempt failed.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="List at most N tasks.")] = 100,
    as_json: JsonFlag = False,
) -> None:
    """The tasks waiting in a queue, with their attempts and last response."""
    with _reporting(as_json):
        settings = _settings()
        enqueuer = Enqueuer(settings)
        path = inspect.resolve_queue(queue, settings, enqueuer.registry)
        listing = inspect.list_tasks(enqueuer.client, path, failing_only=failing, limit=limit)
    if as_json:
        _print_json(listing.to_dict())
        return
    if not listing.tasks:
        typer.echo(f"No {'failing ' if failing else ''}tasks in {path}.")
    else:
        _table(["TASK", "KEY", "SCHEDULED", "DISPATCHES", "RESPONSES", "LAST", "LAST ATTEMPT"],
               [[t.task_id, t.idempotency_key, _when(t.schedule_time), t.dispatch_count,
                 t.response_count, t.last_response_code, _when(t.last_attempt_time)]
                for t in listing.tasks])
    if listing.more:
        typer.echo(f"(more tasks not shown: {listing.scanned} examined; raise --limit)")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def emulator(ctx: typer.Context) -> None:
    """Run the local Cloud Tasks emulator: `python -m emulator ARGS` (try --help)."""
    # Replaces this process, so that signals and the exit code are the emulator's own.
    # enqueuer_core does not import the emulator: it stands alone, as Google does.
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "emulator", *ctx.args])


@app.command()
def dev(
    no_api: Annotated[bool, typer.Option("--no-api", help="Leave the API out.")] = False,
    no_dashboard: Annotated[bool, typer.Option(
        "--no-dashboard", help="Leave the dashboard out.")] = False,
    state: Annotated[Path | None, typer.Option(
        "--state", help="Folder for the stack's state and logs (default: $ENQUEUER_STATE or "
        "~/.local/state/enqueuer/dev).")] = None,
    ephemeral: Annotated[bool, typer.Option(
        "--ephemeral-ports", help="Free ports instead of 8080-8083, 8123-8124 and 8501.")
    ] = False,
) -> None:
    """The whole product on this machine: emulator, workers, API, dashboard. Ctrl-C stops it."""
    with _reporting(False):
        code = devstack.run(state or devstack.default_state_dir(),
                            devstack.DevPorts.ephemeral() if ephemeral else devstack.DevPorts(),
                            api=not no_api, dashboard=not no_dashboard)
    raise typer.Exit(code)


@app.command()
def deploy(
    image: Annotated[str | None, typer.Option(
        "--image", help="The image to build and deploy (default: REGION-docker.pkg.dev/"
        "PROJECT/enqueuer/enqueuer:latest).")] = None,
    api_caller: Annotated[list[str] | None, typer.Option(
        "--api-caller", help="A member that may call the API, e.g. serviceAccount:intake@"
        "PROJECT.iam.gserviceaccount.com (repeat for more).")] = None,
    dashboard_user: Annotated[list[str] | None, typer.Option(
        "--dashboard-user", help="A member that may open the dashboard through IAP, e.g. "
        "user:ana@example.com or domain:example.com (repeat for more).")] = None,
) -> None:
    """Print the commands that build the image and deploy the API and the dashboard to
    Cloud Run, closed by default, from these settings (a bash script: review it, run it)."""
    with _reporting(False):
        plan = deploy_plan(load_settings(), Path.cwd(), image, api_caller or [],
                           dashboard_user or [])
    typer.echo(plan.script(), nl=False)


@app.command()
def token(
    as_: Annotated[str | None, typer.Option(
        "--as", help="Whose token: an email, or a user:/serviceAccount: member (default: "
        f"{LOCAL_API_CALLER}, an operator of the local stack).")] = None,
    audience: Annotated[str | None, typer.Option(
        "--audience", help="The token's audience (default: API_AUDIENCE, the API's URL).")
    ] = None,
) -> None:
    """Print an ID token for calling the local stack's API (use it as `enqueuer --local
    token`): Authorization: Bearer $(enqueuer --local token). Only the token is printed.

    It comes from the emulator's issuer, which the API trusts on the local stack. On Google
    it refuses (exit 2) and prints the gcloud command that mints one there.
    """
    with _reporting(False):
        settings = _token_settings()
        if settings is None and audience is None:
            audience = os.environ.get("API_AUDIENCE")  # for the gcloud line it prints
        typer.echo(tokens.local_id_token(settings, as_, audience))


def _token_settings() -> Settings | None:
    """The settings, or None for Google's when they are not complete: a token is refused
    there anyway, with the gcloud line, not with what else Google's settings lack."""
    if os.environ.get("CLOUD_TASKS_EMULATOR_HOST"):
        return load_settings()
    try:
        return load_settings()
    except ConfigError:
        return None


@app.callback()
def _options(
    local: Annotated[bool, typer.Option(
        "--local", help="Use the settings of the running `enqueuer dev` stack (variables set "
        "in the environment still win).")] = False,
) -> None:
    if local:
        for name, value in devstack.local_settings().items():
            os.environ.setdefault(name, value)

# Commands registered on `app` by their modules as they are imported: cli_history's history,
# dead, replay and activity; cli_local's gcloud-env.
from enqueuer_core import cli_history, cli_local, cli_setup  # noqa: E402, F401


def main() -> None:
    app()


if __name__ == "__main__":
    main()

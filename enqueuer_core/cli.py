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

from enqueuer_core import devstack, diagnose, inspect, tokens
from enqueuer_core import setup as setup_
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


# ``enqueuer diagnose`` exit codes: a check failed, or (with none failing) one could not run.
DIAGNOSE_FAILED, DIAGNOSE_UNKNOWN = 1, 2


@app.command("diagnose")
def diagnose_command(
    worker: Annotated[list[str] | None, typer.Option(
        "--worker", help="Check this worker only (repeat for more; default: all).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Check that every worker can be reached, and print the exact fix of what cannot.

    Exit code 0 when no check fails (warnings allowed), 1 when one fails, 2 when none fails
    but some could not be run (an API unreachable or refusing). Settings that would not work
    are reported as failed checks, not refused; variables in the environment win over
    ``--local``, so ``AUD_BRAIN=... enqueuer --local diagnose`` tries a change first.
    """
    with _reporting(as_json):
        results = diagnose.diagnose(load_settings(lenient=True), worker or None)
    if as_json:
        _print_json([r.to_dict() for r in results])
    else:
        _render_diagnosis(results)
    _exit_for_diagnosis(results)


def _exit_for_diagnosis(results: list[diagnose.CheckResult]) -> None:
    status = diagnose.worst(results)
    if status == "fail":
        raise typer.Exit(DIAGNOSE_FAILED)
    if status == "unknown":
        raise typer.Exit(DIAGNOSE_UNKNOWN)


def _render_diagnosis(results: list[diagnose.CheckResult]) -> None:
    _table(["WORKER", "CHECK", "STATUS", "TITLE", "EVIDENCE"],
           [[r.worker, r.check, r.status.upper(), r.title, r.evidence] for r in results])
    todo = [r for r in results if r.status != "pass" and r.fix]
    if todo:
        typer.echo("\nTo fix:")
        for r in todo:
            typer.echo(f"  [{r.status}] {r.worker} {r.check}: {r.fix}")
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "warn", "fail",
                                                                "unknown")}
    typer.echo("\n" + ", ".join(f"{n} {s}" for s, n in counts.items() if n))


@app.command("setup")
def setup_command(
    apply: Annotated[bool, typer.Option(
        "--apply", help="Make the changes (default: only show them).")] = False,
    worker: Annotated[list[str] | None, typer.Option(
        "--worker", help="Only this worker's queue and service (repeat for more).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Make Google match this config: queues, accounts and IAM bindings.

    Shows each change against what Google holds now (kept / create / update / add), with
    its gcloud equivalent. Exit code 0 when nothing is to change, 10 when something is.
    With --apply, makes the changes through the Google APIs as you (your Application Default
    Credentials; the dev stack's operator with --local), adding bindings and never removing
    one; then checks the result with diagnose. Only an admin of the workers file's [access]
    may apply (exit 11 otherwise, with the line that would grant it). A refusal by Google
    names the permission missing and what was done so far (exit 4).
    """
    with _reporting(as_json):
        settings = load_settings()
        clients = setup_.SetupClients.build(settings)
        plan = setup_.make_plan(settings, clients, worker or None)
        if not apply:
            if as_json:
                _print_json(plan.to_dict())
            else:
                _render_plan(plan)
            raise typer.Exit(plan.exit_code)
        if not as_json:
            _render_plan(plan)
        acting = _acting(settings, Enqueuer(settings).access)
        # Even with nothing to change: only an admin applies setup, and it is on record.
        done = setup_.apply_plan(plan, clients, acting)
        after = setup_.make_plan(settings, clients, worker or None)
        results = diagnose.diagnose(
            settings, after.workers, tasks_client=clients.tasks, run_client=clients.run,
            iam_client=clients.iam, projects_client=clients.projects,
            enqueuers=list(dict.fromkeys([settings.api_sa or "", settings.dashboard_sa or ""])))
    if as_json:
        _print_json({"plan": plan.to_dict(), "applied": [c.to_dict() for c in done],
                     "after": after.to_dict(), "diagnose": [r.to_dict() for r in results]})
    else:
        _render_applied(done, after)
        typer.echo("\nChecking what it touched (enqueuer diagnose):")
        _render_diagnosis(results)
    if after.to_change:
        raise typer.Exit(setup_.CHANGES)
    _exit_for_diagnosis(results)


_MARKS = {"kept": "kept", "create": "CREATE", "update": "UPDATE", "add": "ADD",
          "missing": "MISSING", "unknown": "UNKNOWN"}


def _render_plan(plan: setup_.SetupPlan) -> None:
    typer.echo(f"Setup of {plan.project} for {', '.join(plan.workers)}, acting as "
               f"{plan.principal}.\n")
    for c in plan.changes:
        typer.echo(f"  {_MARKS[c.status]:<8} {c.what}")
        if c.status != "kept":
            if c.detail:
                typer.echo(f"           {c.detail}")
            typer.echo(f"           $ {c.gcloud}")
    counts = plan.counts()
    summary = ", ".join(f"{counts[s]} {'to ' + s if s in ('create', 'update', 'add') else s}"
                        for s in ("create", "update", "add", "missing", "unknown", "kept")
                        if counts.get(s))
    typer.echo(f"\n{summary}.")
    if plan.by_status("missing"):
        typer.echo("MISSING: setup cannot make these; the line under each says where to look.")
    if plan.by_status("unknown"):
        typer.echo("UNKNOWN: Google refused to show these to "
                   f"{plan.principal}; --apply will try, and stop naming the permission.")
    if plan.by_status("create", "update", "add", "unknown"):
        typer.echo("`enqueuer setup --apply` makes these changes.")
    else:
        typer.echo("Nothing to change.")


def _render_applied(done: list[setup_.Change], after: setup_.SetupPlan) -> None:
    typer.echo(f"\nApplied {len(done)} change(s):" if done else "\nNothing was changed.")
    for c in done:
        typer.echo(f"  {_MARKS[c.status]:<8} {c.what}")
    if after.to_change:
        typer.echo("\nStill not as this config needs:")
        for c in after.to_change:
            typer.echo(f"  {_MARKS[c.status]:<8} {c.what}\n           $ {c.gcloud}")


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
from enqueuer_core import cli_history, cli_local  # noqa: E402, F401


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""``enqueuer diagnose`` and ``enqueuer setup``: the platform engineer's commands.

Registered on ``cli.app`` (``cli.py`` imports this module), as ``cli_history`` is.
"""

from __future__ import annotations

from typing import Annotated

import typer

from enqueuer_core import diagnose
from enqueuer_core import setup as setup_
from enqueuer_core.cli import JsonFlag, _acting, _print_json, _reporting, _table, app
from enqueuer_core.config import load_settings
from enqueuer_core.enqueue import Enqueuer

# ``enqueuer diagnose`` exit codes: a check failed, or (with none failing) one could not run.
DIAGNOSE_FAILED, DIAGNOSE_UNKNOWN = 1, 2


@app.command("diagnose")
def diagnose_command(
    worker: Annotated[list[str] | None, typer.Option(
        "--worker", help="Check this worker only (repeat for more; default: all).")] = None,
    probe: Annotated[bool, typer.Option(
        "--probe", help="Also send each worker a real GET with an ID token minted as its "
                        "caller account: proves token, audience and invoker binding "
                        "(operators and admins).")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Check that every worker can be reached, and print the exact fix of what cannot.

    Exit code 0 when no check fails (warnings allowed), 1 when one fails, 2 when none fails
    but some could not be run (an API unreachable or refusing). Settings that would not work
    are reported as failed checks, not refused; variables in the environment win over
    ``--local``, so ``AUD_BRAIN=... enqueuer --local diagnose`` tries a change first.
    With --probe, a last check per worker sends it a GET (never the job's POST) signed as
    Cloud Tasks signs it; minting the token needs roles/iam.serviceAccountOpenIdTokenCreator
    on the caller account for you (exit 11 for a viewer of the access config).
    """
    with _reporting(as_json):
        settings = load_settings(lenient=True)
        acting = _acting(settings, Enqueuer(settings).access) if probe else None
        results = diagnose.diagnose(settings, worker or None, probe=probe, acting=acting)
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

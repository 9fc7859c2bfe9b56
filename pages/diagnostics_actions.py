"""What the Diagnostics page runs: the checks, the probe (operators and admins) and the
fixes ``enqueuer setup`` can make (admins); each through ``enqueuer_core``, which decides who
may and writes the audit line.

The results live in the session: the last run's, with the probe's once probed (a Probe runs
the checks again with it; a Re-run or a Fix runs them without: the door is probed on request
only, each probe being a request on record).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import streamlit as st

from enqueuer_core.access import Acting, Action
from enqueuer_core.config import load_settings
from enqueuer_core.diagnose import CheckResult, diagnose
from enqueuer_core.diagnose.fixes import FIXABLE, FixPlan, apply_fix, fix_for
from enqueuer_core.errors import EnqueuerError
from enqueuer_core.setup import SetupClients
from pages import common, marks

PROBE = "probe"  # the probe's check id (enqueuer_core.probe)
FILTER_KEY = "diagnostics_workers"
RESULTS_KEY = "_diagnostics"
PLANS_KEY = "_diagnostics_fix_plans"  # (worker, check, evidence) -> FixPlan | str (why none)
FIX_OPEN = "_diagnostics_fix_open"  # "worker:check" whose change is shown
CLIENTS_KEY = "_diagnostics_setup_clients"  # setup's clients, built once per run
PROBE_HELP = ("A GET (never the job's POST: no job runs) through each selected worker's "
              "Cloud Run door, with an ID token minted as CALLER_SA for its audience: any "
              "answer but 401 or 403 proves the token, the audience and the invoker binding.")


@dataclass(frozen=True)
class Run:
    results: list[CheckResult]
    at: dt.datetime
    took_s: float
    error: str | None = None


def run_checks() -> Run:
    """Every check for every worker; an exception becomes the run's error, never a crash."""
    started, at = time.monotonic(), dt.datetime.now(dt.UTC)
    try:
        settings = load_settings(lenient=True)
        results = diagnose(settings)
    except EnqueuerError as e:
        return Run([], at, time.monotonic() - started, f"{e.message} ({e.code})")
    except Exception as e:  # any failure is shown as a message, never a traceback
        return Run([], at, time.monotonic() - started, f"{type(e).__name__}: {e}")
    return Run(results, at, time.monotonic() - started)


def _store(run: Run) -> Run:
    st.session_state[RESULTS_KEY] = run
    for key in (PLANS_KEY, FIX_OPEN, CLIENTS_KEY):
        st.session_state.pop(key, None)
    return run


def current_run(rerun: bool) -> Run:
    # The filter's widget state is dropped when another page runs: its absence means the
    # page was just opened, so the checks run then, on "Re-run", and not on other clicks.
    opened = FILTER_KEY not in st.session_state
    if rerun or opened or RESULTS_KEY not in st.session_state:
        with st.spinner("Running the checks…"):
            return _store(run_checks())
    return st.session_state[RESULTS_KEY]


# -- the probe ------------------------------------------------------------------------------


def probe(workers: list[str], acting: Acting) -> list[CheckResult] | None:
    """Run the checks again for ``workers``, with the probe of each one's door, as
    ``acting``; their new results (kept in the run), or None (the error shown)."""
    before: Run = st.session_state[RESULTS_KEY]
    started, at = time.monotonic(), dt.datetime.now(dt.UTC)
    try:
        with st.spinner("Probing each worker's door…"):
            got = diagnose(load_settings(lenient=True), workers, probe=True, acting=acting)
    except EnqueuerError as e:  # Forbidden for a viewer, before any request
        common.show_error(e)
        return None
    order = list(dict.fromkeys([r.worker for r in before.results] + workers))
    results = [r for w in order
               for r in (got if w in workers else before.results) if r.worker == w]
    _store(Run(results, at, time.monotonic() - started))
    return [r for r in got if r.check == PROBE]


def probe_controls(workers: list[str], acting: Acting) -> bool:
    """The Probe button (disabled, saying why, for whoever may not probe); True when it
    probed: the run in the session has the probe's results then."""
    refused = acting.why_not(Action.PROBE)
    left, right = st.columns([1, 5], vertical_alignment="center")
    clicked = left.button("Probe", key="diagnostics_probe", icon=marks.PROBE_ICON,
                          disabled=refused is not None or not workers, help=refused)
    right.caption(f":material/lock: {refused}" if refused else PROBE_HELP)
    if not clicked:
        return False
    got = probe(workers, acting)
    if got is None:
        return False
    proven = [r.worker for r in got if r.status == "pass"]
    others = [f"{r.worker} ({marks.colored(r.status)})" for r in got if r.status != "pass"]
    text = (f"Probed {len(got)} worker(s): "
            + (f"{', '.join(proven)} proven reachable through the door" if proven else
               "none proven reachable")
            + (f"; not proven: {', '.join(others)} — see the `probe` check below."
               if others else "."))
    if others:
        st.warning(text, icon=marks.PROBE_ICON)
    else:
        st.success(text, icon=marks.PROBE_ICON)
    return True


# -- the fixes ------------------------------------------------------------------------------


def _setup_clients() -> SetupClients:
    """Setup's clients (the platform engineer's: on the emulator, EMULATOR_OPERATOR)."""
    if CLIENTS_KEY not in st.session_state:
        st.session_state[CLIENTS_KEY] = SetupClients.build(load_settings(lenient=True))
    return st.session_state[CLIENTS_KEY]


def _plan(r: CheckResult) -> FixPlan | str:
    """The fix ``enqueuer setup`` would make for ``r`` (read once per run), or why none."""
    plans: dict[tuple[str, str, str], FixPlan | str] = st.session_state.setdefault(
        PLANS_KEY, {})
    key = (r.worker, r.check, r.evidence)
    if key not in plans:
        try:
            plan = fix_for(load_settings(lenient=True), r, _setup_clients())
        except EnqueuerError as e:
            plan = e.message
        except Exception as e:  # a plan that cannot be made is no button, never a traceback
            plan = f"{type(e).__name__}: {e}"
        plans[key] = plan if plan is not None else ""
    return plans[key]


def _open(key: str | None) -> None:
    st.session_state[FIX_OPEN] = key


def fix_controls(r: CheckResult, acting: Acting) -> None:
    """For an admin, a "Fix…" button on a failing check setup can repair: it shows the
    change first; "Apply" makes it, then the checks run again. Others see the fix's
    command only (above)."""
    if r.status not in ("fail", "warn") or r.check not in FIXABLE:
        return
    if acting.why_not(Action.SETUP) is not None:
        return
    plan = _plan(r)
    if not isinstance(plan, FixPlan):
        if plan:
            st.caption(f":material/info: `enqueuer setup` cannot plan a fix: {plan}")
        return
    key = f"{r.worker}:{r.check}"
    if st.session_state.get(FIX_OPEN) != key:
        st.button("Fix…", key=f"fix:{key}", icon=marks.FIX_ICON, on_click=_open, args=(key,),
                  help="Show the change `enqueuer setup` would make, before making it.")
        return
    with st.container(border=True, key=f"change-{r.worker}-{r.check}"):
        st.markdown(f"**{marks.FIX_ICON} The change that repairs it**, made through "
                    "`enqueuer setup` as you (recorded in the audit log):")
        for change in plan.plan.changes:
            st.markdown(f"- {change.what}")
            st.code(change.gcloud, language="bash", wrap_lines=True)
        left, right, _ = st.columns([1, 1, 4])
        apply = left.button("Apply", key=f"fix_apply:{key}", type="primary",
                            icon=":material/check:")
        right.button("Cancel", key=f"fix_cancel:{key}", on_click=_open, args=(None,))
        if apply:
            apply_and_recheck(r, plan, acting)


def apply_and_recheck(r: CheckResult, plan: FixPlan, acting: Acting) -> None:
    """Apply the fix as ``acting``; then run the checks (and a probe fixed, the probe)
    again and say whether ``r``'s check passes now. A refusal is an error with its fix."""
    try:
        with st.spinner("Applying the fix…"):
            done = apply_fix(plan, _setup_clients(), acting)
    except EnqueuerError as e:  # SetupRefused, Forbidden: the message carries the fix
        common.show_error(e)
        return
    applied = "; ".join(c.what for c in done) or "nothing was left to change"
    run = _store(run_checks())
    results = run.results
    if r.check == PROBE:
        results = probe([r.worker], acting) or []
    after = next((x for x in results if (x.worker, x.check) == (r.worker, r.check)), None)
    if after is not None and after.status == "pass":
        common.flash(f"Fixed `{r.check}` for {r.worker}: {applied}. The checks ran again: "
                     "it passes now.", "success")
    else:
        now = after.status if after else "not checked"
        common.flash(f"Applied: {applied}. The checks ran again: `{r.check}` for {r.worker} "
                     f"is {now} (see below).", "warning")
    st.rerun()

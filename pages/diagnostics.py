"""Diagnostics: every check of ``enqueuer_core.diagnose``, as a matrix of workers × checks.

Below the matrix, per worker, each check that does not pass with its evidence and its fix.
The checks run when the page is opened and on "Re-run" (not on every widget change: they
call Google's APIs). Settings are read leniently, from the environment as it is now, so that
a broken value is a failed check with its fix rather than a refusal.

Addressed as `/diagnostics?check=ID`: a check of ``diagnose.CHECKS``, or a cause the Queues
page links with (`audience`, `invoker`, `url`, `deadline`), which highlights its columns.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from enqueuer_core.config import load_settings
from enqueuer_core.diagnose import CHECKS, CheckResult, diagnose, worst
from enqueuer_core.errors import EnqueuerError
from pages import common

MARK = {"pass": "✅", "warn": "⚠️", "fail": "❌", "unknown": "❔"}
COLOR = {"pass": "green", "warn": "orange", "fail": "red", "unknown": "gray"}
CELL_STYLE = {"pass": "background-color: #d3f9d8", "warn": "background-color: #fff3bf",
              "fail": "background-color: #ffc9c9", "unknown": "background-color: #e9ecef"}
FOCUS_STYLE = "; font-weight: bold; border: 2px solid #1c7ed6"  # the linked check
# The causes the Queues page names (explain.py) and the checks that confirm each.
CAUSES = {"audience": ("audience", "audience_accepted"), "url": ("url_scheme", "service"),
          "deadline": ("deadline", "deadline_vs_timeout"), "invoker": ("invoker",)}
FILTER_KEY = "diagnostics_workers"
RESULTS_KEY = "_diagnostics"


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


def current_run(rerun: bool) -> Run:
    # The filter's widget state is dropped when another page runs: its absence means the
    # page was just opened, so the checks run then, on "Re-run", and not on other clicks.
    opened = FILTER_KEY not in st.session_state
    if rerun or opened or RESULTS_KEY not in st.session_state:
        with st.spinner("Running the checks…"):
            st.session_state[RESULTS_KEY] = run_checks()
    return st.session_state[RESULTS_KEY]


def focused_checks(param: str | None) -> tuple[str, ...]:
    if not param:
        return ()
    if param in CAUSES:
        return CAUSES[param]
    return (param,) if param in dict(CHECKS) else ()


def _md(text: str) -> str:
    """Text shown as it is inside Markdown (URLs, paths, `$`, `*` and `_` included)."""
    for c in "\\`*_[]<>$#|~":
        text = text.replace(c, "\\" + c)
    return text


# -- the matrix -----------------------------------------------------------------------------


def summary(results: list[CheckResult]) -> None:
    status = worst(results)
    counts = Counter(r.status for r in results)
    parts = " · ".join(f"{MARK[s]} {counts[s]} {s}" for s in MARK if counts[s])
    workers = len({r.worker for r in results})
    st.markdown(f"**Worst: :{COLOR[status]}[{MARK[status]} {status}]** — {len(results)} "
                f"checks over {workers} worker(s): {parts}")


def matrix(results: list[CheckResult], workers: list[str], focus: tuple[str, ...]) -> None:
    by_cell = {(r.worker, r.check): r.status for r in results}
    checks = [c for c, _ in CHECKS if any(r.check == c for r in results)]
    statuses = pd.DataFrame(
        [[by_cell.get((w, c), "unknown") for c in checks] for w in workers],
        index=pd.Index(workers, name="worker"), columns=checks)

    def style(column: pd.Series) -> list[str]:
        # The status's colour; the linked check's column outlined.
        extra = FOCUS_STYLE if column.name in focus else ""
        return [CELL_STYLE[s] + extra for s in column]

    titles = dict(CHECKS)
    shown = statuses.map(MARK.__getitem__)
    st.dataframe(
        shown.style.apply(lambda col: style(statuses[col.name]), axis=0),
        column_config={c: st.column_config.TextColumn(
            ("🔎 " if c in focus else "") + c, help=titles[c], width="small")
            for c in checks},
        key="diagnostics_matrix")
    st.caption(" · ".join(f"{m} {s}" for s, m in MARK.items()) +
               " — hover a column's name for what it checks.")


# -- per worker -----------------------------------------------------------------------------


def result_body(r: CheckResult) -> None:
    st.markdown(f"**Evidence:** {_md(r.evidence)}")
    if r.fix:
        st.markdown("**Fix:**")
        st.code(r.fix, language=None, wrap_lines=True)


def worker_details(worker: str, results: list[CheckResult], focus: tuple[str, ...]) -> None:
    order = {c: i for i, (c, _) in enumerate(CHECKS)}
    mine = sorted((r for r in results if r.worker == worker), key=lambda r: order.get(r.check, 99))
    status = worst(mine)
    st.markdown(f"#### {worker} :{COLOR[status]}-badge[{MARK[status]} {status}]")
    passing = [r for r in mine if r.status == "pass"]
    for r in mine:
        if r.status == "pass":
            continue
        marker = "🔎 " if r.check in focus else ""
        with st.expander(f"{MARK[r.status]} {marker}**{r.title}** · `{r.check}` · "
                         f":{COLOR[r.status]}[{r.status}]",
                         expanded=r.status == "fail" or r.check in focus):
            result_body(r)
    if passing:
        with st.expander(f"✅ {len(passing)} passing: "
                         + ", ".join(r.check for r in passing)):
            for r in passing:
                st.markdown(f"✅ **{r.title}** (`{r.check}`): {_md(r.evidence)}")


def main() -> None:
    # Not common.enqueuer(): settings that cannot work are what this page reports.
    common.through_the_entry()
    st.title("Diagnostics")
    st.caption("Every worker checked against its configuration, its Cloud Run service, IAM "
               "and its queue, from the same Google APIs the enqueuer uses.")
    rerun = st.button("Re-run", key="diagnostics_rerun", icon=":material/refresh:")
    run = current_run(rerun)
    if run.error:
        st.error(f"The checks could not run: {run.error}", icon=":material/error:")
        return
    st.caption(f"Ran at {common.utc(run.at)}, in {run.took_s:.2f} s.")

    everyone = list(dict.fromkeys(r.worker for r in run.results))
    workers = st.multiselect("Workers", everyone, default=everyone, key=FILTER_KEY)
    results = [r for r in run.results if r.worker in workers]

    param = st.query_params.get("check")
    focus = focused_checks(param)
    if param and not focus:
        st.warning(f"No check is called `{param}`: the checks are "
                   f"{', '.join(f'`{c}`' for c, _ in CHECKS)}.")
    elif focus:
        titles = dict(CHECKS)
        bad = [r for r in results if r.check in focus and r.status != "pass"]
        where = ", ".join(f"{r.worker} ({MARK[r.status]} {r.status})" for r in bad)
        st.info(f"Linked check: **{', '.join(titles[c] for c in focus)}** — "
                + (f"not passing for {where}." if bad else "passing for every worker shown."),
                icon=":material/search:")
    if not results:
        st.info("No worker selected.")
        return
    summary(results)
    matrix(results, workers, focus)
    for worker in workers:
        with st.container(border=True):
            worker_details(worker, results, focus)


main()

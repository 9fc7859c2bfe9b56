"""Diagnostics: every check of ``enqueuer_core.diagnose``, as a matrix of workers × checks.

Below the matrix, per worker, each check that does not pass with its evidence and its fix.
The checks run when the page is opened, on "Re-run" and after a Fix (not on every widget
change: they call Google's APIs). Settings are read leniently, from the environment as it is
now, so that a broken value is a failed check with its fix rather than a refusal.

Operators and admins may "Probe" the workers (a real GET through each one's door: the
``probe`` column); an admin gets a "Fix" button on each failing check ``enqueuer setup`` can
repair (``pages/diagnostics_actions.py``).

Addressed as `/diagnostics?check=ID`: a check of ``diagnose.CHECKS``, or a cause the Queues
page links with (``diagnose.links.CAUSES``: `audience`, `invoker`, `url`, `deadline`,
`capacity`), which highlights its columns.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd
import streamlit as st

from enqueuer_core.access import Acting
from enqueuer_core.diagnose import CHECKS, CheckResult, worst
from enqueuer_core.diagnose.links import focused_checks
from pages import common, diagnostics_actions, marks
from pages.diagnostics_actions import FILTER_KEY

FOCUS_STYLE = "; font-weight: bold; border: 2px solid #1c7ed6"  # the linked check


def _md(text: str) -> str:
    """Text shown as it is inside Markdown (URLs, paths, `$`, `*` and `_` included)."""
    for c in "\\`*_[]<>$#|~":
        text = text.replace(c, "\\" + c)
    return text


def _order(check: str) -> int:
    # CHECKS order; a check it does not list (the probe, before it is registered) last.
    return next((i for i, (c, _) in enumerate(CHECKS) if c == check), len(CHECKS))


# -- the matrix -----------------------------------------------------------------------------


def summary(results: list[CheckResult]) -> None:
    status = worst(results)
    counts = Counter(r.status for r in results)
    parts = " · ".join(f"{marks.colored(s, f'{counts[s]} {s}')}"
                       for s in marks.STATUSES if counts[s])
    workers = len({r.worker for r in results})
    st.markdown(f"**Worst: {marks.colored(status)}** — {len(results)} checks over "
                f"{workers} worker(s): {parts}")


def matrix(results: list[CheckResult], workers: list[str], focus: tuple[str, ...]) -> None:
    by_cell = {(r.worker, r.check): r.status for r in results}
    checks = sorted({r.check for r in results}, key=_order)
    statuses = pd.DataFrame(
        [[by_cell.get((w, c), "unknown") for c in checks] for w in workers],
        index=pd.Index(workers, name="worker"), columns=checks)

    def style(column: pd.Series) -> list[str]:
        # The status's colour; the linked check's column outlined.
        extra = FOCUS_STYLE if column.name in focus else ""
        return [marks.CELL_STYLE[s] + extra for s in column]

    titles = dict(CHECKS) | {r.check: r.title for r in results}
    shown = statuses.map(marks.cell)
    st.dataframe(
        shown.style.apply(lambda col: style(statuses[col.name]), axis=0),
        column_config={c: st.column_config.TextColumn(
            (marks.FOCUS_HEADER if c in focus else "") + c, help=titles[c], width="small")
            for c in checks},
        key="diagnostics_matrix")
    st.caption(" · ".join(marks.CELL[s] for s in marks.STATUSES) +
               " — hover a column's name for what it checks.")


# -- per worker -----------------------------------------------------------------------------


def result_body(r: CheckResult) -> None:
    st.markdown(f"**Evidence:** {_md(r.evidence)}")
    if r.fix:
        st.markdown("**Fix:**")
        st.code(r.fix, language=None, wrap_lines=True)


def worker_details(worker: str, results: list[CheckResult], focus: tuple[str, ...],
                   acting: Acting) -> None:
    mine = sorted((r for r in results if r.worker == worker), key=lambda r: _order(r.check))
    st.markdown(f"#### {worker} {marks.badge(worst(mine))}")
    passing = [r for r in mine if r.status == "pass"]
    for r in mine:
        if r.status == "pass":
            continue
        # The mark in the label itself: an expander's own icon gives way to its chevron
        # while it is open or hovered.
        marker = f"{marks.FOCUS_ICON} " if r.check in focus else ""
        with st.expander(f"{marks.icon(r.status)} {marker}**{r.title}** · "
                         f"`{r.check}` · :{marks.COLOR[r.status]}[{r.status}]",
                         expanded=r.status == "fail" or r.check in focus):
            result_body(r)
            diagnostics_actions.fix_controls(r, acting)
    if passing:
        with st.expander(f"{marks.icon('pass')} {len(passing)} passing: "
                         + ", ".join(r.check for r in passing)):
            for r in passing:
                st.markdown(f"{marks.icon('pass')} **{r.title}** "
                            f"(`{r.check}`): {_md(r.evidence)}")


def linked(param: str | None, focus: tuple[str, ...], results: list[CheckResult]) -> None:
    """Say which checks a link points at, and where they do not pass."""
    if param and not focus:
        st.warning(f"No check is called `{param}`: the checks are "
                   f"{', '.join(f'`{c}`' for c, _ in CHECKS)}.")
    elif focus:
        titles = dict(CHECKS)
        bad = [r for r in results if r.check in focus and r.status != "pass"]
        where = ", ".join(f"{r.worker} ({marks.colored(r.status)})" for r in bad)
        st.info(f"Linked check: **{', '.join(titles.get(c, c) for c in focus)}** — "
                + (f"not passing for {where}." if bad else "passing for every worker shown."),
                icon=marks.FOCUS_ICON)


def main() -> None:
    # Not common.enqueuer(): settings that cannot work are what this page reports.
    common.through_the_entry()
    _, policy, _ = common.gate_config()
    acting = common.acting(policy)
    st.title("Diagnostics")
    st.caption("Every worker checked against its configuration, its Cloud Run service, IAM "
               "and its queue, from the same Google APIs the enqueuer uses.")
    common.show_flashes()
    rerun = st.button("Re-run", key="diagnostics_rerun", icon=":material/refresh:")
    run = diagnostics_actions.current_run(rerun)
    if run.error:
        st.error(f"The checks could not run: {run.error}", icon=":material/error:")
        return
    st.caption(f"Ran at {common.utc(run.at)}, in {run.took_s:.2f} s.")

    everyone = list(dict.fromkeys(r.worker for r in run.results))
    workers = st.multiselect("Workers", everyone, default=everyone, key=FILTER_KEY)
    if diagnostics_actions.probe_controls(workers, acting):
        run = st.session_state[diagnostics_actions.RESULTS_KEY]
    results = [r for r in run.results if r.worker in workers]

    param = st.query_params.get("check")
    focus = focused_checks(param)
    linked(param, focus, results)
    if not results:
        st.info("No worker selected.")
        return
    summary(results)
    matrix(results, workers, focus)
    for worker in workers:
        with st.container(border=True, key=f"worker-{worker}"):  # .st-key-worker-NAME
            worker_details(worker, results, focus, acting)


main()

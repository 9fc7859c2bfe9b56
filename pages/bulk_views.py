"""The Queues page's bulk actions and payload search, on one queue.

**Bulk actions**: a filter (failing, a text in the task's name, key or payload, a payload
field), the count of the tasks it matches first, then "Run all N" / "Delete all N" with a
confirmation, a progress bar while it runs (paced to Cloud Tasks' quotas), and the tasks
that failed listed after. A role that may not run or delete sees the buttons disabled,
saying why; ``enqueuer_core.bulk`` decides anyway, and writes one audit line.

**Search by payload field**: ``input_doc_id=abc`` or a nested path, a scan of the queue in
the FULL view with a progress bar and a cap, matches shown as each page comes; a refusal
names the permission it needs (``cloudtasks.tasks.fullView``) and the role that has it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Literal

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from enqueuer_core.access import Action
from enqueuer_core.bulk import (
    BulkProgress,
    BulkResult,
    Selection,
    TaskFilter,
    delete_all,
    expected_seconds,
    run_all,
    select_tasks,
)
from enqueuer_core.errors import EnqueuerError
from enqueuer_core.payload_search import (
    SEARCH_CAP,
    ScanProgress,
    SearchHit,
    parse_expression,
    search_payloads,
)
from pages import common

_SELECTION, _PENDING, _RESULT, _HITS = ("bulk_selection", "bulk_pending", "bulk_result",
                                        "search_hits")
VERBS = {"run": ("Run", "Ran", ":material/play_circle:", Action.RUN),
         "delete": ("Delete", "Deleted", ":material/delete_sweep:", Action.DELETE)}


def panel(queue_path: str) -> None:
    """Both tools, each in its tab."""
    bulk_tab, search_tab = st.tabs([":material/checklist: Bulk actions",
                                    ":material/manage_search: Search by payload field"])
    with bulk_tab, common.shown_errors():
        bulk_actions(queue_path)
    with search_tab, common.shown_errors():
        payload_search(queue_path)


# -- bulk actions ---------------------------------------------------------------------------


def _scan_bar(bar: DeltaGenerator, what: str) -> Callable[[ScanProgress], None]:
    def report(p: ScanProgress) -> None:
        # How many pages a queue has is unknown until the last: each page closes half the gap.
        bar.progress(1.0 if p.done else 1 - 0.5 ** p.pages,
                     text=f"{what}: {p.pages} page(s) read, {p.seen} task(s) seen, "
                          f"{p.matched} match(es)")
    return report


def _token(selection: Selection) -> str:
    """Names the selection: a confirmation ticked for one never confirms another."""
    return hashlib.sha1("\n".join(selection.names).encode()).hexdigest()[:12]


def _duration(seconds: float) -> str:
    return f"about {seconds / 60:.0f} min" if seconds >= 90 else f"about {seconds:.0f} s"


def bulk_actions(queue_path: str) -> None:
    queue_id = queue_path.rsplit("/", 1)[-1]
    c1, c2, c3 = st.columns([1, 2, 2])
    failing = c1.checkbox("Failing", key="bulk_failing",
                          help="Tasks whose last attempt got an error.")
    text = c2.text_input("Text in the name, key or payload", key="bulk_text",
                         placeholder="report-2026")
    field = c3.text_input("Payload field", key="bulk_field", placeholder="input_doc_id=abc",
                          help="FIELD=VALUE; a nested field is a.b.c=value.")
    task_filter = TaskFilter(failing=failing, text=text, field=field)
    if task_filter.reads_payloads:
        st.caption("Filters on payloads read the tasks in the FULL view, which needs "
                   "`cloudtasks.tasks.fullView` on the queue.")

    result: BulkResult | None = st.session_state.pop(_RESULT, None)
    if result is not None and result.queue == queue_path:
        show_result(result)

    if st.button("Count the matching tasks", key="bulk_count", icon=":material/calculate:"):
        st.session_state.pop(_PENDING, None)
        bar = st.progress(0.0, text="Counting…")
        st.session_state[_SELECTION] = select_tasks(
            common.enqueuer().client, queue_path, task_filter,
            progress=_scan_bar(bar, "Counting"))
        bar.empty()
    selection: Selection | None = st.session_state.get(_SELECTION)
    if selection is None or selection.queue != queue_path or selection.filter != task_filter:
        st.caption("Count the tasks the filter matches first; then run or delete them all.")
        return
    more = (f" (the first {selection.scanned} tasks examined: the scan stops there, more "
            "may match)" if selection.capped else f" of {selection.scanned}")
    st.markdown(f"**{selection.count}** task(s) match *{task_filter.describe()}*{more}.")

    acting = common.acting()
    cols = st.columns([1, 1, 3])
    reasons = []
    for col, kind in zip(cols, ("run", "delete"), strict=False):
        verb, _, icon, action = VERBS[kind]
        refused = acting.why_not(action)
        reasons.append(refused)
        if col.button(f"{verb} all {selection.count}", key=f"bulk_{kind}", icon=icon,
                      disabled=refused is not None or selection.count == 0,
                      help=refused, width="stretch"):
            st.session_state[_PENDING] = (kind, _token(selection))
    refusal = next((r for r in reasons if r), None)
    if refusal:
        st.caption(f":material/lock: {refusal}")
    pending = st.session_state.get(_PENDING)
    if pending and pending[1] == _token(selection):
        confirm(pending[0], selection, queue_id)


def confirm(kind: Literal["run", "delete"], selection: Selection, queue_id: str) -> None:
    """The confirmation, then the action with its progress bar."""
    verb, _, _, _ = VERBS[kind]
    n = selection.count
    seconds = expected_seconds(kind, n)
    pace = (f" Cloud Tasks takes 60 RunTask calls a minute: {_duration(seconds)}."
            if kind == "run" and seconds else "")
    what = ("Each is dispatched now, whatever its schedule or the queue's state." if kind
            == "run" else "Their idempotency keys stay taken for about an hour.")
    with st.container(border=True):
        st.warning(f"**{verb} all {n} task(s) of `{queue_id}`** matching "
                   f"*{selection.filter.describe()}*? {what}{pace}")
        sure = st.checkbox(f"I understand: {kind} {n} task(s) of {queue_id}",
                           key=f"bulk_confirm:{kind}:{_token(selection)}")
        c1, c2, _ = st.columns([1, 1, 4])
        go = c1.button(f"Confirm: {kind} {n}", key="bulk_do", type="primary")
        if c2.button("Cancel", key="bulk_cancel"):
            st.session_state.pop(_PENDING, None)
            st.rerun()
        if not go:
            return
        if not sure:
            st.error(f"Nothing done: tick “I understand” to {kind} the {n} task(s).")
            return
        execute(kind, selection)


def execute(kind: Literal["run", "delete"], selection: Selection) -> None:
    """Run or delete the selection as the visitor, with a progress bar; then the page
    again, with the outcome."""
    verb, _, _, _ = VERBS[kind]
    bar = st.progress(0.0, text=f"{verb}: 0 of {selection.count}")

    def report(p: BulkProgress) -> None:
        bar.progress(p.handled / p.total, text=_progress_text(verb, p))

    act = run_all if kind == "run" else delete_all
    try:
        result = act(common.enqueuer().client, selection, common.acting(), progress=report)
    except EnqueuerError as e:  # refused (nothing done), or stopped: why
        bar.empty()
        common.after_action()
        common.show_error(e)
        return
    common.after_action()
    st.session_state.pop(_PENDING, None)
    st.session_state.pop(_SELECTION, None)  # the count is out of date now
    st.session_state[_RESULT] = result
    st.rerun()  # the whole page again: the table without the tasks that ran or went


def _progress_text(verb: str, p: BulkProgress) -> str:
    return f"{verb}: {p.handled} of {p.total}" + (f" ({p.failed} failed)" if p.failed else "")


def show_result(result: BulkResult) -> None:
    """The finished bar, what was done, and each task that failed with why."""
    verb, done, _, _ = VERBS[result.action]
    failed = len(result.failures)
    st.progress(1.0, text=_progress_text(verb, BulkProgress(result.total, result.total,
                                                            failed)))
    message = f"{done} {len(result.done)} of {result.total} task(s)."
    if not failed:
        st.success(message, icon=":material/check_circle:")
        return
    st.warning(f"{message} {failed} could not be {'run' if result.action == 'run' else 'deleted'}"
               " (listed below); the others were.", icon=":material/warning:")
    st.dataframe(pd.DataFrame([{"task": name.rsplit("/", 1)[-1], "why": why}
                               for name, why in result.failures]),
                 hide_index=True, width="stretch", key="bulk_failures")


# -- search by payload field ----------------------------------------------------------------


def _hits_frame(hits: list[SearchHit], queue_id: str) -> pd.DataFrame:
    return pd.DataFrame([{
        "task": h.task.task_id, "value": h.value if isinstance(h.value, str) else repr(h.value),
        "idempotency key": h.task.idempotency_key, "created": h.task.create_time,
        "last code": h.task.last_response_code,
        "open": f"/queues?queue={queue_id}&task={h.task.name}"} for h in hits],
        columns=["task", "value", "idempotency key", "created", "last code", "open"])


def _show_hits(slot: DeltaGenerator, hits: list[SearchHit], queue_id: str) -> None:
    slot.dataframe(
        _hits_frame(hits, queue_id), hide_index=True, width="stretch",
        column_config={"open": st.column_config.LinkColumn("open", display_text="open"),
                       "created": st.column_config.DatetimeColumn(
                           "created (UTC)", format="YYYY-MM-DD HH:mm:ss")})


def payload_search(queue_path: str) -> None:
    queue_id = queue_path.rsplit("/", 1)[-1]
    c1, c2, c3 = st.columns([3, 1, 1], vertical_alignment="bottom")
    expression = c1.text_input("Payload field", key="search_expr",
                               placeholder="input_doc_id=abc  ·  options.language=es",
                               help="FIELD=VALUE: the tasks whose payload has that value "
                                    "there. A nested field is a.b.c; a list item, items.0.")
    cap = c2.number_input("Read at most", min_value=1, max_value=100_000, value=SEARCH_CAP,
                          step=1000, key="search_cap", help="Tasks read, at most.")
    go = c3.button("Search", key="search_go", icon=":material/search:", width="stretch")
    st.caption("Reads the queue's tasks with their payloads (the FULL view, which needs "
               "`cloudtasks.tasks.fullView`), 1000 a page.")
    if go:
        search(queue_path, expression, int(cap))
        return
    found = st.session_state.get(_HITS)
    if found and found[0] == queue_path:
        _, expr, hits, summary = found
        st.markdown(f"`{expr}`: {summary}")
        _show_hits(st.empty(), hits, queue_id)


def search(queue_path: str, expression: str, cap: int) -> None:
    """Scan the queue, showing matches as each page comes."""
    st.session_state.pop(_HITS, None)
    match = parse_expression(expression)  # InvalidRequest: shown, nothing read
    queue_id = queue_path.rsplit("/", 1)[-1]
    bar = st.progress(0.0, text="Searching…")
    heading, table = st.empty(), st.empty()
    hits: list[SearchHit] = []
    summary = ""
    for page in search_payloads(common.enqueuer().client, queue_path, match, cap=cap):
        p = page.progress
        hits += page.hits
        bar.progress(1.0 if p.done else min(0.95, p.seen / cap),
                     text=f"{p.pages} page(s) read, {p.seen} task(s) seen, "
                          f"{p.matched} match(es)")
        summary = (f"**{p.matched}** match(es) in {p.seen} task(s)"
                   + (f"; stopped at the cap of {cap}: tasks past it were not read"
                      if p.capped else "") + ".")
        heading.markdown(f"`{match.expression}`: {summary}")
        if page.hits:
            _show_hits(table, hits, queue_id)
    if not hits:
        table.info("No task's payload has that value.", icon=":material/search_off:")
    st.session_state[_HITS] = (queue_path, match.expression, hits, summary)

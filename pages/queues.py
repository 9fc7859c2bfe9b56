"""Queues: one queue's state and stats, its tasks a page at a time, what went wrong with
them, and the operator's actions (pause, resume, purge; run now, delete).

Addressed as `/queues?queue=QUEUE_ID&task=FULL_TASK_NAME` (both optional): the Enqueue
page links here with the task it created.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Callable

import pandas as pd
import streamlit as st

from enqueuer_core import actions
from enqueuer_core.access import Acting, Action
from enqueuer_core.config import Settings
from enqueuer_core.errors import EnqueuerError, Forbidden, TaskNotFound
from enqueuer_core.explain import explain_failure
from enqueuer_core.inspect import (
    PAGE_SIZE,
    QueueSnapshot,
    TaskSnapshot,
    filter_tasks,
    resolve_queue,
)
from enqueuer_core.workers import Registry, WorkerSpec
from pages import common

COUNT_CAP = PAGE_SIZE  # tasks counted for the header: one ListTasks page at most
PAGE_SIZES = [25, 50, 100, 200, 500]
REFRESH_S = 5
DETAILS_SHOWN = 5  # selected tasks shown in full; actions apply to all selected
BUCKETS_S = [10, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400]
QUEUE_ACTIONS: dict[str, tuple[str, Action, Callable[..., QueueSnapshot]]] = {
    "pause": ("Tasks stay in the queue but none is dispatched until it is resumed.",
              Action.PAUSE, actions.pause_queue),
    "resume": ("Dispatching starts again, overdue tasks first.", Action.RESUME,
               actions.resume_queue),
    "purge": ("Every task of the queue is deleted, now. Their idempotency keys stay taken "
              "for a while: enqueuing them again is refused as a duplicate.",
              Action.PURGE, actions.purge_queue),
}


# -- which queue ----------------------------------------------------------------------------


def _on_queue_change() -> None:
    st.query_params["queue"] = st.session_state["queue"].rsplit("/", 1)[-1]
    st.query_params.pop("task", None)


def pick_queue(queues: dict[str, list[str]], settings: Settings, registry: Registry) -> str:
    """The full path of the queue shown: the `queue` query parameter, else the picker's."""
    options = list(queues)
    param = st.query_params.get("queue")
    if param:
        path = resolve_queue(param, settings, registry)
        if path not in options:
            options.append(path)
        if st.session_state.get("_queue_param") != param:  # a link was followed
            st.session_state["_queue_param"] = param
            st.session_state["queue"] = path
    if st.session_state.get("queue") not in options:
        st.session_state["queue"] = options[0]

    def label(path: str) -> str:
        workers = queues.get(path)
        return path.rsplit("/", 1)[-1] + (f"  ·  {', '.join(workers)}" if workers else "")

    return st.selectbox("Queue", options, key="queue", format_func=label,
                        on_change=_on_queue_change)


# -- the queue ------------------------------------------------------------------------------


def queue_header(queue: QueueSnapshot) -> None:
    color = {"RUNNING": "green", "PAUSED": "orange"}.get(queue.state, "red")
    st.markdown(f"### `{queue.queue_id}` :{color}-badge[{queue.state}]")
    if queue.error:
        st.error(queue.error)
        return
    attempts = "unlimited" if queue.max_attempts in (-1, None) else str(queue.max_attempts)
    cols = st.columns(5)
    cols[0].metric("tasks", queue.tasks_count_text,
                   help=f"Counted up to {COUNT_CAP}: a larger queue reads {COUNT_CAP}+.")
    cols[1].metric("max dispatches / s", f"{queue.rate:g}" if queue.rate else "-")
    cols[2].metric("max concurrent", queue.max_concurrent or "-")
    cols[3].metric("max attempts", attempts)
    cols[4].metric("retry backoff", f"{queue.min_backoff_s:g}–{queue.max_backoff_s:g} s"
                   if queue.min_backoff_s is not None and queue.max_backoff_s is not None
                   else "-")


def queue_actions(queue: QueueSnapshot) -> None:
    """Pause / resume / purge: each asks for a confirmation before it does anything.

    A button the visitor's role cannot use is disabled, saying why; the core decides anyway.
    """
    acting = common.acting()
    c1, c2, c3, _ = st.columns([1, 1, 1, 3])
    reasons = []
    for col, action, icon, useless in (
            (c1, "pause", ":material/pause:", queue.state == "PAUSED"),
            (c2, "resume", ":material/play_arrow:", queue.state == "RUNNING"),
            (c3, "purge", ":material/delete_sweep:", False)):
        refused = acting.why_not(QUEUE_ACTIONS[action][1])
        reasons.append(refused)
        if col.button(action.capitalize(), key=f"queue_{action}", icon=icon, width="stretch",
                      disabled=useless or refused is not None, help=refused):
            st.session_state["pending_queue_action"] = (action, queue.name)
    if all(reasons):  # all three need the same role: one reason says it
        st.caption(f":material/lock: {reasons[0]}")
    pending = st.session_state.get("pending_queue_action")
    if not pending or pending[1] != queue.name:
        return
    action, _ = pending
    what = QUEUE_ACTIONS[action][0]
    with st.container(border=True):
        st.warning(f"**{action.capitalize()} `{queue.queue_id}`?** {what}")
        # One confirmation per action: a tick given for "pause" never confirms "purge".
        sure = st.checkbox(f"I understand: {action} the queue {queue.queue_id}",
                           key=f"confirm_queue_action:{action}")
        c1, c2, _ = st.columns([1, 1, 4])
        confirmed = c1.button(f"Confirm {action}", key="do_queue_action", type="primary")
        if c2.button("Cancel", key="cancel_queue_action"):
            st.session_state.pop("pending_queue_action", None)
            st.rerun()
        if not confirmed:
            return
        if not sure:
            st.error(f"Nothing done: tick “I understand” to {action} the queue.")
            return
        queue_action(action, queue, acting)


def queue_action(action: str, queue: QueueSnapshot, acting: Acting) -> None:
    """Pause, resume or purge the queue as ``acting``; a refusal is shown, nothing changed."""
    with common.shown_errors():
        after = QUEUE_ACTIONS[action][2](common.enqueuer().client, queue.name, acting)
        st.session_state.pop("pending_queue_action", None)
        common.after_action()
        common.flash(f"{action.capitalize()}d queue {queue.queue_id}: now {after.state}, "
                     f"{after.tasks_count_text} task(s).")
        st.rerun()


# -- its tasks ------------------------------------------------------------------------------


def _page_state(queue_path: str, size: int) -> list[str | None]:
    """The page tokens that led to the page shown: [None] is the first page."""
    key = f"tokens:{queue_path}:{size}"
    return st.session_state.setdefault(key, [None])


def _go(queue_path: str, size: int, token: str | None) -> None:
    stack = _page_state(queue_path, size)
    if token is None:
        if len(stack) > 1:
            stack.pop()
    else:
        stack.append(token)


def tasks_table(tasks: list[TaskSnapshot], table_key: str) -> list[str]:
    """The tasks in a table; the names of those the operator selected.

    Selections are rows of the table *as it was drawn* when the operator clicked: the rows
    are turned into names with the previous run's list, so a refresh that moved rows does
    not move the selection onto other tasks.
    """
    frame = pd.DataFrame([{
        "task": t.task_id, "idempotency key": t.idempotency_key,
        "created": t.create_time, "scheduled": t.schedule_time,
        "dispatches": t.dispatch_count, "responses": t.response_count,
        "last code": t.last_response_code, "last message": t.last_response_message,
        "last attempt": t.last_attempt_time} for t in tasks],
        columns=["task", "idempotency key", "created", "scheduled", "dispatches",
                 "responses", "last code", "last message", "last attempt"])
    when = st.column_config.DatetimeColumn
    shown_before = st.session_state.get(f"shown:{table_key}", [])
    event = st.dataframe(
        frame, key=table_key, on_select="rerun", selection_mode="multi-row",
        hide_index=True, width="stretch",
        column_config={"task": st.column_config.TextColumn("task", width="medium"),
                       "created": when("created (UTC)", format="YYYY-MM-DD HH:mm:ss"),
                       "scheduled": when("scheduled (UTC)", format="YYYY-MM-DD HH:mm:ss"),
                       "last attempt": when("last attempt (UTC)",
                                            format="YYYY-MM-DD HH:mm:ss")},
    )
    rows = list(event.selection.rows)  # type: ignore[attr-defined]
    if rows != st.session_state.get(f"rows:{table_key}"):
        st.session_state[f"rows:{table_key}"] = rows
        st.session_state[f"selected:{table_key}"] = [
            shown_before[i] for i in rows if i < len(shown_before)]
    st.session_state[f"shown:{table_key}"] = [t.name for t in tasks]
    return list(st.session_state.get(f"selected:{table_key}", []))


def bar_chart(counts: Counter[str], x_title: str) -> None:
    """Tasks per category, in the categories' order. A Vega-Lite spec written out: Altair
    (behind st.bar_chart) costs more to build the spec than the page's ListTasks call."""
    frame = pd.DataFrame({"bucket": list(counts), "tasks": list(counts.values())})
    st.vega_lite_chart(frame, {
        "mark": {"type": "bar", "tooltip": True},
        "encoding": {
            "x": {"field": "bucket", "type": "nominal", "sort": None, "title": x_title,
                  "axis": {"labelAngle": -45}},
            "y": {"field": "tasks", "type": "quantitative", "title": "tasks",
                  "axis": {"tickMinStep": 1}},
        },
    }, height=220, width="stretch")


def charts(tasks: list[TaskSnapshot]) -> None:
    if not tasks:
        return
    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**By last response**")
        codes = Counter(t.last_response_code or "no attempt yet" for t in tasks)
        bar_chart(Counter(dict(sorted(codes.items()))), "last response")
    times = [t.schedule_time for t in tasks if t.schedule_time]
    if not times:
        return
    with c2:
        span = (max(times) - min(times)).total_seconds()
        width = next((b for b in BUCKETS_S if span / b <= 30), BUCKETS_S[-1])
        st.markdown(f"**By next attempt** (UTC, buckets of {_span(width)})")
        buckets = Counter(
            dt.datetime.fromtimestamp(int(t.timestamp()) // width * width, dt.UTC)
            .strftime("%m-%d %H:%M:%S") for t in sorted(times))
        bar_chart(buckets, "next attempt")


def _span(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def worker_for(task: TaskSnapshot, workers: list[WorkerSpec]) -> WorkerSpec | None:
    return next((w for w in workers if w.url == task.url), workers[0] if workers else None)


def task_details(names: list[str], workers: list[WorkerSpec]) -> None:
    caller = common.enqueuer().settings.caller_sa
    for name in names[:DETAILS_SHOWN]:
        task_id = name.rsplit("/", 1)[-1]
        with st.expander(f"Task `{task_id}`", expanded=len(names) == 1,
                         icon=":material/description:"):
            try:
                detail = common.cached_task_detail(name)
            except TaskNotFound:
                st.info("This task is no longer in the queue: it ran successfully, used up "
                        "its attempts, or was deleted.", icon=":material/task_alt:")
                continue
            except EnqueuerError as e:
                common.show_error(e)
                continue
            t = detail.snapshot
            explanation = explain_failure(t.last_response_code, t.last_response_message,
                                          worker_for(t, workers), caller)
            if explanation:
                st.error(f"**{explanation.headline}**\n\n{explanation.detail}\n\n"
                         f"**Fix:** {explanation.fix}", icon=":material/troubleshoot:")
                common.page_link(common.DIAGNOSTICS, "Check it on the Diagnostics page",
                                 ":material/stethoscope:",
                                 query_params={"check": explanation.check}
                                 if explanation.check else None)
            left, right = st.columns(2)
            with left:
                st.markdown(f"**Name** `{t.name}`")
                st.markdown(f"**Idempotency key** `{t.idempotency_key or '-'}`  \n"
                            f"**URL** `{t.url or '-'}`")
                st.markdown("**Payload**")
                if isinstance(detail.payload, dict | list):
                    st.json(detail.payload)
                else:
                    st.code(str(detail.payload), language=None)
                st.markdown("**Headers**")
                st.json(detail.headers, expanded=False)
            with right:
                last = detail.last_attempt
                st.markdown(
                    f"**Created** {common.utc(t.create_time)}  \n"
                    f"**Scheduled / next attempt** {common.utc(t.schedule_time)}  \n"
                    f"**Dispatches** {t.dispatch_count} · **responses** {t.response_count}  \n"
                    f"**First attempt** {common.utc(detail.first_attempt_time)}  \n"
                    f"**Last attempt** dispatched {common.utc(last.get('dispatch_time'))}, "
                    f"answered {common.utc(last.get('response_time'))}  \n"
                    f"**Last response** `{last.get('code') or '-'}` "
                    f"{last.get('message') or ''}")
    if len(names) > DETAILS_SHOWN:
        st.caption(f"…and {len(names) - DETAILS_SHOWN} more selected (the actions below apply "
                   "to all of them).")


def task_actions(names: list[str], queue_id: str) -> None:
    """Run now / delete the selected tasks; disabled, saying why, for a role that may not."""
    acting = common.acting()
    no_run, no_delete = acting.why_not(Action.RUN), acting.why_not(Action.DELETE)
    n = len(names)
    c1, c2, c3 = st.columns([1, 2, 1])
    if c1.button(f"Run now ({n})", key="run_now", icon=":material/play_circle:",
                 disabled=no_run is not None,
                 help=no_run or "Dispatch now, whatever the schedule, backoff or queue state."):
        run_now(names, acting)
    # The confirmation is for these tasks: another selection needs another tick.
    chosen = hashlib.sha1("\n".join(names).encode()).hexdigest()[:12]
    sure = c2.checkbox(f"I understand: delete {n} task(s) of {queue_id}",
                       key=f"confirm_delete:{chosen}:{st.session_state.get('actions', 0)}",
                       disabled=no_delete is not None)
    if no_run or no_delete:
        st.caption(f":material/lock: {no_run or no_delete}")
    if c3.button(f"Delete ({n})", key="delete", icon=":material/delete:",
                 disabled=no_delete is not None, help=no_delete):
        if not sure:
            st.error("Nothing deleted: tick “I understand” first.")
            return
        delete(names, acting)


def run_now(names: list[str], acting: Acting) -> None:
    """Dispatch the tasks now as ``acting``; a refusal is shown, nothing dispatched."""
    ran, failed = [], []
    for name in names:
        try:
            actions.run_task(common.enqueuer().client, name, acting)
            ran.append(name)
        except Forbidden as e:  # the same answer for every task: stop at the first
            common.show_error(e)
            return
        except EnqueuerError as e:
            failed.append(e.message)
    _done(f"Dispatched {len(ran)} task(s) now." if ran else None, failed)


def delete(names: list[str], acting: Acting) -> None:
    """Delete the tasks as ``acting``; a refusal is shown, nothing deleted."""
    try:
        result = actions.delete_tasks(common.enqueuer().client, names, acting)
    except EnqueuerError as e:  # Forbidden: refused before any task was touched
        common.show_error(e)
        return
    if st.query_params.get("task") in result:
        st.query_params.pop("task", None)
    _done(f"Deleted {sum(e is None for e in result.values())} task(s).",
          [e for e in result.values() if e])


def _done(message: str | None, failures: list[str]) -> None:
    common.after_action()
    # A new table key: the selection (rows of the old table) and the confirmation reset.
    st.session_state["actions"] = st.session_state.get("actions", 0) + 1
    if message:
        common.flash(message)
    for failure in failures:
        common.flash(failure, "error")
    st.rerun()


def tasks_section(queue_path: str, workers: list[WorkerSpec]) -> None:
    # Its own error display: as a fragment it also runs alone (auto-refresh, its widgets).
    with common.shown_errors():
        _tasks_section(queue_path, workers)


def _tasks_section(queue_path: str, workers: list[WorkerSpec]) -> None:
    queue_id = queue_path.rsplit("/", 1)[-1]
    f1, f2, f3, f4 = st.columns([1, 1, 2, 1])
    failing = f1.checkbox("Failing only", key="filter_failing",
                          help="Tasks whose last attempt got an error.")
    future = f2.checkbox("Scheduled in the future", key="filter_future")
    text = f3.text_input("Search task name or key", key="filter_text",
                         label_visibility="collapsed", placeholder="Search task name or key")
    size = f4.selectbox("Page size", PAGE_SIZES, index=1, key="page_size",
                        label_visibility="collapsed", format_func=lambda n: f"{n} per page")
    stack = _page_state(queue_path, size)
    page = common.cached_task_page(queue_path, stack[-1], size)
    now = dt.datetime.now(dt.UTC)
    tasks = filter_tasks(page.tasks, failing=failing, future=future, text=text, now=now)

    p1, p2, p3 = st.columns([1, 1, 4])
    p1.button("Previous", key="prev_page", icon=":material/chevron_left:",
              disabled=len(stack) == 1, on_click=_go, args=(queue_path, size, None))
    p2.button("Next", key="next_page", icon=":material/chevron_right:",
              disabled=page.next_page_token is None,
              on_click=_go, args=(queue_path, size, page.next_page_token))
    filtered = len(tasks) != len(page.tasks)
    p3.caption(f"Page {len(stack)}: {len(page.tasks)} task(s)"
               + (f", {len(tasks)} match the filters (applied to this page)" if filtered
                  else "") + (" · more on the next pages" if page.next_page_token else "")
               + f" · read {common.utc(now)}")

    table_key = (f"table:{queue_path}:{size}:{len(stack)}:{failing}:{future}:{text}:"
                 f"{st.session_state.get('actions', 0)}")
    selected = tasks_table(tasks, table_key)
    linked = st.query_params.get("task")
    if not selected and linked and linked.startswith(queue_path + "/tasks/"):
        selected = [linked]
        st.caption("The task from the link is shown below; select rows to see others.")
    charts(tasks)
    if selected:
        task_details(selected, workers)
        task_actions(selected, queue_id)
    else:
        st.caption("Select tasks in the table to see their payload, attempts and the likely "
                   "cause of a failure, and to run or delete them.")


def main() -> None:
    enqueuer = common.enqueuer()
    settings, registry = enqueuer.settings, enqueuer.registry
    st.title("Queues")
    common.show_flashes()
    queues: dict[str, list[str]] = {}
    for worker in registry:
        queues.setdefault(settings.queue_path(worker.queue), []).append(worker.name)
    path = pick_queue(queues, settings, registry)
    workers = [w for w in registry if settings.queue_path(w.queue) == path]

    with common.shown_errors():
        queue = common.cached_queue(path, COUNT_CAP)
        queue_header(queue)
        if queue.state not in ("RUNNING", "PAUSED", "DISABLED"):
            return
        queue_actions(queue)

        st.divider()
        head, toggle = st.columns([4, 1])
        head.subheader("Tasks")
        auto = toggle.toggle(f"Auto-refresh ({REFRESH_S} s)", key="auto_refresh")
        if auto:
            common.fragment(tasks_section, run_every=REFRESH_S)(path, workers)
        else:
            tasks_section(path, workers)


if __name__ == "__main__":  # as st.navigation runs a page; tests import its actions
    main()

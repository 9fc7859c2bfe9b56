"""Queues: one queue's state and stats, its tasks a page at a time, what went wrong with
them, and the operator's actions (pause, resume, purge; run now, delete).

The page itself is here (which queue, its header and actions, the tasks section); the task
table, the details of a task and the actions on tasks are in ``pages/task_views.py``.

Addressed as `/queues?queue=QUEUE_ID&task=FULL_TASK_NAME` (both optional): the Enqueue
page links here with the task it created.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import streamlit as st

from enqueuer_core import actions
from enqueuer_core.access import Acting, Action
from enqueuer_core.inspect import PAGE_SIZE, QueueSnapshot, filter_tasks
from enqueuer_core.workers import WorkerSpec
from pages import bulk_views, common
from pages.task_views import charts, delete, run_now, task_actions, task_details, tasks_table

# The task views' actions, where the page's callers (and tests) reach them.
__all__ = ["delete", "main", "queue_action", "run_now"]

COUNT_CAP = PAGE_SIZE  # tasks counted for the header: one ListTasks page at most
PAGE_SIZES = [25, 50, 100, 200, 500]
REFRESH_S = 5
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
    st.query_params.pop("task", None)


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
    queues = common.worker_queues(settings, registry)
    path = common.pick_queue(queues, settings, registry, "queue", _on_queue_change)
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

        st.divider()
        bulk_views.panel(path)


if __name__ == "__main__":  # as st.navigation runs a page; tests import its actions
    main()

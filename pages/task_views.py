"""The tasks of a queue as the Queues page shows them: the table, the charts, each selected
task in full (payload, attempts, the likely cause of a failure, "Enqueue again…"), and the
actions on the selection (run now, delete).

``task_details`` draws one expander per selected task through ``task_detail``: a new
section of the details (the attempts from the logs) is one more call there.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter

import pandas as pd
import streamlit as st

from enqueuer_core import actions
from enqueuer_core.access import Acting, Action
from enqueuer_core.errors import EnqueuerError, Forbidden, TaskNotFound
from enqueuer_core.explain import explain_failure
from enqueuer_core.inspect import TaskDetail, TaskSnapshot
from enqueuer_core.workers import WorkerSpec
from pages import common, history_views

DETAILS_SHOWN = 5  # selected tasks shown in full; actions apply to all selected
BUCKETS_S = [10, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400]


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
    """The worker to explain a failure against: the one the task calls, else the queue's
    first (a failure's likely cause is the same for every worker of a queue)."""
    return next((w for w in workers if w.url == task.url), workers[0] if workers else None)


def task_details(names: list[str], workers: list[WorkerSpec]) -> None:
    """The selected tasks in full, one expander each (up to ``DETAILS_SHOWN``)."""
    for name in names[:DETAILS_SHOWN]:
        task_id = name.rsplit("/", 1)[-1]
        with st.expander(f"Task `{task_id}`", expanded=len(names) == 1,
                         icon=":material/description:"):
            task_detail(name, workers)
    if len(names) > DETAILS_SHOWN:
        st.caption(f"…and {len(names) - DETAILS_SHOWN} more selected (the actions below apply "
                   "to all of them).")


def task_detail(name: str, workers: list[WorkerSpec]) -> None:
    """One task in full, section by section: what went wrong, its fields and payload, its
    attempts, and "Enqueue again…". A task gone from the queue says so."""
    try:
        detail = common.cached_task_detail(name)
    except TaskNotFound:
        st.info("This task is no longer in the queue: it ran successfully, used up its "
                "attempts, or was deleted.", icon=":material/task_alt:")
        history_views.task_attempts(name)  # what happened to it: the logs keep it
        return
    except EnqueuerError as e:
        common.show_error(e)
        return
    failure(detail, workers)
    left, right = st.columns(2)
    with left:
        fields(detail)
    with right:
        attempts(detail)
    history_views.task_attempts(name)
    enqueue_again(detail, workers)


def failure(detail: TaskDetail, workers: list[WorkerSpec]) -> None:
    """The likely cause of the last failure, its fix, and the check that proves it."""
    t = detail.snapshot
    settings = common.enqueuer().settings
    explanation = explain_failure(t.last_response_code, t.last_response_message,
                                  worker_for(t, workers), settings.caller_sa,
                                  settings=settings)
    if not explanation:
        return
    st.error(f"**{explanation.headline}**\n\n{explanation.detail}\n\n"
             f"**Fix:** {explanation.fix}", icon=":material/troubleshoot:")
    common.page_link(common.DIAGNOSTICS, "Check it on the Diagnostics page",
                     ":material/stethoscope:",
                     query_params={"check": explanation.check} if explanation.check else None)


def fields(detail: TaskDetail) -> None:
    t = detail.snapshot
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


def attempts(detail: TaskDetail) -> None:
    """What Cloud Tasks keeps of the attempts: counts, the first and the last."""
    t, last = detail.snapshot, detail.last_attempt
    st.markdown(
        f"**Created** {common.utc(t.create_time)}  \n"
        f"**Scheduled / next attempt** {common.utc(t.schedule_time)}  \n"
        f"**Dispatches** {t.dispatch_count} · **responses** {t.response_count}  \n"
        f"**First attempt** {common.utc(detail.first_attempt_time)}  \n"
        f"**Last attempt** dispatched {common.utc(last.get('dispatch_time'))}, "
        f"answered {common.utc(last.get('response_time'))}  \n"
        f"**Last response** `{last.get('code') or '-'}` "
        f"{last.get('message') or ''}")


def worker_of(task: TaskSnapshot, workers: list[WorkerSpec]) -> WorkerSpec | None:
    """The worker whose URL the task calls, among the queue's; None when none does."""
    return next((w for w in workers if w.url == task.url), None)


def why_not_again(detail: TaskDetail, worker: WorkerSpec | None) -> str | None:
    """Why this task's job cannot be put in the Enqueue form as it is, or None."""
    t = detail.snapshot
    if worker is None:
        return (f"No worker of this queue calls {t.url or 'this URL'}: Enqueuer cannot tell "
                "whose job this is, so it cannot fill the form. Add the worker to the "
                "workers file, or enqueue the payload by hand.")
    if not isinstance(detail.payload, dict):
        what = "no body" if detail.payload is None else "a body that is not a JSON object"
        return (f"The task has {what}: the Enqueue form takes a JSON object as the payload, "
                "so it cannot be filled from this task.")
    return None


def enqueue_again(detail: TaskDetail, workers: list[WorkerSpec]) -> None:
    """"Enqueue again…": the Enqueue form filled with the task's worker and payload (a new
    key; the audit line links the new task to this one). Disabled, saying why, for a role
    that may not enqueue, or a task whose job cannot fill the form."""
    t = detail.snapshot
    worker = worker_of(t, workers)
    cannot = why_not_again(detail, worker)
    refused = common.acting().why_not(Action.ENQUEUE, worker.name if worker else None)
    if st.button("Enqueue again…", key=f"again:{t.name}", icon=":material/replay:",
                 disabled=bool(cannot or refused), help=cannot or refused or
                 "Open the Enqueue form with this task's worker and payload, to edit and "
                 "enqueue as a new job."):
        assert worker is not None and isinstance(detail.payload, dict)
        taken = (f" (the task's own, `{t.idempotency_key}`, is taken)"
                 if t.idempotency_key else "")
        common.prefill_enqueue(
            worker.name, detail.payload, replay_of=t.name,
            note=f"Enqueuing task `{t.task_id}` again: the payload is the task's; edit it if "
                 f"needed, then enqueue. It gets a new idempotency key{taken}.")
    if cannot:
        st.caption(f":material/info: {cannot}")
    elif refused:
        st.caption(f":material/lock: {refused}")


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

"""Activity: who did what, when, with what outcome: Enqueuer's audit lines (one per change,
allowed or refused), read back from Cloud Logging a page at a time, newest first; and what
happened to one task, from its queue's task-operation logs.

Addressed as `/activity?who=...&action=...&queue=QUEUE_ID&outcome=...&task=FULL_TASK_NAME`
(all optional).
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlencode

import pandas as pd
import streamlit as st

from enqueuer_core import history
from enqueuer_core.access import Action
from pages import common
from pages.history_views import LOG_TTL_S, log_client, task_attempts

ANY = "any"
WINDOWS = {"1 h": dt.timedelta(hours=1), "24 h": dt.timedelta(hours=24),
           "7 d": dt.timedelta(days=7), "30 d": dt.timedelta(days=30)}
DEFAULT_WINDOW = "24 h"
OUTCOMES = [ANY, "ok", "refused", "failed"]
PAGE_SIZE = 50
COLUMNS = ["time", "who", "role", "via", "action", "on", "outcome", "error", "task",
           "replay of", "message"]


@st.cache_data(ttl=LOG_TTL_S, show_spinner=False)
def cached_actions(project: str, who: str | None, action: str | None, queue: str | None,
                   outcome: str | None, since: dt.datetime,
                   page_token: str) -> history.Page[history.ActionRecord]:
    return history.actions(log_client(), project, who=who, action=action, queue=queue,
                           outcome=outcome, since=since, page_size=PAGE_SIZE,
                           page_token=page_token)


def task_link(task: str | None) -> str | None:
    """The Queues page with the task open (its attempts, even once it is gone)."""
    if not task or "/tasks/" not in task:
        return None
    queue_id = task.split("/tasks/", 1)[0].rsplit("/", 1)[-1]
    return "/queues?" + urlencode({"queue": queue_id, "task": task}, safe="/")


def _on(record: history.ActionRecord) -> str:
    target = record.target.rsplit("/", 1)[-1] if "/queues/" in record.target else record.target
    return f"{record.worker} → {target}" if record.worker else target


def actions_frame(records: list[history.ActionRecord]) -> pd.DataFrame:
    return pd.DataFrame([{
        "time": r.time, "who": r.principal, "role": r.role or "", "via": r.via,
        "action": r.action + (f" ×{r.count}" if r.count else ""), "on": _on(r),
        "outcome": r.outcome, "error": r.error_code or "", "task": task_link(r.task),
        "replay of": task_link(r.replay_of), "message": r.message} for r in records],
        columns=COLUMNS)


def actions_table(records: list[history.ActionRecord]) -> None:
    tail = r"tasks/([^&/]+)$"  # the link shows the task's ID
    st.dataframe(
        actions_frame(records), hide_index=True, width="stretch",
        column_config={
            "time": st.column_config.DatetimeColumn("time (UTC)",
                                                    format="YYYY-MM-DD HH:mm:ss"),
            "task": st.column_config.LinkColumn("task", display_text=tail,
                                                help="Its attempts, on the Queues page"),
            "replay of": st.column_config.LinkColumn("replay of", display_text=tail),
            "message": st.column_config.TextColumn("message", width="large"),
        })


def _param(name: str, options: list[str]) -> int:
    value = st.query_params.get(name)
    return options.index(value) if value in options else 0


def filters() -> tuple[str | None, str | None, str | None, str | None, str]:
    """Who, action, queue, outcome (None: any) and the window, from the widgets."""
    enqueuer = common.enqueuer()
    queues = [ANY, *dict.fromkeys(w.queue for w in enqueuer.registry)]
    actions = [ANY, *(a.value for a in Action if a is not Action.READ)]
    c1, c2, c3, c4, c5 = st.columns([3, 2, 2, 2, 2])
    who = c1.text_input("Who", key="act_who", value=st.query_params.get("who", ""),
                        placeholder="ana@example.com or user:ana@example.com")
    action = c2.selectbox("Action", actions, index=_param("action", actions), key="act_action")
    queue = c3.selectbox("Queue", queues, index=_param("queue", queues), key="act_queue")
    outcome = c4.selectbox("Outcome", OUTCOMES, index=_param("outcome", OUTCOMES),
                           key="act_outcome")
    span = c5.selectbox("In the last", list(WINDOWS), index=list(WINDOWS).index(
        DEFAULT_WINDOW), key="act_window")
    # An email matches the user or the service account of that email (the core's rule).
    return (who.strip() or None, None if action == ANY else action, None if queue == ANY else queue,
            None if outcome == ANY else outcome, span)


def activity(project: str) -> None:
    who, action, queue, outcome, span = filters()
    # The window is pinned when the filters change (or on Refresh): a page token belongs to
    # its query, and the pages of one list must come from the same one.
    chosen = f"act_since:{who}:{action}:{queue}:{outcome}:{span}"
    if st.button("Refresh", key="act_refresh", icon=":material/refresh:") or (
            chosen not in st.session_state):
        st.session_state[chosen] = dt.datetime.now(dt.UTC) - WINDOWS[span]
    since = st.session_state[chosen]
    tokens: list[str] = st.session_state.setdefault(f"act_tokens:{chosen}:{since}", [""])
    page = cached_actions(project, who, action, queue, outcome, since, tokens[-1])
    common.pager("act", tokens, page.next_page_token,
                 f"{len(page.items)} action(s) since {common.utc(since)}")
    if page.items:
        actions_table(page.items)
    else:
        st.info("Nothing on record for these filters in this window.",
                icon=":material/search_off:")


def what_happened() -> None:
    """One job's attempts, whether it is still queued, ran, or died: found by its task name,
    its task ID or the idempotency key it was enqueued with."""
    st.subheader("What happened to a job?")
    enqueuer = common.enqueuer()
    queues = {w.queue: w.name for w in enqueuer.registry}
    c1, c2 = st.columns([1, 3])
    queue = c1.selectbox("Queue", list(queues), key="act_job_queue",
                         format_func=lambda q: f"{q} ({queues[q]})")
    ref = c2.text_input("Idempotency key, task ID or task name", key="act_task",
                        value=st.query_params.get("task", ""),
                        placeholder="report-1, or projects/P/locations/L/queues/Q/tasks/ID")
    if not ref.strip():
        st.caption("The key the job was enqueued with is enough (the API's answer, the CLI "
                   "and the Enqueue page show it): every attempt from the logs, even once "
                   "Cloud Tasks has forgotten the task.")
        return
    name = history.task_for(ref, enqueuer.settings.queue_path(queue))
    st.caption(f"Task `{name}`")
    task_attempts(name)
    link = task_link(name)
    if link:
        common.page_link(common.QUEUES, "Open it on the Queues page", ":material/open_in_new:",
                         query_params={"queue": name.split("/queues/", 1)[1].split("/")[0],
                                       "task": name})


def main() -> None:
    enqueuer = common.enqueuer()
    st.title("Activity")
    st.caption("Who did what, when, and with what outcome: every change made through "
               "Enqueuer (the dashboard, the API, the CLI), allowed or refused, from its audit "
               "lines in Cloud Logging. Times are UTC.")
    with common.shown_errors():
        activity(enqueuer.settings.project_id)
    st.divider()
    what_happened()


if __name__ == "__main__":  # as st.navigation runs a page; tests import its functions
    main()

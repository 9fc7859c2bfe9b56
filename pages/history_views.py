"""What the pages show from Cloud Logging: a task's every attempt, a queue whose log sampling
is off (with the command that turns it on), and the attempts per minute by status.

Cloud Tasks keeps a task's last attempt only, and forgets the task once it ran or died; its
task-operation logs (written when the queue's log sampling is on) and Enqueuer's audit lines
keep the rest, and ``enqueuer_core.history`` reads them back. The reads here are cached for
``LOG_TTL_S`` (``after_action`` clears them): Logging's read quota is per project and far
smaller than its write quota (https://cloud.google.com/logging/quotas), and every visitor's
rerun would otherwise be one more ListLogEntries call.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st
from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client

from enqueuer_core import history
from enqueuer_core.clients import logging_client, principal
from enqueuer_core.errors import EnqueuerError, translate_google_errors
from enqueuer_core.inspect import READ_RETRY
from pages import common, marks

LOG_TTL_S = 15
CHART_WINDOW = dt.timedelta(hours=1)
CALL_TIMEOUT_S = 5.0
# Each status its colour in the chart: success green, the worker's refusals (4xx) orange and
# amber, the worker's failures (5xx), timeouts and unreachable workers red and purple.
STATUS_COLOURS = {
    "OK": "#2e7d32", "NOT_FOUND": "#ef6c00", "PERMISSION_DENIED": "#f9a825",
    "UNAUTHENTICATED": "#fbc02d", "INVALID_ARGUMENT": "#ff8f00",
    "FAILED_PRECONDITION": "#ffa726", "RESOURCE_EXHAUSTED": "#8d6e63",
    "UNAVAILABLE": "#c62828", "INTERNAL": "#e53935", "UNKNOWN": "#b71c1c",
    "DEADLINE_EXCEEDED": "#6a1b9a", "CANCELLED": "#757575", "UNIMPLEMENTED": "#ad1457",
}
OTHER_COLOUR = "#546e7a"
EVENTS = {"created": "created", "dispatched": "dispatched", "response": "answered"}


@st.cache_resource(show_spinner=False)
def _logging() -> LoggingServiceV2Client:
    # One client (one gRPC channel) per process, made as the Cloud Tasks client is: as the
    # dashboard's own account, whose reads the visitor's role (checked at the gate) allows.
    return logging_client(common.enqueuer().settings)


def log_client() -> LoggingServiceV2Client:
    """The process's Cloud Logging client."""
    return _logging()


# -- cached reads (primitive arguments only; cleared by after_action) -----------------------


@st.cache_data(ttl=LOG_TTL_S, show_spinner=False)
def cached_attempts(task_name: str) -> list[history.AttemptRecord]:
    return history.task_attempts(log_client(), task_name)


@st.cache_data(ttl=common.SNAPSHOT_TTL_S, show_spinner=False)
def cached_sampling(queue_path: str) -> float:
    """The queue's log sampling ratio (0.0: Cloud Tasks logs none of its attempts)."""
    client = common.enqueuer().client
    with translate_google_errors(queue=queue_path, principal=principal(client)):
        queue = client.get_queue(name=queue_path, retry=READ_RETRY, timeout=CALL_TIMEOUT_S)
    return history.log_sampling(queue)


@st.cache_data(ttl=LOG_TTL_S, show_spinner=False)
def cached_per_minute(project: str, since: dt.datetime,
                      queue_path: str | None) -> list[history.MinuteCount]:
    return history.attempts_per_minute(log_client(), project, since, queue_path)


# -- log sampling ---------------------------------------------------------------------------


def sampling_notice(queue_path: str) -> float:
    """Say so when the queue logs none (or only a share) of its attempts; its ratio."""
    ratio = cached_sampling(queue_path)
    queue_id = queue_path.rsplit("/", 1)[-1]
    if ratio <= 0:
        st.warning(f"**Log sampling is off for `{queue_id}`**: Cloud Tasks writes none of its "
                   "attempts to Cloud Logging, so its tasks' attempts, its dead letters and "
                   "its attempts per minute cannot be shown. Turn it on (it applies to the "
                   "attempts from then on):", icon=":material/visibility_off:")
        st.code(history.sampling_fix(queue_path), language="bash")
    elif ratio < 1:
        st.caption(f":material/filter_alt: `{queue_id}` logs a sample of its tasks (ratio "
                   f"{ratio:g}): some tasks have no attempts on record. "
                   f"`{history.sampling_fix(queue_path)}` logs them all.")
    return ratio


# -- a task's attempts ----------------------------------------------------------------------


def _outcome(record: history.AttemptRecord) -> str:
    if record.event != "response":
        return ""
    if record.status == "OK":
        return "succeeded"
    if record.final:
        return marks.FAILED_FOR_GOOD
    return f"retry at {common.utc(record.retry_time)}" if record.retry_time else "failed"


def attempts_frame(records: list[history.AttemptRecord]) -> pd.DataFrame:
    """The attempts as a table, oldest first: one row per logged event."""
    return pd.DataFrame([{
        "time": r.time, "event": EVENTS.get(r.event, r.event), "status": r.status or "",
        "duration (s)": r.duration_s, "dispatch": r.dispatch_count,
        "outcome": _outcome(r), "target": r.target or ""} for r in records],
        columns=["time", "event", "status", "duration (s)", "dispatch", "outcome", "target"])


def attempts_table(records: list[history.AttemptRecord], queue_id: str | None = None) -> None:
    """Every logged attempt of a task, the final failure marked (with the way to its replay,
    on ``queue_id``'s Dead letters)."""
    st.dataframe(
        attempts_frame(records), hide_index=True, width="stretch",
        column_config={
            "time": st.column_config.DatetimeColumn("time (UTC)",
                                                    format="YYYY-MM-DD HH:mm:ss.SSS"),
            "duration (s)": st.column_config.NumberColumn(format="%.3f"),
        })
    final = next((r for r in records if r.final), None)
    if final is not None:
        st.error(f"**Failed for good** at {common.utc(final.time)}: `{final.status}` on "
                 f"dispatch {final.dispatch_count}, with no retry left. The task is gone from "
                 "the queue; its dead letter can be replayed from the Dead letters page.",
                 icon=":material/report:")
        if queue_id:
            common.page_link(common.DEAD_LETTERS, "Replay it from Dead letters",
                             ":material/replay:", query_params={"queue": queue_id})


def task_attempts(task_name: str) -> None:
    """A task's attempts from Cloud Logging, for the task details: every one, not only the
    last (the only one Cloud Tasks keeps), and those of a task that is gone."""
    st.markdown("**Attempts** (from Cloud Logging)")
    with common.shown_errors():
        records = cached_attempts(task_name)
        if records:
            attempts_table(records, task_name.split("/tasks/", 1)[0].rsplit("/", 1)[-1])
            return
        ratio = sampling_notice(task_name.split("/tasks/", 1)[0])
        if ratio > 0:
            st.caption("No attempt on record for this task: one enqueued a moment ago "
                       "shows within seconds; otherwise check its queue and its key.")


# -- attempts per minute --------------------------------------------------------------------


def _colours(statuses: list[str]) -> tuple[list[str], list[str]]:
    domain = sorted(statuses, key=lambda s: (s != "OK", s))
    return domain, [STATUS_COLOURS.get(s, OTHER_COLOUR) for s in domain]


def per_minute_chart(counts: list[history.MinuteCount], since: dt.datetime,
                     until: dt.datetime) -> None:
    """Attempts per minute, stacked by status. A Vega-Lite spec written out, as the Queues
    page's charts are (Altair would cost more than the query)."""
    frame = pd.DataFrame([{"minute": c.minute, "status": c.status, "attempts": c.count}
                          for c in counts], columns=["minute", "status", "attempts"])
    domain, colours = _colours(sorted({c.status for c in counts}))
    st.vega_lite_chart(frame, {
        "mark": {"type": "bar", "tooltip": True},
        "encoding": {
            "x": {"field": "minute", "type": "temporal", "title": "minute (UTC)",
                  "timeUnit": "utcyearmonthdatehoursminutes",
                  "scale": {"domain": [since.isoformat(), until.isoformat()]},
                  "axis": {"format": "%H:%M"}},
            "y": {"field": "attempts", "type": "quantitative", "title": "attempts",
                  "stack": "zero", "axis": {"tickMinStep": 1}},
            "color": {"field": "status", "type": "nominal", "title": "status",
                      "scale": {"domain": domain, "range": colours}},
        },
    }, height=240, width="stretch")


def not_logging(queue_paths: list[str]) -> list[str]:
    """The IDs of those queues whose log sampling is off (a queue that cannot be read is
    left out: its own error shows where the queue does)."""
    off = []
    for path in queue_paths:
        try:
            if cached_sampling(path) <= 0:
                off.append(path.rsplit("/", 1)[-1])
        except EnqueuerError:
            continue
    return off


def attempts_chart(project: str, queue_path: str | None = None,
                   queue_paths: list[str] | None = None) -> None:
    """The last hour's attempts per minute by status, from the task-operation logs (of one
    queue, or of the project); ``queue_paths``: the queues to name if they log nothing."""
    until = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    since = until - CHART_WINDOW  # whole minutes: the cache key changes once a minute
    off = not_logging(queue_paths or [])
    if off:
        st.caption(f":material/visibility_off: Not counted, as their log sampling is off: "
                   f"{', '.join(f'`{q}`' for q in off)}. The Dead letters page shows the "
                   "command that turns it on.")
    with common.shown_errors():
        counts = cached_per_minute(project, since, queue_path)
        if not counts:
            st.caption("No attempt logged in the last hour.")
            return
        total = sum(c.count for c in counts)
        failed = sum(c.count for c in counts if c.status != "OK")
        st.caption(f"{total} attempt(s) in the last hour, {failed} failed; "
                   f"read {common.utc(dt.datetime.now(dt.UTC))}.")
        per_minute_chart(counts, since, until)

"""Dead letters: the jobs of a queue that failed for good, newest first, and running them
again (as they were, or edited on the Enqueue page).

Cloud Tasks deletes a task once its last attempt fails, so this list comes from the queue's
task-operation logs (``enqueuer_core.history.dead_letters``: one Logging query per page). A
replay is a new task with a key derived from the old one, its audit line linked to it
(``replay_of``); it needs the payload on record (``AUDIT_PAYLOADS=full``).

Addressed as `/dead-letters?queue=QUEUE_ID`.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import streamlit as st

from enqueuer_core import history
from enqueuer_core.access import Action
from enqueuer_core.enqueue import EnqueueResult
from enqueuer_core.workers import WorkerSpec
from pages import common
from pages.history_views import LOG_TTL_S, log_client, sampling_notice

WINDOWS = {"1 h": dt.timedelta(hours=1), "24 h": dt.timedelta(hours=24),
           "7 d": dt.timedelta(days=7)}
DEFAULT_WINDOW = "24 h"
PAGE_SIZE = 20
_OPEN = "dead_open"  # the dead letter whose replay panel is open


@st.cache_data(ttl=LOG_TTL_S, show_spinner=False)
def cached_dead_letters(queue_path: str, since: dt.datetime, until: dt.datetime,
                        page_token: str) -> history.Page[history.DeadLetter]:
    return history.dead_letters(log_client(), queue_path, since, until,
                                page_size=PAGE_SIZE, page_token=page_token)


@st.cache_data(ttl=LOG_TTL_S, show_spinner=False)
def cached_source(task_name: str) -> history.ReplaySource:
    return history.replay_source(log_client(), task_name, common.enqueuer().registry)


def _short(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()[:12]


# -- which queue, which window --------------------------------------------------------------


def window(queue_path: str) -> tuple[dt.datetime, dt.datetime]:
    """The window listed: ``since`` and ``until``, pinned when the list was (re)loaded.

    A page token belongs to its query: the same ``until`` keeps the pages of one list
    consistent while new failures arrive; Refresh pins a new one.
    """
    c1, c2 = st.columns([3, 1])
    span = c1.radio("Failed in the last", list(WINDOWS), index=list(WINDOWS).index(
        DEFAULT_WINDOW), key="dead_window", horizontal=True)
    pin = f"dead_until:{queue_path}:{span}"
    if c2.button("Refresh", key="dead_refresh", icon=":material/refresh:") or (
            pin not in st.session_state):
        st.session_state[pin] = dt.datetime.now(dt.UTC)
        st.session_state.pop(_OPEN, None)
    until = st.session_state[pin]
    return until - WINDOWS[span], until


# -- the list -------------------------------------------------------------------------------


def _tokens(queue_path: str, since: dt.datetime) -> list[str]:
    """The page tokens that led to the page shown: [""] is the first page."""
    return st.session_state.setdefault(f"dead_tokens:{queue_path}:{since.isoformat()}", [""])


def _toggle(task: str) -> None:
    st.session_state[_OPEN] = None if st.session_state.get(_OPEN) == task else task


def dead_letter_row(dead: history.DeadLetter, workers: list[WorkerSpec]) -> None:
    task_id = dead.task.rsplit("/", 1)[-1]
    attempts = f"{dead.dispatch_count} dispatch(es)" + (
        f" of {dead.max_attempts} allowed" if dead.max_attempts and dead.max_attempts > 0
        else "")
    with st.container(border=True):
        left, right = st.columns([5, 1])
        left.markdown(f"**`{task_id}`** :red-badge[{dead.status}] · failed for good "
                      f"{common.utc(dead.time)} ({common.age(dead.time)} ago) · {attempts}")
        left.caption(dead.cause)
        with left:
            common.page_link(common.QUEUES, "Every attempt", ":material/history:",
                             query_params={"queue": dead.queue.rsplit("/", 1)[-1],
                                           "task": dead.task})
        opened = st.session_state.get(_OPEN) == dead.task
        right.button("Close" if opened else "Replay…", key=f"open:{_short(dead.task)}",
                     icon=":material/expand_less:" if opened else ":material/replay:",
                     help="Its payload, and running it again as it was or edited",
                     on_click=_toggle, args=(dead.task,))
        if opened:
            replay_panel(dead, workers)


def worker_of(dead: history.DeadLetter, source: history.ReplaySource,
              workers: list[WorkerSpec]) -> str | None:
    """The worker a replay goes to: the one the audit line named, else the queue's worker
    whose URL the task called, else the queue's first."""
    if source.worker:
        return source.worker
    url = (dead.target or "").partition(" ")[2]
    found = next((w for w in workers if w.url == url), workers[0] if workers else None)
    return found.name if found else None


def replay_panel(dead: history.DeadLetter, workers: list[WorkerSpec]) -> None:
    """The job's payload on record; Replay and Edit and replay, disabled saying why."""
    with common.shown_errors():
        source = cached_source(dead.task)
        worker = worker_of(dead, source, workers)
        acting = common.acting()
        refused = (acting.why_not(Action.ENQUEUE, worker) if worker else
                   "No worker of the workers file sends to this queue: add it, then replay.")
        if source.why_not:
            st.warning(f"**Its payload is not on record.** {source.why_not}",
                       icon=":material/visibility_off:")
        else:
            st.markdown(f"Worker **{worker}** · was enqueued with key "
                        f"`{source.idempotency_key or '-'}` · the replay's key "
                        f"`{source.new_key}`")
            st.json(source.payload, expanded=False)
        h = _short(dead.task)
        c1, c2, _ = st.columns([1, 1, 3])
        replay = c1.button("Replay", key=f"replay:{h}", type="primary",
                           icon=":material/replay:",
                           disabled=bool(refused or source.why_not),
                           help=refused or source.why_not or
                           "Enqueue the same payload again, as a new task linked to this one.")
        edit = c2.button("Edit and replay", key=f"edit:{h}", icon=":material/edit:",
                         disabled=refused is not None,
                         help=refused or "Open the Enqueue form with this job in it.")
        if refused:
            st.caption(f":material/lock: {refused}")
        done: EnqueueResult | None = st.session_state.get(f"replayed:{dead.task}")
        if done is not None:
            replayed(done, dead)
        if replay:
            # A second replay of the same job is refused as a duplicate (its key is derived
            # from the dead task's): the error says so, under the first replay's result.
            with common.shown_errors():
                result = history.replay(common.enqueuer(), log_client(), dead.task, acting)
                common.after_action()
                st.session_state[f"replayed:{dead.task}"] = result
                if done is None:
                    replayed(result, dead)
        if edit and worker:
            note = (f"Replaying task {dead.task}: edit the payload, then enqueue."
                    + (f" {source.why_not}" if source.why_not else ""))
            common.prefill_enqueue(
                worker, source.payload if source.payload is not None else {},
                idempotency_key=source.new_key, replay_of=dead.task, note=note)


def replayed(result: EnqueueResult, dead: history.DeadLetter) -> None:
    st.success(f"Replayed as **{result.task}** (key `{result.idempotency_key}`), linked to "
               f"{dead.task}.", icon=":material/check_circle:")
    common.page_link(common.QUEUES, "Open the new task on the Queues page",
                     ":material/open_in_new:",
                     query_params={"queue": result.queue, "task": result.task})


def dead_letters_list(queue_path: str, workers: list[WorkerSpec]) -> None:
    since, until = window(queue_path)
    tokens = _tokens(queue_path, since)
    page = cached_dead_letters(queue_path, since, until, tokens[-1])
    common.pager("dead", tokens, page.next_page_token,
                 f"{len(page.items)} job(s) that failed for good between {common.utc(since)} "
                 f"and {common.utc(until)}")
    if not page.items:
        st.info("No job of this queue failed for good in this window.",
                icon=":material/task_alt:")
    for dead in page.items:
        dead_letter_row(dead, workers)


def main() -> None:
    enqueuer = common.enqueuer()
    settings, registry = enqueuer.settings, enqueuer.registry
    st.title("Dead letters")
    st.caption("The jobs that failed for good: their last attempt failed and no retry was "
               "left, so Cloud Tasks deleted them. From the queue's task-operation logs in "
               "Cloud Logging. Times are UTC.")
    common.show_flashes()
    path = common.pick_queue(common.worker_queues(settings, registry), settings, registry,
                             "dead_queue")
    workers = [w for w in registry if settings.queue_path(w.queue) == path]
    # Apart: a queue that cannot be read (deleted since) may still have its dead letters.
    with common.shown_errors():
        sampling_notice(path)
    with common.shown_errors():
        dead_letters_list(path, workers)


if __name__ == "__main__":  # as st.navigation runs a page; tests import its functions
    main()

"""What every page shares: the one Enqueuer per process, who acts, cached snapshots,
errors, links.

Pages are UI only: they read through the cached functions here (``st.cache_data`` with a
short TTL, keyed by primitive arguments) and act through ``enqueuer_core`` as ``acting()``
(the visitor dashboard.py's gate let in), then call ``after_action()`` so that no page shows
a snapshot older than the action.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import runpy
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import streamlit as st
from streamlit.errors import StreamlitAPIException
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner import get_script_run_ctx

from enqueuer_core.access import AccessPolicy, Acting, load_access
from enqueuer_core.access.iap import assertion_in
from enqueuer_core.access.visitors import Visitor, visitor
from enqueuer_core.config import Settings, load_settings
from enqueuer_core.enqueue import Enqueuer
from enqueuer_core.errors import ConfigError, EnqueuerError
from enqueuer_core.inspect import (
    PAGE_SIZE,
    QueueSnapshot,
    TaskDetail,
    TaskPage,
    queue_snapshot,
    resolve_queue,
    task_detail,
    task_page,
)

SNAPSHOT_TTL_S = 5
# The page files, relative to dashboard.py: st.page_link and st.switch_page take these.
OVERVIEW, ENQUEUE, QUEUES, DIAGNOSTICS = (
    "pages/overview.py", "pages/enqueue.py", "pages/queues.py", "pages/diagnostics.py")
DEAD_LETTERS, ACTIVITY = "pages/dead_letters.py", "pages/activity.py"
DEFAULT_API_URL = "http://127.0.0.1:8080"
# Session state the gate writes at each run: who visits, and this run's request id.
_VISITOR, _REQUEST_ID, _IAP_SEEN = "_enqueuer_visitor", "_enqueuer_request_id", "_enqueuer_iap"
PREFILL = "_enqueuer_prefill"  # an EnqueuePrefill on its way to the Enqueue page
F = TypeVar("F", bound=Callable[..., Any])


@st.cache_resource(show_spinner=False)
def _enqueuer() -> Enqueuer:
    # Settings, registry and the gRPC channel: built once per process, shared by sessions.
    # A ConfigError is not cached: the next run tries again (after the fix and a restart).
    return Enqueuer(load_settings())


def stop_with(error: EnqueuerError) -> NoReturn:
    show_error(error)
    st.stop()
    raise AssertionError("unreachable")  # st.stop raises


def through_the_entry() -> None:
    """Make sure this run goes through dashboard.py (its page config and st.navigation).

    Streamlit takes a `pages/` folder beside the entry script for an old-style (v1)
    multipage app until the entry has called st.navigation once in the process: the first
    session of a fresh process (a restart, a new Cloud Run instance) that opens a deep link
    such as /queues?queue=... would run that page alone, with no page config and a sidebar
    listing every module of pages/. Such a run runs the entry instead, in the same run (a
    rerun would drop a button's click), and the entry runs this page.
    """
    if not PagesManager.uses_pages_directory:
        return
    PagesManager.uses_pages_directory = False  # what st.navigation itself sets
    ctx = get_script_run_ctx()
    if ctx is None:
        return
    runpy.run_path(ctx.main_script_path, run_name="__main__")
    st.stop()


def enqueuer() -> Enqueuer:
    """The process's Enqueuer; on a configuration error, the error and its fix, then stop.

    Every page calls it first: it also sends a page run alone back through the entry.
    """
    through_the_entry()
    try:
        return _enqueuer()
    except ConfigError as e:
        stop_with(e)


def gate_config() -> tuple[Settings, AccessPolicy, ConfigError | None]:
    """What the gate needs to know its visitor: settings and the access config.

    Settings that cannot work still name who may visit (so that Diagnostics, which reports
    them, stays behind the login): then they are read leniently, and the error comes third.
    ``ConfigError`` when even that fails, or the access config itself is wrong.
    """
    try:
        enqueuer = _enqueuer()
        return enqueuer.settings, enqueuer.access, None
    except ConfigError as error:
        settings = load_settings(lenient=True)
        return settings, load_access(settings), error


# -- who visits, who acts -------------------------------------------------------------------


def who_visits(settings: Settings) -> Visitor:
    """The visitor of this session (``enqueuer_core.access.visitors``), or ``Unauthenticated``.

    Streamlit gives the headers of the request that opened the session's websocket: IAP's
    assertion in them is checked once; the session it opened stays that user's (the
    assertion itself expires after 10 minutes, the session does not).
    """
    headers = st.context.headers
    pairs = [(k, v) for k in headers for v in headers.get_all(k)]
    user = st.user.to_dict()
    if settings.dashboard_auth != "iap":
        return visitor(settings, user, pairs)
    assertion = assertion_in(pairs)
    seen = st.session_state.get(_IAP_SEEN)
    if seen and seen[0] == assertion:
        return seen[1]
    found = visitor(settings, user, pairs)
    st.session_state[_IAP_SEEN] = (assertion, found)
    return found


def let_in(who: Visitor | None) -> None:
    """The gate's answer for this run: the visitor the pages act as (None: nobody)."""
    if who is None:
        st.session_state.pop(_VISITOR, None)
    else:
        st.session_state[_VISITOR] = who
    new_request()


def new_request() -> None:
    """A new request id: one per script run (dashboard.py, and each fragment's own run)."""
    st.session_state[_REQUEST_ID] = uuid.uuid4().hex


def fragment(body: F, run_every: float | None = None) -> F:
    """``st.fragment``, whose runs of its own each get their own request id."""
    @functools.wraps(body)
    def run(*args: Any, **kwargs: Any) -> Any:
        new_request()
        return body(*args, **kwargs)

    return st.fragment(run_every=run_every)(run)  # type: ignore[return-value]


def acting(policy: AccessPolicy | None = None) -> Acting:
    """Who acts in this run: the visitor the gate let in, for every change a page asks of
    ``enqueuer_core`` (which decides, and writes the audit line). ``policy``: the access
    config when the page runs without a working Enqueuer (Diagnostics: ``gate_config``)."""
    who = st.session_state.get(_VISITOR)
    if who is None:  # pages run only behind the gate (dashboard.py): a bug, not a visitor
        raise RuntimeError("no visitor: the page ran without dashboard.py's gate")
    return Acting(who.member, policy or enqueuer().access, "dashboard",
                  request_id=st.session_state.get(_REQUEST_ID) or uuid.uuid4().hex)


def show_error(error: EnqueuerError) -> None:
    """An EnqueuerError as operators see it: the message (which carries the fix)."""
    if isinstance(error, ConfigError):
        st.error(f"**Configuration error** ({error.code})\n\n{error.message}\n\n"
                 "Fix the environment (or the workers file) and restart the dashboard.",
                 icon=":material/settings:")
    else:
        st.error(f"{error.message}\n\n`{error.code}`", icon=":material/error:")


@contextmanager
def shown_errors() -> Iterator[None]:
    """Run a block; an EnqueuerError in it becomes an st.error, and the page goes on."""
    try:
        yield
    except EnqueuerError as e:
        show_error(e)


def after_action() -> None:
    """Forget every cached snapshot: the next read sees what the action changed."""
    st.cache_data.clear()


def api_url() -> str:
    return os.environ.get("ENQUEUER_API_URL") or DEFAULT_API_URL


def flash(message: str, kind: str = "success") -> None:
    """A message shown once on the next run (actions end with st.rerun)."""
    st.session_state.setdefault("_flash", []).append((kind, message))


def show_flashes() -> None:
    for kind, message in st.session_state.pop("_flash", []):
        getattr(st, kind)(message)


def page_link(page: str, label: str, icon: str | None = None,
              query_params: dict[str, str] | None = None) -> None:
    """st.page_link, or a plain link when the page runs on its own (outside dashboard.py)."""
    try:
        st.page_link(page, label=label, icon=icon, query_params=query_params)
    except StreamlitAPIException:
        slug = page.rsplit("/", 1)[-1].removesuffix(".py")
        query = "&".join(f"{k}={v}" for k, v in (query_params or {}).items())
        st.markdown(f"[{label}](/{slug}{'?' + query if query else ''})")


# -- the Enqueue form, prefilled from another page (contract E) -----------------------------


@dataclass(frozen=True)
class EnqueuePrefill:
    """What another page puts in the Enqueue form: a worker's job to edit and enqueue."""

    worker: str
    payload: Any
    idempotency_key: str | None = None  # None: an automatic key
    replay_of: str | None = None  # the task the new one replays: its audit line says so
    note: str | None = None  # shown above the form: why it is filled, what to do


def prefill_enqueue(worker: str, payload: Any, *, idempotency_key: str | None = None,
                    replay_of: str | None = None, note: str | None = None) -> NoReturn:
    """Open the Enqueue page with this worker and payload in its form.

    The payload goes in the raw JSON editor, the key in the key field; ``replay_of`` reaches
    ``Enqueuer.enqueue`` (the audit line links the new task to the old). The Enqueue page
    takes the prefill once: a reload, or coming back later, shows the usual form.
    """
    st.session_state[PREFILL] = EnqueuePrefill(worker, payload, idempotency_key, replay_of,
                                                note)
    st.switch_page(ENQUEUE)


def take_prefill() -> EnqueuePrefill | None:
    """The prefill another page left for the Enqueue page, once (it is gone after)."""
    return st.session_state.pop(PREFILL, None)


# -- times ----------------------------------------------------------------------------------


def utc(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def age(value: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """How long ago, in the largest unit that reads well: 42s, 7m, 3h 5m, 2d 4h."""
    if value is None:
        return "-"
    seconds = int(((now or dt.datetime.now(dt.UTC)) - value).total_seconds())
    if seconds < 0:
        return "in " + age(now or dt.datetime.now(dt.UTC), value)
    if seconds < 60:
        return f"{seconds}s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if hours < 1:
        return f"{minutes}m"
    if days < 1:
        return f"{hours}h {minutes % 60}m"
    return f"{days}d {hours % 24}h"


# -- cached snapshots (primitive arguments only; cleared by after_action) -------------------


@st.cache_data(ttl=SNAPSHOT_TTL_S, show_spinner=False)
def cached_queue(queue_path: str, count_cap: int) -> QueueSnapshot:
    return queue_snapshot(enqueuer().client, queue_path, count_cap=count_cap)


@st.cache_data(ttl=SNAPSHOT_TTL_S, show_spinner=False)
def cached_task_page(queue_path: str, page_token: str | None, page_size: int) -> TaskPage:
    return task_page(enqueuer().client, queue_path, page_token, page_size)


@st.cache_data(ttl=SNAPSHOT_TTL_S, show_spinner=False)
def cached_task_detail(task_name: str) -> TaskDetail:
    return task_detail(enqueuer().client, task_name)


@dataclass(frozen=True)
class QueueGlance:
    queue: QueueSnapshot
    tasks: int  # on the first page (up to PAGE_SIZE)
    more: bool  # the queue holds more than that page
    failing: int
    oldest: dt.datetime | None


@st.cache_data(ttl=SNAPSHOT_TTL_S, show_spinner=False)
def glance(queue_path: str) -> QueueGlance:
    # One GetQueue and one ListTasks page (the largest Cloud Tasks serves) per queue:
    # a queue of any length costs the same.
    client = enqueuer().client
    queue = cached_queue(queue_path, 0)
    if queue.error or queue.state not in ("RUNNING", "PAUSED", "DISABLED"):
        return QueueGlance(queue, 0, False, 0, None)
    page = task_page(client, queue_path, page_size=PAGE_SIZE)
    created = [t.create_time for t in page.tasks if t.create_time]
    return QueueGlance(queue, len(page.tasks), page.next_page_token is not None,
                       sum(t.failing for t in page.tasks), min(created, default=None))


def worker_queues(settings: Settings, registry: Any) -> dict[str, list[str]]:
    """Each worker queue's full path, with the names of the workers that use it."""
    queues: dict[str, list[str]] = {}
    for worker in registry:
        queues.setdefault(settings.queue_path(worker.queue), []).append(worker.name)
    return queues


def pick_queue(queues: dict[str, list[str]], settings: Settings, registry: Any, key: str,
               on_change: Callable[[], None] | None = None) -> str:
    """The full path of the queue a page shows: its `queue` query parameter (a queue ID, a
    worker's name or a full name) when a link was followed, else the picker's choice."""
    options = list(queues)
    param = st.query_params.get("queue")
    if param:
        path = resolve_queue(param, settings, registry)
        if path not in options:
            options.append(path)
        if st.session_state.get(f"_{key}_param") != param:  # a link was followed
            st.session_state[f"_{key}_param"] = param
            st.session_state[key] = path
    if st.session_state.get(key) not in options:
        st.session_state[key] = options[0]

    def label(path: str) -> str:
        workers = queues.get(path)
        return path.rsplit("/", 1)[-1] + (f"  ·  {', '.join(workers)}" if workers else "")

    def changed() -> None:
        st.query_params["queue"] = st.session_state[key].rsplit("/", 1)[-1]
        if on_change:
            on_change()

    return st.selectbox("Queue", options, key=key, format_func=label, on_change=changed)


def pager(key: str, tokens: list[str], next_token: str, summary: str) -> None:
    """Previous and Next over a list read a page at a time: ``tokens`` are the page tokens
    that led to the page shown (``[""]`` on the first), ``next_token`` the page's own."""
    p1, p2, p3 = st.columns([1, 1, 4])
    p1.button("Previous", key=f"{key}_prev", icon=":material/chevron_left:",
              disabled=len(tokens) == 1, on_click=tokens.pop)
    p2.button("Next", key=f"{key}_next", icon=":material/chevron_right:",
              disabled=not next_token, on_click=tokens.append, args=(next_token,))
    p3.caption(f"Page {len(tokens)}: {summary}"
               + (" · more on the next pages" if next_token else ""))

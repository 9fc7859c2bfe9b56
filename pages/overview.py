"""Overview: the workers, and each queue at a glance, with links to act on them."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from enqueuer_core.inspect import MISSING, PAGE_SIZE
from pages import common, history_views

STATE_ICONS = {"RUNNING": ":green[RUNNING]", "PAUSED": ":orange[PAUSED]",
               "DISABLED": ":red[DISABLED]", MISSING: ":red[MISSING]"}


def plus(n: int, more: bool) -> str:
    return f"{n}+" if more else str(n)


def main() -> None:
    enqueuer = common.enqueuer()
    settings, registry = enqueuer.settings, enqueuer.registry
    st.title("Overview")
    where = (f"emulator at `{settings.cloud_tasks_emulator_host}`" if settings.on_emulator
             else "Google Cloud")
    st.caption(f"Project `{settings.project_id}`, region `{settings.tasks_region}`, on {where}. "
               f"Tasks are signed for `{settings.caller_sa}`. Times are UTC.")

    c1, c2, c3 = st.columns(3)
    with c1:
        common.page_link(common.ENQUEUE, "Enqueue a job", ":material/send:")
    with c2:
        common.page_link(common.QUEUES, "Browse queues and tasks", ":material/view_list:")
    with c3:
        common.page_link(common.DIAGNOSTICS, "Check the configuration",
                         ":material/stethoscope:")

    st.subheader("Workers")
    st.dataframe(
        pd.DataFrame([{"worker": w.name, "queue": w.queue, "URL": w.url,
                       "audience": w.audience, "deadline (s)": w.deadline_s,
                       "description": w.description} for w in registry]),
        hide_index=True, width="stretch",
    )

    st.subheader("Queues")
    by_queue: dict[str, list[str]] = {}
    for worker in registry:
        by_queue.setdefault(worker.queue, []).append(worker.name)
    now = dt.datetime.now(dt.UTC)
    columns = st.columns(min(len(by_queue), 3) or 1)
    for i, (queue_id, workers) in enumerate(by_queue.items()):
        with columns[i % len(columns)], st.container(border=True):
            st.markdown(f"**{queue_id}** · {', '.join(workers)}")
            with common.shown_errors():
                g = common.glance(settings.queue_path(queue_id))
                state = g.queue.state
                st.markdown(STATE_ICONS.get(state, state))
                if g.queue.error:
                    st.error(g.queue.error)
                    continue
                m1, m2, m3 = st.columns(3)
                m1.metric("tasks", plus(g.tasks, g.more),
                          help=f"Counted up to {PAGE_SIZE}: a longer queue reads {PAGE_SIZE}+.")
                m2.metric("failing", plus(g.failing, g.more),
                          help="Tasks whose last attempt failed"
                          + (f", among the first {PAGE_SIZE} of the queue." if g.more else "."))
                m3.metric("oldest", common.age(g.oldest, now),
                          help=f"The oldest task was created {common.utc(g.oldest)}"
                          + (f" (among the first {PAGE_SIZE})." if g.more else "."))
                common.page_link(common.QUEUES, "Open queue", ":material/arrow_forward:",
                                 query_params={"queue": queue_id})

    st.subheader("Attempts in the last hour")
    history_views.attempts_chart(settings.project_id, queue_paths=[
        settings.queue_path(q) for q in by_queue])


main()

"""Diagnostics: the checks computable from the configuration alone, per worker.

Live checks (the Cloud Run service behind each URL, the caller's run.invoker binding, the
queues' IAM) come with the diagnostics issue, from enqueuer_core's diagnose module.
Addressed as `/diagnostics?check=audience|deadline|invoker|url` (the Queues page links
here with the check that would confirm a failure's cause).
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from enqueuer_core.config import MAX_DEADLINE_S, MIN_DEADLINE_S, base_url
from enqueuer_core.workers import WorkerSpec
from pages import common

# The environment's names for the built-in workers (config.py); others come from the file.
ENV_SHORT = {"brain": "BRAIN", "testimonios": "TESTI", "transcripciones": "TRANS"}
LIVE_CHECKS = {
    "invoker": "whether the caller account holds roles/run.invoker on each worker's Cloud "
               "Run service",
    "url": "whether each worker's URL reaches a running service with that path",
}


@dataclass(frozen=True)
class Check:
    check: str  # audience, deadline
    worker: str
    ok: bool
    evidence: str
    fix: str | None


def _setting(worker: WorkerSpec, env: str, key: str) -> str:
    short = ENV_SHORT.get(worker.name)
    in_file = f"`{key}` under `[workers.{worker.name}]` in the workers file"
    return f"`{env}_{short}`{'_S' if env == 'DEADLINE' else ''} (or {in_file})" if short \
        else in_file


def checks_for(worker: WorkerSpec) -> list[Check]:
    expected = base_url(worker.url)
    audience_ok = worker.audience == expected
    deadline_ok = MIN_DEADLINE_S <= worker.deadline_s <= MAX_DEADLINE_S
    return [
        Check("audience", worker.name, audience_ok,
              f"audience `{worker.audience}`; the scheme and host of `{worker.url}` is "
              f"`{expected}`",
              None if audience_ok else
              f"Set {_setting(worker, 'AUD', 'audience')} to `{expected}`, or unset it to "
              "get that default: Cloud Run refuses a token for any other audience (401)."),
        Check("deadline", worker.name, deadline_ok,
              f"dispatch deadline {worker.deadline_s} s; Cloud Tasks accepts "
              f"{MIN_DEADLINE_S}–{MAX_DEADLINE_S} s",
              None if deadline_ok else
              f"Set {_setting(worker, 'DEADLINE', 'deadline_s')} to a number of seconds from "
              f"{MIN_DEADLINE_S} to {MAX_DEADLINE_S}, and the Cloud Run service's request "
              "timeout at least as long."),
    ]


def main() -> None:
    enqueuer = common.enqueuer()
    st.title("Diagnostics")
    st.caption("Checks computed from the configuration, per worker. Live checks (the Cloud "
               "Run service behind each URL, the caller's run.invoker binding, the queues' "
               "IAM) come with the diagnostics issue.")
    focus = st.query_params.get("check")
    if focus in LIVE_CHECKS:
        st.info(f"The check linked here, **{focus}** ({LIVE_CHECKS[focus]}), is a live check: "
                "it is not available yet. The explanation on the Queues page says what to "
                "look at meanwhile.", icon=":material/info:")

    results = [c for worker in enqueuer.registry for c in checks_for(worker)]
    failed = [c for c in results if not c.ok]
    if failed:
        st.error(f"{len(failed)} of {len(results)} checks fail.", icon=":material/error:")
    else:
        st.success(f"All {len(results)} configuration checks pass.",
                   icon=":material/check_circle:")

    for worker in enqueuer.registry:
        with st.container(border=True):
            st.markdown(f"**{worker.name}** · queue `{worker.queue}` · `{worker.url}`")
            for c in checks_for(worker):
                mark = ":green[:material/check_circle: pass]" if c.ok else \
                    ":red[:material/cancel: fail]"
                name = f"**{c.check}**" if c.check != focus else f"**:blue[{c.check}]** ←"
                st.markdown(f"{mark} · {name} · {c.evidence}")
                if c.fix:
                    st.error(f"Fix: {c.fix}")


main()

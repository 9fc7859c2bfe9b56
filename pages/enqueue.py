"""Enqueue: a worker's form (from its payload schema) or raw JSON, a schedule, an
idempotency key, a preview of the exact task with its curl and gcloud, and Submit.

Other pages open it filled in (``common.prefill_enqueue``: "Enqueue again…", edit and
replay): the job's payload in the raw JSON editor, its key, a note saying why, and the task
it replays, which the enqueue's audit line names. The prefill is taken once; it holds until
the job is enqueued, another worker is picked, or the operator leaves the page.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import streamlit as st
from pydantic import ValidationError

from enqueuer_core.access import Acting, Action
from enqueuer_core.build import MAX_SCHEDULE_S, EnqueueRequest
from enqueuer_core.enqueue import Enqueuer, EnqueueResult
from enqueuer_core.errors import DuplicateTask, EnqueuerError
from enqueuer_core.gcloud_env import sourcing_line
from enqueuer_core.preview import (
    TaskPreview,
    curl_command,
    gcloud_command,
    pinned_request,
    preview_task,
)
from enqueuer_core.task_names import new_key
from enqueuer_core.tokens import token_command
from enqueuer_core.workers import WorkerSpec
from pages import common
from pages.common import EnqueuePrefill
from pages.schema_form import Path, SchemaForm, schema_errors, top_level_fields

NOW, LATER, AT = "Now", "In N seconds", "At a date and time (UTC)"
AUTO, TYPED, FIELDS = "Automatic", "Typed", "From payload fields"
_FROM = "_enqueue_from"  # the EnqueuePrefill the form was filled from, while it holds


def _state(name: str, default: Any) -> Any:
    return st.session_state.setdefault(name, default)


# -- filled in by another page --------------------------------------------------------------


def take_prefill(names: list[str]) -> None:
    """Put the prefill another page left (if any) into the widgets' state, before they are
    drawn: the worker, the raw JSON editor holding the payload, the key, "now"."""
    prefill = common.take_prefill()
    if prefill is None:
        return
    if prefill.worker not in names:
        st.error(f"The job to enqueue is for the worker {prefill.worker!r}, which is not in "
                 f"the registry ({', '.join(names)}): add it to the workers file, or pick "
                 "a worker below.", icon=":material/error:")
        return
    name = prefill.worker
    st.session_state.update({
        "worker": name, f"raw:{name}": True, "schedule_mode": NOW,
        f"rawtext:{name}": json.dumps(prefill.payload, indent=2, ensure_ascii=False)})
    if prefill.idempotency_key:
        st.session_state.update({"key_mode": TYPED, "key_typed": prefill.idempotency_key})
    else:
        st.session_state.update({"key_mode": AUTO, "auto_key": new_key()})
    st.session_state.pop("last_result", None)
    st.session_state.pop(f"tried:{name}", None)
    st.session_state[_FROM] = prefill


def holding_prefill(name: str) -> EnqueuePrefill | None:
    """The prefill the form still holds for worker ``name``, or None.

    It is dropped once another worker is picked, or when the operator left the page (then
    Streamlit dropped the state of the page's widgets: the raw toggle's is gone).
    """
    came: EnqueuePrefill | None = st.session_state.get(_FROM)
    if came is not None and (came.worker != name or f"raw:{name}" not in st.session_state):
        st.session_state.pop(_FROM, None)
        return None
    return came


def _discard(name: str) -> None:
    st.session_state.pop(_FROM, None)
    st.session_state.pop(f"rawtext:{name}", None)  # the raw editor starts from the example
    st.session_state[f"raw:{name}"] = False


def prefill_note(came: EnqueuePrefill) -> Any:
    """The note saying where the form's job comes from; its placeholder, emptied once the
    job is enqueued."""
    note = came.note or f"The form holds a job for {came.worker}: edit it, then enqueue."
    if came.replay_of:
        note += f"\n\nThe new task is recorded as a replay of `{came.replay_of}`."
    slot = st.empty()
    with slot.container():
        st.info(note, icon=":material/replay:")
        st.button("Start from an empty form", key="discard_prefill", icon=":material/close:",
                  on_click=_discard, args=(came.worker,))
    return slot


# -- payload: the generated form, or raw JSON -----------------------------------------------


def _on_mode_change(worker: str) -> None:
    if st.session_state[f"raw:{worker}"]:  # form -> raw: start from what the form holds
        payload = st.session_state.get(f"payload:{worker}") or {}
        st.session_state[f"rawtext:{worker}"] = json.dumps(payload, indent=2,
                                                           ensure_ascii=False)
        return
    try:  # raw -> form: fill the form with the JSON, when it is an object
        value = json.loads(st.session_state.get(f"rawtext:{worker}") or "")
    except ValueError:
        return
    if isinstance(value, dict):
        st.session_state[f"prefill:{worker}"] = value
        st.session_state[f"gen:{worker}"] = st.session_state.get(f"gen:{worker}", 0) + 1


def raw_payload(worker: WorkerSpec) -> tuple[dict[str, Any] | None, str | None]:
    """The raw JSON and what is wrong with it (JSON syntax first, then the schema)."""
    key = f"rawtext:{worker.name}"
    _state(key, json.dumps(worker.example or {}, indent=2, ensure_ascii=False))
    text = st.text_area("Payload (JSON) *", key=key, height=220,
                        help="Checked against the worker's payload schema.")
    slot = st.empty()
    try:
        payload = json.loads(text)
    except ValueError as e:
        slot.error(f"The payload is not valid JSON: {e}", icon=":material/error:")
        return None, str(e)
    try:
        worker.check_payload(payload)
    except EnqueuerError as e:
        slot.error(e.message, icon=":material/error:")
        return None, e.message
    return payload, None


def form_payload(worker: WorkerSpec, tried: bool,
                 ) -> tuple[dict[str, Any] | None, SchemaForm, dict[Path, list[str]]]:
    """The form's payload (None when something is wrong), the form, and what is wrong."""
    gen = _state(f"gen:{worker.name}", 0)
    prefill = st.session_state.get(f"prefill:{worker.name}", worker.example)
    if not worker.payload_schema.get("properties"):
        st.caption("This worker's schema does not describe its fields: write the payload as "
                   "a JSON object.")
    form = SchemaForm(worker.payload_schema, f"field:{worker.name}:{gen}", prefill)
    payload = form.render()
    st.session_state[f"payload:{worker.name}"] = payload
    unreadable = {path: [message] for path, message in form.input_errors.items()}
    errors = unreadable or schema_errors(worker.payload_schema, payload)
    # Input that cannot be read is flagged at once; the schema's complaints (a required
    # field still empty...) once the operator has tried to submit.
    form.show_errors(errors if tried else unreadable)
    return (None if errors else payload), form, errors


# -- schedule and idempotency key -----------------------------------------------------------


def schedule(now: dt.datetime) -> tuple[float | None, str | None]:
    """schedule_in_s (None: now) and what is wrong with the choice."""
    mode = st.radio("Schedule", [NOW, LATER, AT], horizontal=True, key="schedule_mode",
                    help="Times are UTC.")
    if mode == LATER:
        seconds = st.number_input("Seconds from now", min_value=0, max_value=MAX_SCHEDULE_S,
                                  value=60, step=1, key="schedule_in")
        return float(seconds), None
    if mode == AT:
        later = (now + dt.timedelta(hours=1)).replace(second=0, microsecond=0)
        _state("schedule_date", later.date())
        _state("schedule_time", later.time())
        c1, c2 = st.columns(2)
        day = c1.date_input("Date (UTC)", key="schedule_date")
        time = c2.time_input("Time (UTC)", key="schedule_time", step=60)
        target = dt.datetime.combine(day, time, tzinfo=dt.UTC)
        seconds = (target - now).total_seconds()
        st.caption(f"Runs at {common.utc(target)} (now: {common.utc(now)}).")
        problem = None
        if seconds <= 0:
            problem = f"{common.utc(target)} is in the past: pick a later time."
        elif seconds > MAX_SCHEDULE_S:
            problem = "Cloud Tasks takes a schedule at most 30 days ahead: pick an earlier time."
        if problem:
            st.warning(problem)
            return None, problem
        return seconds, None
    return None, None


def idempotency_key(worker: WorkerSpec, payload: dict[str, Any] | None,
                    ) -> tuple[str, str | None]:
    """The key to enqueue with, and what is wrong with it."""
    auto = _state("auto_key", new_key())
    mode = st.radio("Idempotency key", [AUTO, TYPED, FIELDS], horizontal=True, key="key_mode",
                    help="The same key never enqueues twice: the task's name is made from it.")
    if mode == TYPED:
        key = st.text_input("Key *", key="key_typed", placeholder="report-2026-11-29")
        return key, None if key else "Type an idempotency key."
    if mode == FIELDS:
        fields = st.multiselect(
            "Fields *", top_level_fields(worker.payload_schema, payload or {}),
            key=f"key_fields:{worker.name}",
            help="Their values, joined with '-', make the key: the same values, one job.")
        if not fields:
            return "", "Pick the payload fields that make the key."
        if payload is None:
            return "", "The key comes from the payload: fix the payload first."
        missing = [f for f in fields if f not in payload]
        if missing:
            return "", f"The payload has no {', '.join(missing)}: fill it in or pick others."
        key = "-".join(v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
                       for v in (payload[f] for f in fields))
        st.caption(f"Key: `{key}`")
        return key, None
    st.caption(f"Key: `{auto}` (a new one after each job enqueued)")
    return auto, None


# -- preview and submit ---------------------------------------------------------------------


def show_preview(enqueuer: Enqueuer, request: EnqueueRequest, automatic: bool,
                 now: dt.datetime) -> TaskPreview | None:
    with st.expander("Preview of the task", icon=":material/visibility:"):
        try:
            preview = preview_task(enqueuer, request, now)
        except EnqueuerError as e:
            common.show_error(e)
            return None
        st.dataframe(
            [{"field": k, "value": v} for k, v in {
                "task name": preview.task_name, "queue": preview.queue,
                "URL": f"{preview.method} {preview.url}", "audience": preview.audience,
                "service account (OIDC)": preview.service_account,
                "dispatch deadline": f"{preview.deadline_s} s",
                "schedule time": common.utc(preview.schedule_time)
                if preview.schedule_time else "as soon as possible",
                "idempotency key": preview.idempotency_key}.items()],
            hide_index=True, width="stretch")
        st.markdown("**Headers** (Cloud Tasks adds `User-Agent` and an `Authorization` "
                    "bearer token at dispatch)")
        st.json(preview.headers)
        st.markdown("**Body**")
        st.code(preview.body, language="json")
        # With an automatic key, the API makes its own: the command leaves the key out.
        curl_request = request.model_copy(update={"idempotency_key": None}) if automatic \
            else request
        st.markdown(f"**The same job through the API** (`{common.api_url()}`)")
        st.code(curl_command(common.api_url(), curl_request,
                             token_command(enqueuer.settings)), language="bash")
        st.markdown("**The same task with gcloud** (gcloud cannot set the dispatch deadline:"
                    " its task gets Cloud Tasks' default of 10 minutes)")
        # On the local stack the shell must first point gcloud at the emulator.
        setup = sourcing_line(enqueuer.settings)
        st.code(gcloud_command(preview) if setup is None else
                f"# gcloud against the local emulator\n{setup}\n{gcloud_command(preview)}",
                language="bash")
        return preview


def show_result(result: EnqueueResult) -> None:
    when = f", to run at {common.utc(result.schedule_time)}" if result.schedule_time else ""
    st.success(f"Enqueued **{result.task}** on `{result.queue}`{when}. "
               f"Idempotency key: `{result.idempotency_key}`.", icon=":material/check_circle:")
    common.page_link(common.QUEUES, "Open the task on the Queues page",
                     ":material/arrow_forward:",
                     query_params={"queue": result.queue, "task": result.task})


def submit(enqueuer: Enqueuer, request: EnqueueRequest, preview: TaskPreview,
           now: dt.datetime, automatic: bool, acting: Acting,
           replay_of: str | None = None) -> None:
    """Enqueue as ``acting``: the core decides; a refusal is shown like any other error.
    ``replay_of``: the task this job replays (its audit line says so)."""
    try:
        result = enqueuer.enqueue(pinned_request(request, preview), acting, now=now,
                                  replay_of=replay_of)
    except DuplicateTask as e:
        st.error(e.message, icon=":material/content_copy:")
        common.page_link(common.QUEUES, "Look for the existing task",
                         ":material/arrow_forward:",
                         query_params={"queue": preview.queue_id, "task": preview.task_name})
        return
    except EnqueuerError as e:
        common.show_error(e)
        return
    common.after_action()
    st.session_state["last_result"] = result
    st.session_state.pop(f"tried:{request.service}", None)
    st.session_state.pop(_FROM, None)  # replayed: the next job is a new one
    if automatic:  # the next job is a new one
        st.session_state["auto_key"] = new_key()


def main() -> None:
    enqueuer = common.enqueuer()
    st.title("Enqueue a job")
    names = list(enqueuer.registry.workers)
    take_prefill(names)
    wanted = st.query_params.get("worker")
    _state("worker", wanted if wanted in names else names[0])
    came = holding_prefill(st.session_state["worker"])
    note = prefill_note(came) if came is not None else None
    name = st.selectbox("Worker", names, key="worker")
    worker = enqueuer.registry.get(name)
    st.caption(f"{worker.description} Queue `{worker.queue}` · `POST {worker.url}` · "
               f"audience `{worker.audience}` · deadline {worker.deadline_s} s")

    now = dt.datetime.now(dt.UTC)
    tried = st.session_state.get(f"tried:{name}", False)
    st.subheader("Payload")
    raw = st.toggle("Raw JSON", key=f"raw:{name}", on_change=_on_mode_change, args=(name,),
                    help="Write the payload as JSON instead of the form; both are checked "
                         "against the same schema.")
    form, errors = None, {}
    if raw:
        payload, _ = raw_payload(worker)
    else:
        payload, form, errors = form_payload(worker, tried)

    st.subheader("When, and only once")
    schedule_in_s, schedule_problem = schedule(now)
    key, key_problem = idempotency_key(worker, payload)
    if key_problem and (tried or st.session_state.get("key_mode") != TYPED):
        st.warning(key_problem)
    problems = [p for p in (schedule_problem, key_problem) if p]

    request = None
    if payload is not None and not problems:
        try:
            request = EnqueueRequest(service=name, payload=payload, schedule_in_s=schedule_in_s,
                                     idempotency_key=key)
        except ValidationError as e:
            problems += [err["msg"].removeprefix("Value error, ") for err in e.errors()]
            st.warning(" ".join(problems))
    automatic = st.session_state.get("key_mode") == AUTO
    preview = show_preview(enqueuer, request, automatic, now) if request else None

    # Disabled, saying why, for whom the access config refuses: the core refuses them anyway.
    acting = common.acting()
    refused = acting.why_not(Action.ENQUEUE, name)
    clicked = st.button("Enqueue", type="primary", key="submit", icon=":material/send:",
                        disabled=refused is not None, help=refused)
    if refused:
        st.caption(f":material/lock: {refused}")
    if clicked:
        st.session_state.pop("last_result", None)
        if request is None or preview is None:
            st.session_state[f"tried:{name}"] = True
            if form is not None:
                form.show_errors(errors)  # into the slots under the fields, drawn above
            st.error("Nothing was enqueued: " + " ".join(
                problems or ["fix the payload (see the marked fields)."]),
                icon=":material/block:")
        else:
            submit(enqueuer, request, preview, now, automatic, acting,
                   replay_of=came.replay_of if came else None)
            if note is not None and _FROM not in st.session_state:  # enqueued
                note.empty()
    last = st.session_state.get("last_result")
    if last is not None and last.service == name:
        show_result(last)


if __name__ == "__main__":  # as st.navigation runs a page; tests import submit
    main()

"""The pages that read history from Cloud Logging, against the real emulator: a brain job
that failed for good (its queue logs every attempt, allows two, and its worker answers 500)
is a dead letter with its cause and every attempt; an operator replays it (the worker gets
the new key, a second replay is a duplicate) or edits it on the Enqueue form; a viewer sees
why they may not; Activity lists the enqueue, filtered; a queue that logs nothing says how
to turn logging on.

The dev stack ships the API's stdout into the emulator's Logging as Cloud Run does; here
``ship`` does the same with the audit lines the core wrote (``log_shipping.entry_from_line``).
One set of dead jobs serves the module's tests (each test still gets fresh Streamlit caches).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pandas as pd
import pytest
from google.cloud import tasks_v2
from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
from google.cloud.logging_v2.services.logging_service_v2.transports import (
    LoggingServiceV2GrpcTransport,
)
from google.cloud.logging_v2.types import LogEntry
from google.protobuf import field_mask_pb2
from streamlit.testing.v1 import AppTest

from enqueuer_core import history
from enqueuer_core.access import Acting
from enqueuer_core.access.audit import audit_line
from enqueuer_core.build import EnqueueRequest
from enqueuer_core.config import LOCAL_PRINCIPAL, load_settings
from enqueuer_core.enqueue import Enqueuer
from enqueuer_core.errors import Forbidden
from enqueuer_core.log_shipping import entry_from_line
from tests.dashboard.conftest import (
    ADMIN,
    BRAIN_PAYLOAD,
    CALLER_SA,
    OPERATOR,
    PATHS,
    SHORT,
    VIEWER,
    Dash,
    make_dash,
)
from tests.emulator.harness import LOCATION, PROJECT, fast_retry, start_emulator, wait_until

DEAD, ACTIVITY, QUEUES = "pages/dead_letters.py", "pages/activity.py", "pages/queues.py"


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


@dataclass
class History:
    dash: Dash
    log: LoggingServiceV2Client
    full: str  # a dead brain task whose payload is on record (AUDIT_PAYLOADS=full)
    full_key: str
    hashed: str  # a dead brain task enqueued with AUDIT_PAYLOADS=hash
    refused_by: str  # the viewer whose enqueue was refused

    def queue_id(self, service: str) -> str:
        return self.dash.queues[service].rsplit("/", 1)[1]

    def dead_page(self, user: str = ADMIN, service: str = "brain") -> AppTest:
        at = self.dash.app(DEAD, user=user, queue=self.queue_id(service))
        assert not at.exception, at.exception
        return at

    def ship(self, out: str) -> None:
        """The audit lines among ``out`` into Logging, as the dev stack's shipper sends them."""
        lines = [x for x in out.splitlines() if x.startswith("{") and '"audit"' in x]
        self.log.write_log_entries(entries=[
            entry_from_line(x, project=PROJECT, location=LOCATION, service="enqueuer-api",
                            revision="enqueuer-api-00001") for x in lines])


def _sampling(client: tasks_v2.CloudTasksClient, queue: str, ratio: float,
              **retry: object) -> None:
    fields = ["stackdriver_logging_config"] + (["retry_config"] if retry else [])
    client.update_queue(
        queue=tasks_v2.Queue(
            name=queue, retry_config=fast_retry(**retry) if retry else None,
            stackdriver_logging_config=tasks_v2.StackdriverLoggingConfig(
                sampling_ratio=ratio)),
        update_mask=field_mask_pb2.FieldMask(paths=fields))


def _enqueue(enqueuer: Enqueuer, key: str, member: str) -> tuple[str, str]:
    """Enqueue a brain job through the core as ``member`` (as the API does); the task's name
    (or the refusal) and the audit line written."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            task = enqueuer.enqueue(EnqueueRequest(service="brain", payload=BRAIN_PAYLOAD,
                                                   idempotency_key=key),
                                    Acting(member, enqueuer.access, "api")).task
        except Forbidden as e:  # the viewer's: its refused line is what counts
            task = type(e).__name__
    return task, out.getvalue()


@pytest.fixture(scope="module")
def hist(emulator, worker) -> Iterator[History]:
    mp = pytest.MonkeyPatch()
    try:
        dash = make_dash(emulator, worker, mp, paused=False)
        # brain and transcripciones log every attempt; testimonios logs none (Google's
        # default). Two attempts for brain's jobs, and its worker fails both of each job.
        _sampling(dash.client, dash.queues["brain"], 1.0, max_attempts=2)
        _sampling(dash.client, dash.queues["transcripciones"], 1.0)
        worker.respond("/process", [500] * 4)
        log = LoggingServiceV2Client(transport=LoggingServiceV2GrpcTransport(
            channel=grpc.insecure_channel(emulator.target)))
        run = uuid.uuid4().hex[:8]
        mp.setenv("AUDIT_PAYLOADS", "hash")
        hashed, out_hashed = _enqueue(Enqueuer(load_settings()), f"hashed-{run}",
                                      f"user:{OPERATOR}")
        mp.setenv("AUDIT_PAYLOADS", "full")  # the dashboard's too: replay needs it
        enqueuer = Enqueuer(load_settings())
        full, out_full = _enqueue(enqueuer, f"full-{run}", f"user:{OPERATOR}")
        _, out_refused = _enqueue(enqueuer, f"refused-{run}", f"user:{VIEWER}")
        h = History(dash, log, full, f"full-{run}", hashed, f"user:{VIEWER}")
        h.ship(out_hashed + out_full + out_refused)
        since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        wait_until(lambda: {d.task for d in history.dead_letters(
            log, dash.queues["brain"], since).items} >= {full, hashed}, timeout=20,
            interval=0.1, what="both brain jobs failed for good, on record")
        yield h
    finally:
        mp.undo()


# -- dead letters ---------------------------------------------------------------------------


def test_dead_letters_lists_the_jobs_that_failed_for_good_with_their_cause(hist: History):
    at = hist.dead_page()
    assert at.title[0].value == "Dead letters"
    rows = texts(at.markdown)
    for task in (hist.full, hist.hashed):
        assert task.rsplit("/", 1)[1] in rows
    assert "failed for good" in rows and "2 dispatch(es) of 2 allowed" in rows
    # Newest first: the job enqueued second died last.
    assert rows.index(hist.full.rsplit("/", 1)[1]) < rows.index(hist.hashed.rsplit("/", 1)[1])
    # Cloud Tasks logs an HTTP 500 as INTERNAL; the likely cause comes in words, with a fix.
    assert ":red-badge[INTERNAL]" in rows
    assert "The worker failed (INTERNAL)" in texts(at.caption) and "Fix:" in texts(at.caption)
    assert not at.error and not at.warning  # brain's queue logs its attempts
    links = [p for p in at.page_link if p.label == "Every attempt"]
    assert len(links) == 2 and f"task={hist.full}" in links[0].proto.query_string.replace(
        "%2F", "/")

    # The last hour holds them too; the default window is the last 24 hours.
    assert "Page 1: 2 job(s)" in texts(at.caption)
    at.radio(key="dead_window").set_value("1 h").run()
    assert "Page 1: 2 job(s)" in texts(at.caption)


def test_a_task_that_failed_for_good_shows_every_attempt_with_the_final_failure_marked(
        hist: History):
    at = hist.dash.app(QUEUES, queue=hist.queue_id("brain"), task=hist.full)
    assert not at.exception, at.exception
    table = next(d.value for d in at.dataframe if "outcome" in d.value.columns)
    responses = table[table["event"] == "answered"]
    assert responses["dispatch"].to_list() == [1, 2]
    assert responses["outcome"].to_list()[-1] == "✗ failed for good"
    assert responses["outcome"].to_list()[0].startswith("retry at")
    assert "Failed for good" in texts(at.error)
    replay = next(p for p in at.page_link if p.label == "Replay it from Dead letters")
    assert replay.proto.query_string == f"queue={hist.queue_id('brain')}"
    assert "no longer in the queue" in texts(at.info)  # Cloud Tasks forgot it; the logs not


def test_replay_reaches_the_worker_with_the_new_key_and_a_second_is_a_duplicate(
        hist: History):
    at = hist.dead_page(user=OPERATOR)
    opened = next(b for b in at.button if b.label == "Replay…")
    opened.click().run()  # the first row: the job whose payload is on record
    assert json.loads(at.json[0].value) == BRAIN_PAYLOAD
    replay = next(b for b in at.button if b.key.startswith("replay:"))
    assert not replay.disabled
    replay.click().run()
    assert not at.exception, at.exception
    (success,) = at.success
    assert f"linked to {hist.full}" in success.value
    got = hist.dash.receiver.wait_for(lambda rs: any(
        r.header("X-Idempotency-Key") == f"{hist.full_key}-r1" for r in rs))
    replayed = next(r for r in got if r.header("X-Idempotency-Key") == f"{hist.full_key}-r1")
    assert json.loads(replayed.body) == BRAIN_PAYLOAD
    assert any(p.label == "Open the new task on the Queues page" for p in at.page_link)

    next(b for b in at.button if b.key.startswith("replay:")).click().run()
    assert "was replayed already" in texts(at.error)
    assert f"{hist.full_key}-r1" in texts(at.error)


def test_edit_and_replay_opens_the_enqueue_form_with_the_job(hist: History):
    at = hist.dead_page(user=OPERATOR)
    next(b for b in at.button if b.label == "Replay…").click().run()
    next(b for b in at.button if b.key.startswith("edit:")).click().run()
    assert not at.exception, at.exception
    assert f"Replaying task {hist.full}" in texts(at.info)
    raw = next(t for t in at.text_area if t.key == "rawtext:brain")
    assert json.loads(raw.value) == BRAIN_PAYLOAD
    assert at.text_input(key="key_typed").value == f"{hist.full_key}-r1"


def test_without_its_payload_on_record_replay_is_disabled_and_edit_opens_an_empty_form(
        hist: History):
    at = hist.dead_page(user=OPERATOR)
    rows = [b for b in at.button if b.label == "Replay…"]
    rows[1].click().run()  # the job enqueued with AUDIT_PAYLOADS=hash
    assert "AUDIT_PAYLOADS=full" in texts(at.warning)
    replay = next(b for b in at.button if b.key.startswith("replay:"))
    assert replay.disabled and "AUDIT_PAYLOADS=hash" in (replay.help or "")
    next(b for b in at.button if b.key.startswith("edit:")).click().run()
    assert f"Replaying task {hist.hashed}" in texts(at.info)
    assert json.loads(next(t for t in at.text_area if t.key == "rawtext:brain").value) == {}


def test_a_viewer_sees_replay_disabled_saying_why(hist: History):
    at = hist.dead_page(user=VIEWER)
    next(b for b in at.button if b.label == "Replay…").click().run()
    for prefix in ("replay:", "edit:"):
        button = next(b for b in at.button if b.key.startswith(prefix))
        assert button.disabled
        assert f"user:{VIEWER} is a viewer; enqueuing a job needs the" in (button.help or "")


def test_a_queue_that_logs_nothing_says_so_with_the_command_that_turns_logging_on(
        hist: History):
    at = hist.dead_page(service="testimonios")
    assert "Log sampling is off" in texts(at.warning)
    assert (f"gcloud tasks queues update {hist.queue_id('testimonios')} "
            f"--location={LOCATION} --log-sampling-ratio=1.0") in texts(at.code)


# -- activity -------------------------------------------------------------------------------


def activity_rows(at: AppTest) -> list[dict[str, object]]:
    assert not at.exception, at.exception
    return at.dataframe[0].value.to_dict("records") if at.dataframe else []


def test_activity_lists_who_did_what_and_filters_it(hist: History):
    at = hist.dash.app(ACTIVITY, user=VIEWER)
    rows = activity_rows(at)
    mine = [r for r in rows if r["task"] and hist.full in str(r["task"])]
    assert [(r["who"], r["role"], r["via"], r["action"], r["outcome"]) for r in mine] == [
        (f"user:{OPERATOR}", "operator", "api", "enqueue", "ok")]
    assert str(mine[0]["task"]).startswith("/queues?")

    at.text_input(key="act_who").input(VIEWER).run()  # an email stands for its member
    rows = activity_rows(at)
    assert rows and {r["who"] for r in rows} == {hist.refused_by}
    assert {r["outcome"] for r in rows} == {"refused"}

    at.text_input(key="act_who").input("").run()
    at.selectbox(key="act_outcome").set_value("refused").run()
    assert {r["outcome"] for r in activity_rows(at)} == {"refused"}
    at.selectbox(key="act_action").set_value("purge").run()
    assert activity_rows(at) == [] and "Nothing on record" in texts(at.info)

    at.selectbox(key="act_action").set_value("any").run()
    at.selectbox(key="act_outcome").set_value("any").run()
    at.selectbox(key="act_queue").set_value(hist.queue_id("testimonios")).run()
    assert activity_rows(at) == []
    at.selectbox(key="act_queue").set_value(hist.queue_id("brain")).run()
    assert any(hist.full in str(r["task"]) for r in activity_rows(at))


def _attempts_table(at: AppTest) -> pd.DataFrame | None:
    return next((d.value for d in at.dataframe if "outcome" in d.value.columns
                 and "event" in d.value.columns), None)


def test_activity_answers_what_happened_to_a_job(hist: History):
    at = hist.dash.app(ACTIVITY, task=hist.hashed)
    assert not at.exception, at.exception
    table = _attempts_table(at)
    assert table is not None and table["outcome"].to_list()[-1] == "✗ failed for good"
    # The key it was enqueued with is enough: the task is named from it.
    at.selectbox(key="act_job_queue").set_value(hist.queue_id("brain"))
    at.text_input(key="act_task").input(hist.full_key).run()
    assert not at.exception, at.exception
    assert f"Task `{hist.full}`" in texts(at.caption)
    table = _attempts_table(at)
    assert table is not None and table["outcome"].to_list()[-1] == "✗ failed for good"
    # A key nothing was enqueued with: no attempts, said so, no error.
    at.text_input(key="act_task").input("never-enqueued").run()
    assert not at.exception and _attempts_table(at) is None and not at.error
    assert "No attempt on record for this task" in texts(at.caption)


def test_overview_charts_the_last_hours_attempts_and_names_the_queues_not_counted(
        hist: History):
    at = hist.dash.app()
    assert not at.exception, at.exception
    captions = texts(at.caption)
    assert "attempt(s) in the last hour" in captions and "failed" in captions
    assert f"`{hist.queue_id('testimonios')}`" in captions  # its log sampling is off
    assert f"`{hist.queue_id('brain')}`" not in captions
    charts = [json.loads(e.proto.spec) for e in at.main if e.type == "vega_lite_chart"]
    assert any(c["encoding"].get("color", {}).get("field") == "status" for c in charts)


# -- pages of them --------------------------------------------------------------------------


def _final_failure(queue: str, n: int, when: dt.datetime) -> LogEntry:
    """A final failure as Cloud Tasks logs it (Contract C), written by hand."""
    project, location, queue_id = queue.split("/")[1::2]
    return LogEntry.from_json(json.dumps({
        "logName": history.task_log_name(project), "severity": "ERROR",
        "timestamp": when.isoformat().replace("+00:00", "Z"),
        "resource": {"type": "cloud_tasks_queue", "labels": {
            "project_id": project, "location": location, "queue_id": queue_id,
            "target_type": "HTTP"}},
        "jsonPayload": {
            "@type": "type.googleapis.com/google.cloud.tasks.logging.v1.TaskActivityLog",
            "task": f"{queue}/tasks/paged-{n:02}",
            "attemptResponseLog": {"attemptDuration": "0.010s", "dispatchCount": "3",
                                   "responseCount": "3", "maxAttempts": 3,
                                   "status": "UNAVAILABLE", "targetType": "HTTP",
                                   "targetAddress": "POST http://127.0.0.1:9/process"}}}))


def test_dead_letters_and_activity_come_a_page_at_a_time(hist: History):
    queue = hist.dash.queues["transcripciones"]  # it logs, and nothing of it died
    now = dt.datetime.now(dt.UTC)
    hist.log.write_log_entries(entries=[
        _final_failure(queue, n, now - dt.timedelta(minutes=30 - n)) for n in range(21)])
    at = hist.dead_page(service="transcripciones")
    first = texts(at.markdown)
    assert "Page 1: 20 job(s)" in texts(at.caption) and "paged-20" in first
    assert "paged-00" not in first  # newest first: the oldest is on the next page
    at.button(key="dead_next").click().run()
    assert "Page 2: 1 job(s)" in texts(at.caption) and "paged-00" in texts(at.markdown)
    assert at.button(key="dead_next").disabled
    at.button(key="dead_prev").click().run()
    assert texts(at.markdown) == first

    who = f"pager-{uuid.uuid4().hex[:8]}@example.com"
    hist.ship("\n".join(json.dumps(audit_line(
        principal=f"user:{who}", role="admin", via="cli", action="pause",
        target=queue, outcome="ok", request_id=str(n))) for n in range(51)))
    at = hist.dash.app(ACTIVITY, who=who)
    assert len(activity_rows(at)) == 50 and "more on the next pages" in texts(at.caption)
    at.button(key="act_next").click().run()
    assert len(activity_rows(at)) == 1 and at.button(key="act_next").disabled


# -- bad states -----------------------------------------------------------------------------


def test_without_permission_to_read_the_logs_the_pages_say_which_role_to_grant(
        tmp_path, monkeypatch, receiver):
    # Google checks IAM: the dashboard's account may read the queues, not the logs.
    queues = {short: f"noread-{service}" for service, short in SHORT.items()}
    em = start_emulator(tmp_path, f"""
[iam]
enforce = true

[[iam.bindings]]
role = "roles/cloudtasks.viewer"
members = ["serviceAccount:{LOCAL_PRINCIPAL}"]
""" + "".join(f'\n[[queues]]\nname = "{q}"\n' for q in queues.values()))
    try:
        for service, short in SHORT.items():
            monkeypatch.setenv(f"QUEUE_{short}", queues[short])
            monkeypatch.setenv(f"URL_{short}", receiver.url + PATHS[service])
        for var, value in (("CLOUD_TASKS_EMULATOR_HOST", em.target), ("PROJECT_ID", PROJECT),
                           ("TASKS_REGION", LOCATION), ("CALLER_SA", CALLER_SA),
                           ("DASHBOARD_AUTH", "oidc")):
            monkeypatch.setenv(var, value)
        monkeypatch.delenv("WORKERS_FILE", raising=False)
        dash = Dash(em.client(), receiver, {})
        for page in (DEAD, ACTIVITY):
            at = dash.app(page)
            assert not at.exception, (page, at.exception)
            refusal = texts(at.error)
            assert "logging.logEntries.list" in refusal, (page, refusal)
            assert "roles/logging.viewer" in refusal, (page, refusal)
    finally:
        assert em.stop() == 0, "".join(em.stderr)


def _records_view(show: Callable[[], None]) -> AppTest:
    at = AppTest.from_function(show, default_timeout=20).run()
    assert not at.exception, at.exception
    return at


def test_attempts_per_minute_are_coloured_by_status():
    def show() -> None:
        import datetime as dt

        from enqueuer_core.history import MinuteCount
        from pages.history_views import per_minute_chart

        now = dt.datetime(2026, 12, 2, 10, 0, tzinfo=dt.UTC)
        per_minute_chart([MinuteCount(now, "OK", 3), MinuteCount(now, "UNAVAILABLE", 2),
                          MinuteCount(now, "NOT_FOUND", 1)], now - dt.timedelta(hours=1), now)

    at = _records_view(show)
    (chart,) = [e for e in at.main if e.type == "vega_lite_chart"]
    spec = json.loads(chart.proto.spec)
    scale = spec["encoding"]["color"]["scale"]
    assert scale["domain"] == ["OK", "NOT_FOUND", "UNAVAILABLE"]
    assert scale["range"][0] == "#2e7d32"  # success is green

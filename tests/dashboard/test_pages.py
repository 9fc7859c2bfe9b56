"""Every page renders against a real emulator, says what it sees, and never shows a
traceback: not for a failing task, not for a configuration the dashboard cannot use."""

from __future__ import annotations

from google.cloud import tasks_v2
from google.protobuf import duration_pb2, field_mask_pb2

from tests.dashboard.conftest import DASHBOARD, SHORT, Dash
from tests.dashboard.test_queues_page import add_task
from tests.emulator.harness import wait_until

PAGES = ["pages/overview.py", "pages/enqueue.py", "pages/queues.py", "pages/diagnostics.py"]


def texts(elements) -> str:
    return "\n".join(e.value for e in elements)


def slow_retries(dash: Dash, service: str) -> None:
    """A failed attempt is retried a minute later, forever: the task stays to be seen."""
    minute = duration_pb2.Duration(seconds=60)
    dash.client.update_queue(
        queue=tasks_v2.Queue(name=dash.queues[service], retry_config=tasks_v2.RetryConfig(
            max_attempts=-1, min_backoff=minute, max_backoff=minute)),
        update_mask=field_mask_pb2.FieldMask(paths=["retry_config"]))


def test_every_page_renders_and_a_failing_task_is_explained(dash: Dash):
    slow_retries(dash, "brain")
    dash.receiver.respond("/process", [401])
    task = add_task(dash, "brain", "refused", in_s=0)
    wait_until(lambda: dash.client.get_task(name=task).response_count >= 1, timeout=10,
               what="the first attempt was answered")

    at = dash.app()
    assert not at.exception, at.exception
    assert at.title[0].value == "Overview"
    failed = [m.value for m in at.metric if m.label == "failing"]
    assert failed == ["1", "0", "0"]  # brain's queue first
    assert [m.value for m in at.metric if m.label == "tasks"] == ["1", "0", "0"]
    assert {"Enqueue a job", "Browse queues and tasks", "Check the configuration"} <= {
        p.label for p in at.page_link}

    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert not at.error, (page, texts(at.error))

    # The link the Enqueue page gives: the queue, with the task open.
    at = dash.app("pages/queues.py", queue=dash.queues["brain"].rsplit("/", 1)[1], task=task)
    assert not at.exception, at.exception
    explanation = texts(at.error)
    assert "refused the token (401)" in explanation and "audience" in explanation
    link = next(p for p in at.page_link if "Diagnostics" in p.label)
    assert link.proto.query_string == "check=audience"
    charts = [e for e in at.main if e.type == "vega_lite_chart"]
    assert len(charts) == 2  # by last response, by next attempt


def test_a_configuration_error_is_shown_with_its_fix_not_a_traceback(monkeypatch):
    for var in ("CLOUD_TASKS_EMULATOR_HOST", "PROJECT_ID", "TASKS_REGION", "CALLER_SA",
                "WORKERS_FILE", *(f"URL_{s}" for s in SHORT.values())):
        monkeypatch.delenv(var, raising=False)
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(DASHBOARD, default_timeout=20).run()
    assert not at.exception, at.exception
    message = texts(at.error)
    assert "Configuration error" in message
    assert "set PROJECT_ID, TASKS_REGION, CALLER_SA" in message
    assert "CLOUD_TASKS_EMULATOR_HOST" in message

"""What failed for good, and run it again, in a real browser against the whole local stack: a
brain job sent to a wrong path of the worker (404) dies on its only attempt; Dead letters
lists it, Replay sends it again (to the right URL, as the registry has it now) and shows the
new task, linked to the old one; Activity lists the replay among who did what; the task's
details show its attempts; the Overview charts the last hour's attempts."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import re
import uuid
from collections.abc import Iterator

import httpx
import pytest
from google.cloud import tasks_v2
from google.protobuf import duration_pb2, field_mask_pb2
from playwright.sync_api import Page, expect

from enqueuer_core import history
from enqueuer_core.access import Acting
from enqueuer_core.build import EnqueueRequest
from enqueuer_core.clients import logging_client, tasks_client
from enqueuer_core.config import load_settings
from enqueuer_core.enqueue import Enqueuer
from enqueuer_core.log_shipping import entry_from_line
from tests.browser.conftest import (
    OPERATOR,
    Stack,
    assert_no_exception,
    open_page,
    screenshot,
    wait_for_app_run,
)
from tests.browser.test_dashboard import expect_in_table
from tests.emulator.harness import wait_until

BRAIN_PAYLOAD = {"system_instructions_doc_id": "dead-sys", "base_prompt_doc_id": "dead-prompt",
                 "input_doc_id": "dead-in", "output_doc_id": "dead-out"}


def delivered(stack: Stack, key: str) -> bool:
    """The brain worker received a request with ``X-Idempotency-Key: key``."""
    got = httpx.get(f"{stack.services['brain']}/_requests", timeout=5).json()
    got = got.get("requests", got) if isinstance(got, dict) else got
    return any(dict((k.lower(), v) for k, v in r["headers"]).get("x-idempotency-key") == key
               for r in got)


@pytest.fixture
def dead_job(stack: Stack) -> Iterator[tuple[str, str]]:
    """A brain job that failed for good, its enqueue on record with its payload: (task, key).

    The stack's brain queue allows one attempt while the job runs (restored after), and the
    job is enqueued through the core with the worker's URL on a wrong path, its audit line
    shipped into the stack's Logging as the stack ships its services' stdout.
    """
    settings = load_settings(**{**{k.lower(): v for k, v in stack.settings.items()},
                                "audit_payloads": "full",
                                "url_brain": stack.services["brain"] + "/nowhere"})
    queue = settings.queue_path(settings.queue_brain)
    tasks = tasks_client(settings)
    before = tasks.get_queue(name=queue).retry_config
    tasks.update_queue(queue=tasks_v2.Queue(name=queue, retry_config=tasks_v2.RetryConfig(
        max_attempts=1, min_backoff=duration_pb2.Duration(nanos=100_000_000))),
        update_mask=field_mask_pb2.FieldMask(paths=["retry_config"]))
    try:
        key = f"dead-{uuid.uuid4().hex[:8]}"
        enqueuer, out = Enqueuer(settings), io.StringIO()
        with contextlib.redirect_stdout(out):
            task = enqueuer.enqueue(EnqueueRequest(service="brain", payload=BRAIN_PAYLOAD,
                                                   idempotency_key=key),
                                    Acting(f"user:{OPERATOR}", enqueuer.access, "api")).task
        log = logging_client(settings)
        log.write_log_entries(entries=[entry_from_line(
            line, project=settings.project_id, location=settings.tasks_region,
            service="enqueuer-api", revision="enqueuer-api-00001")
            for line in out.getvalue().splitlines() if '"audit"' in line])
        since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        wait_until(lambda: task in {d.task for d in history.dead_letters(
            log, queue, since).items}, timeout=20, interval=0.1, what="the job died")
    finally:
        tasks.update_queue(queue=tasks_v2.Queue(name=queue, retry_config=before),
                           update_mask=field_mask_pb2.FieldMask(paths=["retry_config"]))
    yield task, key


def test_a_dead_job_is_replayed_from_dead_letters_and_activity_opens(
        page: Page, stack: Stack, dead_job: tuple[str, str]) -> None:
    task, key = dead_job
    task_id = task.rsplit("/", 1)[1]
    open_page(page, "/dead-letters?queue=queue-brain")
    expect(page.get_by_role("heading", name="Dead letters", exact=True)).to_be_visible()
    # The row: the innermost block holding both the task's ID and a Replay… button.
    row = page.get_by_test_id("stVerticalBlock").filter(has_text=task_id).filter(
        has=page.get_by_role("button", name="Replay…")).last
    expect(row).to_contain_text("NOT_FOUND")
    row.get_by_role("button", name="Replay…").click()
    wait_for_app_run(page)
    expect(page.get_by_test_id("stMain")).to_contain_text(f"the replay's key {key}-r1")
    page.get_by_role("button", name="Replay", exact=True).click()
    success = page.get_by_test_id("stAlertContentSuccess").filter(has_text="Replayed as")
    expect(success).to_contain_text(re.compile(r"queues/queue-brain/tasks/\S+"))
    expect(success).to_contain_text(f"linked to {task}")
    assert_no_exception(page)
    screenshot(page, "dead-letters-replayed")
    wait_until(lambda: delivered(stack, f"{key}-r1"), timeout=20, interval=0.2,
               what="the replay reached the brain worker with the new key")

    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Activity").click()
    expect(page).to_have_url(re.compile(r"/activity(\?.*)?$"))
    expect(page.get_by_role("heading", name="Activity", exact=True)).to_be_visible()
    wait_for_app_run(page)
    # The replay is on record: the stack ships the dashboard's audit lines to Logging.
    expect_in_table(page, f"{key}-r1")
    expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)
    assert_no_exception(page)
    screenshot(page, "activity")

    # What happened to it: every attempt, though Cloud Tasks has forgotten the task.
    open_page(page, f"/queues?queue=queue-brain&task={task}")
    expect(page.get_by_test_id("stMain")).to_contain_text("no longer in the queue")
    expect(page.get_by_test_id("stAlertContentError")).to_contain_text("Failed for good")
    assert_no_exception(page)
    screenshot(page, "task-attempts")

    # And the last hour's attempts on the Overview, by status.
    open_page(page, "/")
    expect(page.get_by_role("heading", name="Attempts in the last hour")).to_be_visible()
    expect(page.get_by_test_id("stVegaLiteChart").last).to_be_visible()
    screenshot(page, "overview-attempts")

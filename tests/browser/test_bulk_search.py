"""Bulk actions, payload search and "Enqueue again…" in a real browser, on one load of the
Queues page: the search finds tasks by a nested payload field, the bulk panel counts them,
asks for a confirmation and deletes them with a progress bar, and "Enqueue again…" opens
the Enqueue form filled with a task's job."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import uuid

from google.api_core import exceptions as gexc
from google.cloud import tasks_v2
from google.protobuf import timestamp_pb2
from playwright.sync_api import Page, expect

from enqueuer_core.clients import tasks_client
from enqueuer_core.config import load_settings
from tests.browser.conftest import Stack, assert_no_exception, open_page, screenshot


def later() -> timestamp_pb2.Timestamp:
    """An hour from now: the local worker does not run the tasks while the test looks."""
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    return ts


def test_search_bulk_delete_and_enqueue_again(page: Page, stack: Stack) -> None:
    settings = load_settings(**{k.lower(): v for k, v in stack.settings.items()})
    client = tasks_client(settings)
    queue = settings.queue_path(settings.queue_trans)
    url = settings.url_trans
    marker = f"bulk-{uuid.uuid4().hex[:8]}"

    def task(payload: dict) -> str:
        return client.create_task(parent=queue, task=tasks_v2.Task(
            schedule_time=later(), http_request=tasks_v2.HttpRequest(
                url=url, http_method=tasks_v2.HttpMethod.POST,
                headers={"Content-Type": "application/json"},
                body=json.dumps(payload).encode()))).name

    for i in range(3):
        task({"job": {"ref": marker}, "n": i})
    again = task({"audio": "gs://bucket/again.wav", "lang": "es"})
    try:
        look_and_act(page, client, queue, marker, again)
    finally:  # the stack is shared: leave its queue as it was
        with contextlib.suppress(gexc.NotFound):
            client.delete_task(name=again)


def look_and_act(page: Page, client: tasks_v2.CloudTasksClient, queue: str, marker: str,
                 again: str) -> None:
    open_page(page, f"/queues?queue={queue.rsplit('/', 1)[1]}&task={again}")
    main = page.get_by_test_id("stMain")

    # Search by a nested payload field: the progress, then the matches.
    page.get_by_role("tab", name=re.compile("Search by payload field")).click()
    page.get_by_label("Payload field", exact=True).last.fill(f"job.ref={marker}")
    page.get_by_test_id("stTabs").get_by_role("button", name="Search", exact=True).click()
    expect(main).to_contain_text(re.compile(r"3 match\(es\) in \d+ task\(s\)"))
    expect(page.get_by_test_id("stProgress").last).to_contain_text("page(s) read")

    # Bulk: count first, confirm, then the progress bar and the outcome.
    page.get_by_role("tab", name=re.compile("Bulk actions")).click()
    page.get_by_label("Text in the name, key or payload").fill(marker)
    page.get_by_role("button", name="Count the matching tasks").click()
    expect(main).to_contain_text(f"3 task(s) match text '{marker}'")
    page.get_by_role("button", name="Delete all 3").click()
    page.get_by_text("I understand: delete 3 task(s)").click()
    page.get_by_role("button", name="Confirm: delete 3").click()
    expect(main).to_contain_text("Deleted 3 of 3 task(s).")
    expect(page.get_by_test_id("stProgress").first).to_contain_text("Delete: 3 of 3")
    assert_no_exception(page)
    screenshot(page, "bulk-deleted")
    left = [t.name for t in client.list_tasks(request=tasks_v2.ListTasksRequest(
        parent=queue, response_view=tasks_v2.Task.View.FULL)) if marker.encode() in
        t.http_request.body]
    assert left == []

    # "Enqueue again…" on the linked task: the Enqueue form, filled with its job.
    page.get_by_role("button", name="Enqueue again…").click()
    expect(page).to_have_url(re.compile(r"/enqueue"))
    expect(main).to_contain_text("again")
    raw = page.get_by_role("textbox", name="Payload (JSON) *")
    expect(raw).to_have_value(re.compile(r'"audio": "gs://bucket/again.wav"'))
    expect(main).to_contain_text("Transcribes audio")  # the worker picked: transcripciones
    assert_no_exception(page)
    screenshot(page, "enqueue-again")

"""The dashboard in a real browser against the whole local stack: every page opens from
the sidebar with no exception, and a brain job enqueued through the form shows up on the
Queues page. Screenshots of each page land in test-artifacts/screenshots/."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import (
    assert_no_exception,
    open_page,
    screenshot,
    wait_for_app_run,
)

# Sidebar label -> (URL path, the page's heading).
PAGES = {
    "Overview": ("/", "Overview"),
    "Enqueue": ("/enqueue", "Enqueue a job"),
    "Queues": ("/queues", "Queues"),
    "Diagnostics": ("/diagnostics", "Diagnostics"),
}
BRAIN_FIELDS = ("system_instructions_doc_id", "base_prompt_doc_id", "input_doc_id",
                "output_doc_id")
# Far enough ahead that the local brain (which answers 200) does not run the job, and the
# task stays in the queue for the Queues page to show.
SCHEDULE_IN_S = 3600
_TASK_NAME = re.compile(r"projects/[^/\s]+/locations/[^/\s]+/queues/queue-brain/tasks/"
                        r"([A-Za-z0-9_-]+)")


def go_to(page: Page, label: str) -> None:
    """Follow the sidebar link ``label``; wait for its page to have run."""
    path, heading = PAGES[label]
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=label).click()
    expect(page).to_have_url(re.compile(re.escape(path) + r"(\?.*)?$"))
    expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    wait_for_app_run(page)


@pytest.mark.parametrize("label", list(PAGES))
def test_every_page_opens_from_the_sidebar_with_no_exception(page: Page, label: str) -> None:
    open_page(page, "/")
    if label != "Overview":
        go_to(page, label)
    expect(page.get_by_role("heading", name=PAGES[label][1], exact=True)).to_be_visible()
    assert_no_exception(page)
    # The local stack is set up correctly: no page has anything to complain about.
    expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)
    screenshot(page, f"page-{label.lower()}")


def test_overview_shows_each_queue(page: Page) -> None:
    open_page(page, "/")
    for queue in ("queue-brain", "queue-testimonios", "queue-transcripciones"):
        # The workers table also holds the names, in hidden grid cells: look at what shows.
        expect(page.get_by_text(queue, exact=False).filter(visible=True).first).to_be_visible()
    assert_no_exception(page)


def test_a_job_enqueued_from_the_form_appears_on_the_queues_page(page: Page) -> None:
    open_page(page, "/")
    go_to(page, "Enqueue")
    # brain is the first worker, and so the one selected.
    expect(page.get_by_test_id("stMain")).to_contain_text("Queue queue-brain")
    for field in BRAIN_FIELDS:
        page.get_by_label(f"{field} *", exact=True).fill(f"browser-{field}")
    page.get_by_label(f"{BRAIN_FIELDS[-1]} *", exact=True).press("Enter")
    page.get_by_text("In N seconds", exact=True).click()
    seconds = page.get_by_label("Seconds from now", exact=True)
    seconds.fill(str(SCHEDULE_IN_S))
    seconds.press("Enter")
    # The preview is drawn only for a complete, valid request: the form took every value.
    expect(page.get_by_text("Preview of the task")).to_be_visible()
    expect(seconds).to_have_value(str(SCHEDULE_IN_S))
    wait_for_app_run(page)

    page.get_by_role("button", name="Enqueue").click()
    success = page.get_by_test_id("stAlertContentSuccess").filter(has_text="Enqueued")
    expect(success).to_contain_text(_TASK_NAME)
    expect(success).to_contain_text("to run at")
    found = _TASK_NAME.search(success.inner_text())
    assert found, success.inner_text()
    task_id = found.group(1)
    assert_no_exception(page)
    screenshot(page, "enqueue-submitted")

    # The result's link opens the task on the Queues page.
    page.get_by_role("link", name=re.compile("Open the task on the Queues page")).click()
    expect(page).to_have_url(re.compile(r"/queues\?queue=queue-brain&task="))
    expect(page.get_by_text(f"Task {task_id}")).to_be_visible()
    wait_for_app_run(page)
    assert_no_exception(page)

    # And it is in queue-brain's table, which the Queues page shows by itself too.
    open_page(page, "/queues?queue=queue-brain")
    expect(page.get_by_role("heading", name="queue-brain")).to_be_visible()
    assert_no_exception(page)
    screenshot(page, "queues-brain")
    expect_in_table(page, task_id)


def expect_in_table(page: Page, text: str) -> None:
    """``text`` is in a cell of the page's table.

    st.dataframe draws its cells on a canvas, out of the DOM: the table's own search (its
    toolbar's Search, as an operator would use it) says how many cells match.
    """
    table = page.get_by_test_id("stDataFrame")
    expect(table).to_be_visible()
    table.hover()
    table.get_by_role("button", name="Search").click()
    page.keyboard.type(text)
    expect(table.get_by_test_id("search-result-area")).to_have_text(
        re.compile(r"^[1-9]\d* results?$"))

"""Who may do what, in a real browser: users log in through the emulator's identity
provider; a viewer sees every action disabled with the reason, and the API refuses their
token too; an operator's job reaches the brain worker; behind IAP, the dashboard knows its
user from IAP's signed header only."""

from __future__ import annotations

import re
import uuid

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import (
    ADMIN,
    IAP_AUDIENCE,
    OPERATOR,
    VIEWER,
    Stack,
    Visits,
    assert_no_exception,
    open_page,
    screenshot,
    wait_for_app_run,
)
from tests.browser.iap_proxy import iap_front
from tests.emulator.harness import wait_until
from tests.tokens import bearer, iap_assertion

BRAIN_PAYLOAD = {"system_instructions_doc_id": "doc-sys", "base_prompt_doc_id": "doc-prompt",
                 "input_doc_id": "doc-in", "output_doc_id": "doc-out"}
_KEY = re.compile(r"Idempotency key: (\S+?)\.?$", re.MULTILINE)


def sidebar(page: Page):
    return page.get_by_test_id("stSidebarUserContent")


def main(page: Page):
    return page.get_by_test_id("stMain")


def delivered(stack: Stack, key: str) -> list[dict]:
    """What the brain worker received with ``X-Idempotency-Key: key``."""
    got = httpx.get(f"{stack.services['brain']}/_requests", timeout=5).json()
    got = got.get("requests", got) if isinstance(got, dict) else got
    return [r for r in got
            if dict((k.lower(), v) for k, v in r["headers"]).get("x-idempotency-key") == key]


def test_a_viewer_sees_every_action_disabled_saying_why_and_the_api_refuses_them(
        visit: Visits, stack: Stack) -> None:
    # A task for the viewer to look at, enqueued by an operator through the API.
    later = httpx.post(f"{stack.api}/enqueue", timeout=10,
                       headers=bearer(stack.emulator_http, OPERATOR, stack.api_audience),
                       json={"service": "brain", "payload": BRAIN_PAYLOAD,
                             "schedule_in_s": 3600,
                             "idempotency_key": f"seen-{uuid.uuid4().hex[:8]}"})
    assert later.status_code == 200, later.text
    task = later.json()["task"]

    page = visit(VIEWER)
    open_page(page, "/enqueue")
    expect(sidebar(page)).to_contain_text(VIEWER)
    expect(sidebar(page)).to_contain_text("Role: viewer")
    expect(page.get_by_role("button", name="Enqueue")).to_be_disabled()
    expect(main(page)).to_contain_text(f"user:{VIEWER} is a viewer; enqueuing a job needs "
                                       "the operator role")
    assert_no_exception(page)

    open_page(page, f"/queues?queue=queue-brain&task={task}")
    for name in ("Pause", "Resume", "Purge"):
        expect(page.get_by_role("button", name=name, exact=True)).to_be_disabled()
    for name in ("Run now (1)", "Delete (1)"):
        expect(page.get_by_role("button", name=name)).to_be_disabled()
    expect(main(page)).to_contain_text("pausing a queue needs the admin role")
    expect(main(page)).to_contain_text("running a task now needs the operator role")
    # The button's own tooltip says why, too.
    purge = page.get_by_role("button", name="Purge", exact=True)
    page.get_by_test_id("stTooltipHoverTarget").filter(has=purge).hover()
    expect(page.get_by_test_id("stTooltipContent")).to_contain_text(
        'purging a queue needs the admin role. An admin grants it with this line under '
        '[access]')
    expect(page.get_by_test_id("stTooltipContent")).to_contain_text(
        f'"user:{VIEWER}" = "admin"')
    assert_no_exception(page)
    screenshot(page, "queues-as-viewer")

    # The API refuses the viewer's own token as well.
    refused = httpx.post(f"{stack.api}/enqueue", timeout=10,
                         headers=bearer(stack.emulator_http, VIEWER, stack.api_audience),
                         json={"service": "brain", "payload": BRAIN_PAYLOAD})
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "forbidden"
    assert f"user:{VIEWER}" in refused.json()["error"]["message"]


def test_an_operator_enqueues_from_the_form_and_the_worker_gets_it(
        visit: Visits, stack: Stack) -> None:
    page = visit(OPERATOR)
    open_page(page, "/enqueue")
    expect(sidebar(page)).to_contain_text("Role: operator")
    for field, value in BRAIN_PAYLOAD.items():
        page.get_by_label(f"{field} *", exact=True).fill(value)
    page.get_by_label("output_doc_id *", exact=True).press("Enter")
    expect(page.get_by_text("Preview of the task")).to_be_visible()
    wait_for_app_run(page)
    enqueue = page.get_by_role("button", name="Enqueue")
    expect(enqueue).to_be_enabled()
    enqueue.click()
    success = page.get_by_test_id("stAlertContentSuccess").filter(has_text="Enqueued")
    expect(success).to_contain_text("Idempotency key")
    found = _KEY.search(success.inner_text())
    assert found, success.inner_text()
    key = found.group(1).strip("`")

    (got,) = wait_until(lambda: delivered(stack, key), timeout=20, interval=0.1,
                        what="the brain worker received the operator's job")
    assert got["body"] == BRAIN_PAYLOAD

    open_page(page, "/queues?queue=queue-brain")
    for name in ("Pause", "Purge"):
        expect(page.get_by_role("button", name=name, exact=True)).to_be_disabled()
    expect(main(page)).to_contain_text(f"user:{OPERATOR} is an operator; pausing a queue "
                                       "needs the admin role")
    assert_no_exception(page)


def test_log_out_then_the_login_page_only(visit: Visits) -> None:
    page = visit(ADMIN)
    open_page(page, "/")
    sidebar(page).get_by_role("button", name="Log out").click()
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    wait_for_app_run(page)
    expect(page.get_by_test_id("stSidebarNav")).to_have_count(0)
    expect(main(page)).not_to_contain_text("Overview")


def test_behind_iap_the_signed_assertion_says_who_and_the_plain_header_is_ignored(
        visit: Visits, stack: Stack, iap_dashboard: str) -> None:
    assertion = iap_assertion(stack.emulator_http, OPERATOR, IAP_AUDIENCE)
    # IAP adds its assertion to every request it lets through, the websocket's included.
    with iap_front(iap_dashboard, {"x-goog-iap-jwt-assertion": assertion}) as through_iap:
        page = visit(None, base_url=through_iap)
        open_page(page, "/queues?queue=queue-brain")
        expect(sidebar(page)).to_contain_text(OPERATOR)
        expect(sidebar(page)).to_contain_text("Role: operator")
        expect(page.get_by_role("button", name="Purge", exact=True)).to_be_disabled()
        assert_no_exception(page)

    # A door that is not IAP, passing a plain identity header anyone could send.
    forged_header = {"X-Goog-Authenticated-User-Email": f"accounts.google.com:{ADMIN}"}
    with iap_front(iap_dashboard, forged_header) as not_iap:
        forged = visit(None, base_url=not_iap)
        open_page(forged, "/queues?queue=queue-brain")
        expect(main(forged)).to_contain_text("You are not let in")
        expect(main(forged)).to_contain_text("No x-goog-iap-jwt-assertion header")
        expect(forged.get_by_test_id("stSidebarNav")).to_have_count(0)
        expect(forged.get_by_role("heading", name="Queues")).to_have_count(0)

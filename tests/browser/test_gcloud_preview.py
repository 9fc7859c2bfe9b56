"""The Enqueue page's gcloud command, run as printed, makes the task the form's Enqueue makes.

The operator's way, step by step: fill brain's form with a schedule and a typed key, open the
preview, copy its gcloud block (on the local stack, the line that points gcloud at the
emulator, then the command) and run it in a shell; then type another key and press Enqueue. Both
tasks are read back through the gRPC client and compared field by field.

Why two keys: the preview pins the key, and the key names the task, so the command and the
form would make the same task name, and the second would be refused as a duplicate. Deleting
the first does not help: Cloud Tasks reserves a deleted task's name (its tombstone) for
hours. With a second key the two tasks differ where they must, in their names and their
X-Idempotency-Key headers, and nowhere else but the dispatch deadline, for which gcloud has no
flag. The schedule is a fixed date and time, which the page keeps across its reruns (a
schedule "in N seconds" is counted from each rerun's now).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import uuid

from google.api_core import exceptions as gexc
from google.cloud import tasks_v2
from playwright.sync_api import Page, expect

from enqueuer_core.clients import tasks_client
from enqueuer_core.config import load_settings
from enqueuer_core.task_names import task_id_for_key
from tests.browser.conftest import (
    ENQUEUER,
    Stack,
    assert_no_exception,
    open_page,
    screenshot,
    wait_for_app_run,
)
from tests.gcloud.harness import require_gcloud

# What an operator may type: quotes, a dollar sign, a backslash, accents, spaces. The
# command must carry them through the shell unchanged.
BRAIN = {"system_instructions_doc_id": "sys-1", "base_prompt_doc_id": "it's $HOME",
         "input_doc_id": 'say "hi" \\ café', "output_doc_id": "out 1"}
_TASK_NAME = re.compile(r"projects/[^/\s]+/locations/[^/\s]+/queues/queue-brain/tasks/"
                        r"[A-Za-z0-9_-]+")


def type_key(page: Page, key: str) -> None:
    field = page.get_by_label("Key *", exact=True)
    field.fill(key)
    field.press("Enter")
    wait_for_app_run(page)


def printed_gcloud(page: Page, key: str) -> str:
    """The preview's gcloud block, once the preview is the one for ``key``."""
    preview = page.get_by_test_id("stExpander").filter(has_text="Preview of the task")
    if not preview.locator("[data-testid='stCode']").first.is_visible():
        preview.get_by_text("Preview of the task").click()
    code = preview.get_by_test_id("stCode").filter(has_text="gcloud tasks create-http-task")
    expect(code).to_contain_text(task_id_for_key(key))
    return code.locator("code").inner_text().strip()


def run_as_printed(stack: Stack, block: str, config: str) -> str:
    """The block in a shell as a user pastes it (``ENQUEUER_STATE`` finds this stack, which
    runs on ephemeral ports), with a gcloud configuration of its own; what gcloud said."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDSDK_")}
    done = subprocess.run(["bash", "-c", block], capture_output=True, text=True, timeout=60,
                          env=env | {"ENQUEUER_STATE": str(stack.state),
                                     "CLOUDSDK_CONFIG": config})
    assert done.returncode == 0, (block, done.stdout, done.stderr)
    return done.stderr


def test_the_printed_gcloud_command_makes_the_task_the_form_makes(
        page: Page, stack: Stack, tmp_path) -> None:
    require_gcloud()
    settings = load_settings(**{k.lower(): v for k, v in stack.settings.items()})
    client = tasks_client(settings)
    first, second = (f"gcloud-preview-{uuid.uuid4().hex[:8]}-{n}" for n in (1, 2))
    made: list[str] = []
    try:
        open_page(page, "/enqueue")
        expect(page.get_by_test_id("stMain")).to_contain_text("Queue queue-brain")
        for field, value in BRAIN.items():
            page.get_by_label(f"{field} *", exact=True).fill(value)
        page.get_by_label(f"{list(BRAIN)[-1]} *", exact=True).press("Enter")
        page.get_by_text("At a date and time (UTC)", exact=True).click()
        wait_for_app_run(page)
        # The page proposes the next whole minute an hour from now.
        expect(page.get_by_test_id("stMain")).to_contain_text("Runs at ")
        expect(page.get_by_text("is in the past")).to_have_count(0)
        page.get_by_text("Typed", exact=True).click()
        wait_for_app_run(page)
        type_key(page, first)

        block = printed_gcloud(page, first)
        # On the local stack the block first points gcloud at the emulator, as the dev
        # banner's gcloud line does; then the command, as it would run against Google.
        setup, command = block.split("\n", 2)[1:]
        assert setup == f'eval "$({shlex.quote(ENQUEUER)} --local gcloud-env)"', block
        assert command.startswith("gcloud tasks create-http-task "), block
        said = run_as_printed(stack, block, str(tmp_path / "gcloud"))
        (by_gcloud,) = _TASK_NAME.findall(said)
        made.append(by_gcloud)
        assert by_gcloud.endswith("/tasks/" + task_id_for_key(first)), said

        type_key(page, second)
        printed_gcloud(page, second)  # the preview follows the new key
        page.get_by_role("button", name="Enqueue").click()
        success = page.get_by_test_id("stAlertContentSuccess").filter(has_text="Enqueued")
        expect(success).to_contain_text("to run at")
        (by_form,) = _TASK_NAME.findall(success.inner_text())
        made.append(by_form)
        assert_no_exception(page)
        screenshot(page, "enqueue-gcloud-preview")

        a, b = (client.get_task(request=tasks_v2.GetTaskRequest(
            name=name, response_view=tasks_v2.Task.View.FULL)) for name in made)
        compare(a, b, first, second)
    finally:  # the stack is shared: leave queue-brain as it was
        for name in made:
            with contextlib.suppress(gexc.NotFound):
                client.delete_task(name=name)


def compare(a: tasks_v2.Task, b: tasks_v2.Task, key_a: str, key_b: str) -> None:
    """``a`` (gcloud's) and ``b`` (the form's) are the same job."""
    ha, hb = a.http_request, b.http_request
    assert (ha.url, ha.http_method) == (hb.url, hb.http_method)
    assert ha.http_method == tasks_v2.HttpMethod.POST
    headers_a, headers_b = dict(ha.headers), dict(hb.headers)
    assert (headers_a.pop("X-Idempotency-Key"), headers_b.pop("X-Idempotency-Key")) == (
        key_a, key_b)
    assert headers_a == headers_b and headers_a["Content-Type"] == "application/json"
    assert ha.body == hb.body
    assert "it's $HOME" in ha.body.decode()  # the shell passed it through as it is
    assert (ha.oidc_token.audience, ha.oidc_token.service_account_email) == (
        hb.oidc_token.audience, hb.oidc_token.service_account_email)
    assert hb.oidc_token.audience and hb.oidc_token.service_account_email
    assert a.schedule_time == b.schedule_time
    # gcloud cannot set the deadline: Cloud Tasks' default (10 minutes), not brain's 700 s.
    assert (a.dispatch_deadline.total_seconds(), b.dispatch_deadline.total_seconds()) == (
        600, 700)

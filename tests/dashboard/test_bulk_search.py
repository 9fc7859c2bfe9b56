"""The Queues page's bulk actions and payload search, and "Enqueue again…" landing on the
Enqueue form filled with the task's job."""

from __future__ import annotations

import json

from tests.dashboard.conftest import BRAIN_PAYLOAD, VIEWER, Dash, audit_lines
from tests.dashboard.test_queues_page import add_task, queue_page, select, texts
from tests.emulator.harness import http_task

ENQUEUE, QUEUES = "pages/enqueue.py", "pages/queues.py"


def test_enqueue_again_opens_the_form_filled_with_the_tasks_job(idle_dash: Dash, capsys):
    payload = {**BRAIN_PAYLOAD, "input_doc_id": "doc-again"}
    old = idle_dash.client.create_task(parent=idle_dash.queues["brain"], task=http_task(
        idle_dash.receiver.url + "/process", body=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "X-Idempotency-Key": "first-run"})).name
    at = queue_page(idle_dash, "brain")
    select(at, [0])
    at.button(key=f"again:{old}").click().run()
    assert not at.exception, at.exception
    # The app switched pages itself (st.switch_page); AppTest's next runs follow only its
    # own switch_page, which keeps what the run set in the session.
    at.switch_page(ENQUEUE)

    # The Enqueue page: the worker, the payload in the raw JSON editor, a note saying why.
    assert at.selectbox(key="worker").value == "brain"
    assert at.toggle(key="raw:brain").value is True
    assert json.loads(at.text_area(key="rawtext:brain").value) == payload
    assert at.radio(key="key_mode").value == "Automatic"
    note = texts(at.info)
    assert old.rsplit("/", 1)[1] in note and "first-run" in note and old in note

    # Edited, then enqueued: a new task with the new payload, on record as a replay.
    edited = {**payload, "output_doc_id": "doc-out-2"}
    at.text_area(key="rawtext:brain").input(json.dumps(edited)).run()
    capsys.readouterr()
    at.button(key="submit").click().run()
    assert not at.exception, at.exception
    assert len(at.success) == 1, texts(at.error)
    tasks = {t.name: json.loads(t.http_request.body) for t in idle_dash.tasks("brain")}
    (new,) = set(tasks) - {old}
    assert tasks[new] == edited and new in at.success[0].value
    (line,) = audit_lines(capsys.readouterr().out)
    assert (line["action"], line["task"], line["outcome"], line.get("replay_of")) == (
        "enqueue", new, "ok", old)
    assert not at.info  # enqueued: the form no longer says it replays the task

    # Taken once: away and back, the usual form.
    at.switch_page(QUEUES).run()
    at.switch_page(ENQUEUE).run()
    assert not at.exception, at.exception
    assert at.toggle(key="raw:brain").value is False
    assert not at.info


def test_enqueue_again_says_why_not_for_a_body_that_is_not_json_and_for_a_viewer(
        idle_dash: Dash):
    text = idle_dash.client.create_task(parent=idle_dash.queues["brain"], task=http_task(
        idle_dash.receiver.url + "/process", body=b"plain words")).name
    job = add_task(idle_dash, "brain", "viewed")
    at = queue_page(idle_dash, "brain")
    select(at, [0, 1])
    button = at.button(key=f"again:{text}")
    assert button.disabled and "not a JSON object" in button.help
    assert "not a JSON object" in texts(at.caption)
    assert not at.button(key=f"again:{job}").disabled

    at = queue_page(idle_dash, "brain", user=VIEWER)
    select(at, [0, 1])
    button = at.button(key=f"again:{job}")
    assert button.disabled and "enqueuing a job needs the operator role" in button.help

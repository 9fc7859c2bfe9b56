"""The Queues page's bulk actions and payload search, and "Enqueue again…" landing on the
Enqueue form filled with the task's job."""

from __future__ import annotations

import datetime as dt
import json

from google.protobuf import timestamp_pb2
from streamlit.testing.v1 import AppTest

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


# -- bulk actions ---------------------------------------------------------------------------


def job(dash: Dash, service: str, payload: dict) -> str:
    """A task for ``service`` with this payload, due in an hour; its full name."""
    path = {"brain": "/process"}.get(service, "/" + service)
    return dash.client.create_task(parent=dash.queues[service], task=http_task(
        dash.receiver.url + path, body=json.dumps(payload).encode(),
        schedule_time=later(3600))).name


def later(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds))
    return ts


def count(at: AppTest, **filters: str) -> str:
    """Fill the bulk filter, count; what the panel says about the count."""
    for key, value in filters.items():
        at.text_input(key=f"bulk_{key}").input(value)
    at.button(key="bulk_count").click().run()
    assert not at.exception, at.exception
    return texts(at.markdown)


def test_delete_all_counts_first_confirms_and_lists_the_task_already_gone(
        idle_dash: Dash, capsys):
    chosen = [job(idle_dash, "testimonios", {"doc": {"id": "doc-x"}, "n": i}) for i in range(3)]
    kept = [job(idle_dash, "testimonios", {"doc": {"id": "doc-y"}, "n": i}) for i in range(2)]
    at = queue_page(idle_dash, "testimonios")
    assert "**3** task(s) match *doc.id=doc-x* of 5" in count(at, field="doc.id=doc-x")
    assert at.button(key="bulk_delete").label == "Delete all 3"

    at.button(key="bulk_delete").click().run()
    assert "Delete all 3 task(s)" in texts(at.warning)
    at.button(key="bulk_do").click().run()  # not ticked
    assert "Nothing done" in texts(at.error)
    assert len(idle_dash.tasks("testimonios")) == 5

    idle_dash.client.delete_task(name=chosen[0])  # by someone else, after the count
    next(c for c in at.checkbox if c.key.startswith("bulk_confirm:delete:")).check().run()
    capsys.readouterr()
    at.button(key="bulk_do").click().run()
    assert not at.exception, at.exception
    # The finished bar, the outcome, the task that could not be deleted and why.
    (bar,) = at.get("progress")
    assert "Delete: 3 of 3 (1 failed)" in bar.proto.text
    assert "Deleted 2 of 3 task(s). 1 could not be deleted" in texts(at.warning)
    failures = next(d.value for d in at.dataframe if "why" in d.value.columns)
    assert failures["task"].to_list() == [chosen[0].rsplit("/", 1)[1]]
    assert "does not exist" in failures["why"][0]
    assert sorted(t.name for t in idle_dash.tasks("testimonios")) == sorted(kept)
    (line,) = audit_lines(capsys.readouterr().out)
    assert (line["action"], line["count"], line["done"], line["failed"], line["via"]) == (
        "delete", 3, 2, 1, "dashboard")


def test_run_all_dispatches_the_matching_tasks_of_a_paused_queue(idle_dash: Dash):
    ran = [job(idle_dash, "brain", {**BRAIN_PAYLOAD, "input_doc_id": f"run-{i}"})
           for i in range(2)]
    job(idle_dash, "brain", {**BRAIN_PAYLOAD, "input_doc_id": "stays"})
    at = queue_page(idle_dash, "brain")
    assert "**2** task(s) match *text 'run-'*" in count(at, text="run-")
    at.button(key="bulk_run").click().run()
    next(c for c in at.checkbox if c.key.startswith("bulk_confirm:run:")).check().run()
    at.button(key="bulk_do").click().run()
    assert not at.exception, at.exception
    assert "Ran 2 of 2 task(s)." in texts(at.success)
    got = idle_dash.receiver.wait_for(lambda rs: len(rs) >= 2)
    assert sorted(json.loads(r.body)["input_doc_id"] for r in got) == ["run-0", "run-1"]
    assert {r.header("X-CloudTasks-TaskName") for r in got} == {n.rsplit("/", 1)[1]
                                                                 for n in ran}


def test_a_viewer_counts_but_the_bulk_buttons_are_disabled_saying_why(idle_dash: Dash):
    job(idle_dash, "brain", BRAIN_PAYLOAD)
    at = queue_page(idle_dash, "brain", user=VIEWER)
    assert "**1** task(s) match *every task*" in count(at)
    for key, doing in (("bulk_run", "running a task now"), ("bulk_delete", "deleting a task")):
        button = at.button(key=key)
        assert button.disabled and f"{doing} needs the operator role" in button.help
    assert "running a task now needs the operator role" in texts(at.caption)


# -- search by payload field ----------------------------------------------------------------


def test_search_by_a_nested_payload_field_shows_the_matches(idle_dash: Dash):
    hit = job(idle_dash, "testimonios", {"person": {"name": "Ana"}, "lines": 3})
    job(idle_dash, "testimonios", {"person": {"name": "Luis"}, "lines": 3})
    at = queue_page(idle_dash, "testimonios")
    at.text_input(key="search_expr").input("person.name")
    at.button(key="search_go").click().run()
    assert "write FIELD=VALUE" in texts(at.error)  # a bad expression says what to write

    at.text_input(key="search_expr").input("person.name=Ana")
    at.button(key="search_go").click().run()
    assert not at.exception, at.exception
    assert "**1** match(es) in 2 task(s)" in texts(at.markdown)
    (bar,) = at.get("progress")
    assert "1 page(s) read, 2 task(s) seen, 1 match(es)" in bar.proto.text
    table = next(d for d in at.dataframe if "value" in d.value.columns)
    assert table.value["task"].to_list() == [hit.rsplit("/", 1)[1]]
    assert table.value["value"].to_list() == ["Ana"]
    at.run()  # the results stay while the operator looks at them
    assert "**1** match(es) in 2 task(s)" in texts(at.markdown)

"""The Enqueue page: the form made from the worker's schema creates the task it previews;
bad input is flagged where it is and creates nothing."""

from __future__ import annotations

import datetime as dt
import json
import uuid

from streamlit.testing.v1 import AppTest

from pages.common import PREFILL, EnqueuePrefill
from tests.dashboard.conftest import BRAIN_PAYLOAD, Dash

ENQUEUE = "pages/enqueue.py"


def field(at: AppTest, name: str):
    """The form's widget for the top-level payload field ``name``."""
    return next(w for w in at.text_input if w.key and w.key.endswith(f":/{name}"))


def fill(at: AppTest, payload: dict[str, str]) -> None:
    for name, value in payload.items():
        field(at, name).input(value)
    at.run()


def typed_key(at: AppTest, key: str) -> None:
    at.radio(key="key_mode").set_value("Typed").run()
    at.text_input(key="key_typed").input(key).run()


def submit(at: AppTest) -> AppTest:
    at.button(key="submit").click().run()
    assert not at.exception, at.exception
    return at


def texts(elements) -> str:
    return "\n".join(e.value for e in elements)


def test_the_form_enqueues_the_previewed_task_and_links_to_it(dash: Dash):
    at = dash.app(ENQUEUE)
    assert not at.exception
    assert at.selectbox(key="worker").value == "brain"
    # Required fields are marked.
    assert all(field(at, name).label.endswith(" *") for name in BRAIN_PAYLOAD)
    fill(at, BRAIN_PAYLOAD)
    key = f"form-{uuid.uuid4().hex[:8]}"
    typed_key(at, key)
    preview = texts(at.code)
    assert "curl -s -X POST http://127.0.0.1:8080/enqueue" in preview
    assert "gcloud tasks create-http-task" in preview
    # On the emulator the gcloud block first points gcloud at it (enqueuer --local gcloud-env).
    assert "--local gcloud-env)\"\ngcloud tasks create-http-task" in preview
    assert f"--queue={dash.queues['brain'].rsplit('/', 1)[1]}" in preview

    submit(at)
    (success,) = at.success
    assert dash.queues["brain"] + "/tasks/" in success.value
    task = success.value.split("**")[1]
    # The preview named the task that was created.
    assert task in at.dataframe[0].value["value"].to_list()
    link = next(p for p in at.page_link if "Queues page" in p.label)
    assert task.rsplit("/", 1)[1] in link.proto.query_string

    (got,) = dash.receiver.wait_for(lambda rs: any(r.path == "/process" for r in rs))
    assert json.loads(got.body) == BRAIN_PAYLOAD
    assert got.header("X-Idempotency-Key") == key


def test_a_second_submit_with_the_same_key_names_the_existing_task(idle_dash: Dash):
    at = idle_dash.app(ENQUEUE)
    fill(at, BRAIN_PAYLOAD)
    typed_key(at, f"twice-{uuid.uuid4().hex[:8]}")
    submit(at)
    (task,) = [t.name for t in idle_dash.tasks("brain")]
    assert task in at.success[0].value

    submit(at)
    assert not at.success
    message = texts(at.error)
    assert "already queued" in message and task in message
    assert [t.name for t in idle_dash.tasks("brain")] == [task]


def test_a_missing_required_field_is_shown_at_the_field_and_creates_nothing(idle_dash: Dash):
    at = idle_dash.app(ENQUEUE)
    fill(at, {k: v for k, v in BRAIN_PAYLOAD.items() if k != "output_doc_id"})
    assert not at.error  # nothing flagged before the operator tries to submit
    submit(at)
    # The error sits right under the empty field (the elements in page order).
    order = [e for e in at.main if e.type in ("text_input", "error")]
    output = next(i for i, e in enumerate(order)
                  if e.type == "text_input" and e.key.endswith(":/output_doc_id"))
    assert order[output + 1].type == "error"
    assert "output_doc_id is required" in order[output + 1].value
    assert sum("is required" in e.value for e in at.error) == 1  # only what is wrong
    assert "Nothing was enqueued" in texts(at.error)
    assert not at.success
    assert idle_dash.tasks("brain") == []
    assert idle_dash.receiver.requests == []


def test_raw_json_mode_refuses_invalid_json_and_payloads_the_schema_refuses(idle_dash: Dash):
    at = idle_dash.app(ENQUEUE)
    fill(at, {"input_doc_id": "doc-in"})
    at.toggle(key="raw:brain").set_value(True).run()
    raw = at.text_area(key="rawtext:brain")
    assert json.loads(raw.value) == {"input_doc_id": "doc-in"}  # carried over from the form

    raw.input('{"system_instructions_doc_id": ').run()
    assert "not valid JSON" in texts(at.error)
    submit(at)
    assert "Nothing was enqueued" in texts(at.error)

    at.text_area(key="rawtext:brain").input('{"input_doc_id": "doc-in"}').run()
    submit(at)
    assert "'output_doc_id' is a required property" in texts(at.error)
    assert idle_dash.tasks("brain") == []

    at.text_area(key="rawtext:brain").input(json.dumps(BRAIN_PAYLOAD)).run()
    # Back to the form: it holds what the JSON said.
    at.toggle(key="raw:brain").set_value(False).run()
    assert {name: field(at, name).value for name in BRAIN_PAYLOAD} == BRAIN_PAYLOAD
    submit(at)
    assert len(at.success) == 1
    (task,) = idle_dash.tasks("brain")
    assert json.loads(task.http_request.body) == BRAIN_PAYLOAD


def test_a_job_at_a_date_and_time_for_a_worker_without_field_schema(idle_dash: Dash):
    at = idle_dash.app(ENQUEUE)
    at.selectbox(key="worker").set_value("testimonios").run()
    payload = next(w for w in at.text_area if w.key.endswith(":/"))  # the whole object
    payload.input('{"person": "Ana", "lines": 3}')
    at.radio(key="schedule_mode").set_value("At a date and time (UTC)").run()
    assert "UTC" in at.date_input(key="schedule_date").label
    now = dt.datetime.now(dt.UTC)
    at.date_input(key="schedule_date").set_value((now - dt.timedelta(days=1)).date()).run()
    assert "is in the past" in texts(at.warning)
    submit(at)
    assert idle_dash.tasks("testimonios") == []

    when = (now + dt.timedelta(days=2)).replace(hour=9, minute=30, second=0, microsecond=0)
    at.date_input(key="schedule_date").set_value(when.date())
    at.time_input(key="schedule_time").set_value(when.time()).run()
    preview = at.dataframe[0].value.set_index("field")["value"]
    assert preview["schedule time"] == when.strftime("%Y-%m-%d %H:%M:%S UTC")
    submit(at)
    assert len(at.success) == 1, texts(at.error)
    (task,) = idle_dash.tasks("testimonios")
    assert task.schedule_time.timestamp() == when.timestamp()
    assert json.loads(task.http_request.body) == {"person": "Ana", "lines": 3}
    assert preview["task name"] == task.name


RICH_SCHEMA = {
    "type": "object",
    "required": ["title", "pages", "format", "options"],
    "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": 10},
        "pages": {"type": "integer", "minimum": 1, "maximum": 50},
        "ratio": {"type": "number"},
        "draft": {"type": "boolean"},
        "format": {"enum": ["short", "long"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "sections": {"type": "array", "items": {"type": "object"}},
        "options": {"type": "object", "required": ["language"], "properties": {
            "language": {"type": "string"},
            "max_words": {"type": "integer", "minimum": 10}}},
    },
}


def test_a_rich_schema_makes_a_form_of_every_kind_of_field(idle_dash: Dash, tmp_path,
                                                           monkeypatch):
    queue = idle_dash.queues["brain"].rsplit("/", 1)[0] + "/resumenes-" + uuid.uuid4().hex[:6]
    idle_dash.client.create_queue(parent=queue.rsplit("/queues/", 1)[0],
                                  queue={"name": queue})
    idle_dash.client.pause_queue(name=queue)
    (tmp_path / "resumenes.json").write_text(json.dumps(RICH_SCHEMA))
    (tmp_path / "workers.toml").write_text(
        f'[workers.resumenes]\nqueue = "{queue.rsplit("/", 1)[1]}"\n'
        f'url = "{idle_dash.receiver.url}/summarize"\nschema_file = "resumenes.json"\n'
        'description = "Summarizes."\nexample = { title = "Weekly", pages = 3, format = "short", '
        'options = { language = "en" } }\n')
    monkeypatch.setenv("WORKERS_FILE", str(tmp_path / "workers.toml"))

    at = idle_dash.app(ENQUEUE)
    at.selectbox(key="worker").set_value("resumenes").run()
    assert not at.exception, at.exception

    def widget(kind: str, path: str):
        return next(w for w in getattr(at, kind) if w.key and w.key.endswith(f":/{path}"))

    assert widget("text_input", "title").value == "Weekly"  # the worker's example
    assert widget("number_input", "pages").value == 3
    assert widget("text_input", "options/language").value == "en"
    widget("text_input", "title").input("A title far too long")
    widget("number_input", "ratio").set_value(0.5)
    widget("selectbox", "draft").set_value(True)
    widget("selectbox", "format").set_value("long")
    widget("text_area", "tags").input("alpha\nbeta\n")
    widget("text_area", "sections").input('[{"heading": "Intro"}]')
    widget("text_input", "options/language").input("es")
    at.run()
    at.radio(key="key_mode").set_value("From payload fields").run()
    at.multiselect(key="key_fields:resumenes").set_value(["format", "pages"]).run()
    at.radio(key="schedule_mode").set_value("In N seconds").run()
    at.number_input(key="schedule_in").set_value(120).run()

    submit(at)
    order = [e for e in at.main if e.type in ("text_input", "error")]
    title = next(i for i, e in enumerate(order) if e.type == "text_input"
                 and e.key.endswith(":/title"))
    assert "is too long" in order[title + 1].value
    assert idle_dash.client.list_tasks(parent=queue).tasks == []

    widget("text_input", "title").input("Weekly").run()
    submit(at)
    assert len(at.success) == 1, texts(at.error)
    (task,) = idle_dash.client.list_tasks(request={"parent": queue, "response_view": "FULL"})
    assert json.loads(task.http_request.body) == {
        "title": "Weekly", "pages": 3, "ratio": 0.5, "draft": True, "format": "long",
        "tags": ["alpha", "beta"], "sections": [{"heading": "Intro"}],
        "options": {"language": "es"}}
    assert task.http_request.headers["X-Idempotency-Key"] == "long-3"
    delay = task.schedule_time.timestamp() - task.create_time.timestamp()
    assert 115 < delay < 125


def test_a_prefilled_form_holds_the_key_and_the_note_until_discarded(idle_dash: Dash):
    at = idle_dash.app()
    # What common.prefill_enqueue leaves for the page (then it switches to it).
    at.session_state[PREFILL] = EnqueuePrefill(
        "testimonios", {"person": "Ana"}, idempotency_key="ana-replay-1",
        replay_of="projects/p/locations/l/queues/q/tasks/old", note="Replaying task old.")
    at.switch_page(ENQUEUE).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="worker").value == "testimonios"
    assert json.loads(at.text_area(key="rawtext:testimonios").value) == {"person": "Ana"}
    assert (at.radio(key="key_mode").value, at.text_input(key="key_typed").value) == (
        "Typed", "ana-replay-1")
    assert "Replaying task old." in texts(at.info) and "tasks/old" in texts(at.info)
    at.run()  # it holds while the operator edits
    assert "Replaying task old." in texts(at.info)

    at.button(key="discard_prefill").click().run()
    assert not at.info
    assert at.toggle(key="raw:testimonios").value is False
    assert idle_dash.tasks("testimonios") == []

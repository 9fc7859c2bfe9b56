"""The Queues page: the tasks of a queue, and the operator's actions on them and on it."""

from __future__ import annotations

import datetime as dt
import json

from google.cloud import tasks_v2
from google.protobuf import timestamp_pb2
from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import Dash
from tests.emulator.harness import http_task

QUEUES = "pages/queues.py"


def add_task(dash: Dash, service: str, label: str, in_s: float = 3600) -> str:
    """A task for ``service``'s worker, due ``in_s`` seconds from now; its full name."""
    when = timestamp_pb2.Timestamp()
    when.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=in_s))
    path = {"brain": "/process"}.get(service, "/" + service)
    task = http_task(dash.receiver.url + path, body=b'{"job": "%s"}' % label.encode(),
                     headers={"Content-Type": "application/json",
                              "X-Idempotency-Key": label},
                     schedule_time=when)
    return dash.client.create_task(parent=dash.queues[service], task=task).name


def queue_page(dash: Dash, service: str, **query: str) -> AppTest:
    at = dash.app(QUEUES, queue=dash.queues[service].rsplit("/", 1)[1], **query)
    assert not at.exception, at.exception
    return at


def select(at: AppTest, rows: list[int]) -> list[str]:
    """Select table rows as a click would; the task IDs in those rows."""
    table = at.dataframe[0]
    ids = table.value["task"].to_list()
    at.session_state[table.key] = {"selection": {"rows": rows, "columns": []}}
    at.run()
    assert not at.exception, at.exception
    return [ids[i] for i in rows]


def texts(elements) -> str:
    return "\n".join(e.value for e in elements)


def names(tasks: list[tasks_v2.Task]) -> set[str]:
    return {t.name.rsplit("/", 1)[1] for t in tasks}


def test_run_now_dispatches_a_scheduled_task(dash: Dash):
    name = add_task(dash, "brain", "later")
    at = queue_page(dash, "brain")
    assert select(at, [0]) == [name.rsplit("/", 1)[1]]
    assert {"job": "later"} in [json.loads(j.value) for j in at.json]  # the payload, decoded
    at.button(key="run_now").click().run()
    assert not at.exception, at.exception
    assert "Dispatched 1 task(s) now." in texts(at.success)
    (got,) = dash.receiver.at("/process")
    assert got.header("X-Idempotency-Key") == "later"


def test_delete_needs_the_confirmation_then_removes_the_selected_tasks(idle_dash: Dash):
    created = [add_task(idle_dash, "testimonios", f"t{i}", in_s=60 * (i + 1))
               for i in range(3)]
    at = queue_page(idle_dash, "testimonios")
    chosen = select(at, [0, 2])

    at.button(key="delete").click().run()
    assert "Nothing deleted" in texts(at.error)
    assert len(idle_dash.tasks("testimonios")) == 3

    next(c for c in at.checkbox if c.key.startswith("confirm_delete:")).check().run()
    at.button(key="delete").click().run()
    assert not at.exception, at.exception
    assert "Deleted 2 task(s)." in texts(at.success)
    left = names(idle_dash.tasks("testimonios"))
    assert left == {n.rsplit("/", 1)[1] for n in created} - set(chosen)
    assert len(left) == 1
    # The table shows what is left, with nothing selected.
    assert at.dataframe[0].value["task"].to_list() == list(left)
    assert not any(c.key.startswith("confirm_delete:") for c in at.checkbox)


def test_pause_only_with_the_confirmation(dash: Dash):
    at = queue_page(dash, "brain")
    at.button(key="queue_pause").click().run()
    at.button(key="do_queue_action").click().run()  # not ticked
    assert "Nothing done" in texts(at.error)
    assert dash.state("brain") == "RUNNING"

    at.checkbox(key="confirm_queue_action:pause").check().run()
    at.button(key="do_queue_action").click().run()
    assert not at.exception, at.exception
    assert dash.state("brain") == "PAUSED"
    assert "now PAUSED" in texts(at.success)
    assert "PAUSED" in texts(at.markdown)

    # A tick for "pause" does not confirm "purge".
    add_task(dash, "brain", "kept")
    at.button(key="queue_purge").click().run()
    at.button(key="do_queue_action").click().run()
    assert "Nothing done" in texts(at.error)
    assert len(dash.tasks("brain")) == 1


def test_pages_of_tasks_follow_page_tokens_and_filters_apply_to_the_page(idle_dash: Dash):
    for i in range(27):
        add_task(idle_dash, "transcripciones", f"page-{i:02}", in_s=60 * (i + 1))
    at = queue_page(idle_dash, "transcripciones")
    at.selectbox(key="page_size").set_value(25).run()
    first = at.dataframe[0].value["task"].to_list()
    assert len(first) == 25
    at.button(key="next_page").click().run()
    second = at.dataframe[0].value["task"].to_list()
    assert len(second) == 2 and not set(first) & set(second)
    assert at.button(key="next_page").disabled
    at.button(key="prev_page").click().run()
    assert at.dataframe[0].value["task"].to_list() == first

    at.text_input(key="filter_text").input("page-03").run()
    assert at.dataframe[0].value["idempotency key"].to_list() == ["page-03"]
    at.checkbox(key="filter_failing").check().run()
    assert at.dataframe[0].value.empty
    assert not at.exception

    # With auto-refresh on, the same table, in a fragment that reruns by itself.
    at.checkbox(key="filter_failing").uncheck()
    at.toggle(key="auto_refresh").set_value(True).run()
    assert not at.exception, at.exception
    assert at.dataframe[0].value["idempotency key"].to_list() == ["page-03"]

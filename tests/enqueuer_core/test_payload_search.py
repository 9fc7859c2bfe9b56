"""Search by payload field: a scan of the queue in the FULL view, page by page, against the
real emulator; its expressions; its cap; a caller without cloudtasks.tasks.fullView."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from enqueuer_core.clients import tasks_client
from enqueuer_core.config import load_settings
from enqueuer_core.errors import InvalidRequest, PermissionDenied
from enqueuer_core.payload_search import FieldMatch, parse_expression, search_payloads
from tests.emulator.harness import PARENT, PROJECT, RunningEmulator, http_task, start_emulator

NO_FULL_VIEW = "user:deleter@example.com"  # may delete tasks, not read their bodies
ADMIN = "user:admin@example.com"


def add(client, queue: str, bodies: list[object]) -> list[str]:
    return [client.create_task(parent=queue, task=http_task(
        "http://127.0.0.1:9/x", body=b if isinstance(b, bytes) else json.dumps(b).encode())
    ).name for b in bodies]


def test_matches_come_page_by_page_across_the_queue(client, make_queue):
    queue = make_queue(paused=True)
    bodies = [{"input_doc_id": "abc" if i % 5 == 0 else f"doc-{i}", "n": i}
              for i in range(23)]
    names = add(client, queue, bodies)
    pages = list(search_payloads(client, queue, "input_doc_id=abc", page_size=4))
    assert [p.progress.pages for p in pages] == list(range(1, 7))
    assert [p.progress.seen for p in pages] == [4, 8, 12, 16, 20, 23]
    assert [len(p.hits) for p in pages] == [1, 1, 1, 1, 0, 1]  # n = 0, 5, 10, 15, -, 20
    hits = [h for p in pages for h in p.hits]
    assert [h.task.name for h in hits] == names[::5]
    assert all(h.value == "abc" and h.payload["input_doc_id"] == "abc" for h in hits)
    assert [p.progress.done for p in pages] == [False] * 5 + [True]
    assert pages[-1].progress.matched == 5 and not pages[-1].progress.capped


def test_nested_paths_list_indices_and_json_values(client, make_queue):
    queue = make_queue(paused=True)
    names = add(client, queue, [
        {"options": {"language": "es", "pages": 3, "draft": True}, "items": [{"id": 7}]},
        {"options": {"language": "en", "pages": "3", "draft": 1}, "items": []},
        b"not json at all",
        {"options": "es"},
    ])

    def found(expression: str) -> list[str]:
        return [h.task.name for p in search_payloads(client, queue, expression) for h in p.hits]

    assert found("options.language=es") == [names[0]]
    assert found("options.pages=3") == names[:2]  # the number 3, and the text "3"
    assert found("options.draft=true") == [names[0]]  # true is not 1
    assert found("items.0.id=7") == [names[0]]
    assert found('options.language="en"') == [names[1]]
    assert found("options.missing=x") == []


def test_the_cap_stops_the_scan_and_says_so(client, make_queue):
    queue = make_queue(paused=True)
    add(client, queue, [{"k": "v"}] * 12)
    pages = list(search_payloads(client, queue, "k=v", cap=10, page_size=4))
    last = pages[-1].progress
    assert (last.pages, last.seen, last.matched, last.capped, last.done) == (3, 10, 10, True,
                                                                             True)
    exact = list(search_payloads(client, queue, "k=v", cap=12, page_size=4))[-1].progress
    assert (exact.seen, exact.capped, exact.done) == (12, False, True)


@pytest.mark.parametrize(("expression", "says"), [
    ("input_doc_id", "write FIELD=VALUE"),
    ("=abc", "write FIELD=VALUE"),
    ("a..b=1", "has an empty part"),
    ("input_doc_id=", "has no value after '='"),
    ("n!=3", "only = is supported"),
])
def test_a_bad_expression_says_what_to_write(expression: str, says: str):
    with pytest.raises(InvalidRequest, match=says) as e:
        parse_expression(expression)
    assert "input_doc_id=abc" in e.value.message  # an example to copy


def test_expressions_parse_to_paths():
    assert parse_expression(" a.b.c = x y ") == FieldMatch(("a", "b", "c"), "x y")
    assert parse_expression("url=https://x/?q=1").value == "https://x/?q=1"


@pytest.fixture(scope="module")
def enforcing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    config = f"""
[iam]
enforce = true
principal = "{ADMIN}"
bindings = [
  {{ role = "roles/cloudtasks.admin", members = ["{ADMIN}"] }},
  {{ role = "roles/cloudtasks.taskDeleter", members = ["{NO_FULL_VIEW}"] }},
]

[[queues]]
name = "searched"
paused = true
"""
    em = start_emulator(tmp_path_factory.mktemp("fullview"), config)
    yield em
    assert em.stop() == 0, "".join(em.stderr)


def test_a_caller_without_full_view_is_refused_naming_the_permission_and_role(
        enforcing: RunningEmulator):
    queue = f"{PARENT}/queues/searched"
    add(enforcing.client(), queue, [{"input_doc_id": "abc"}])  # as the admin
    settings = load_settings(cloud_tasks_emulator_host=enforcing.target, project_id=PROJECT,
                             tasks_region="us-central1",
                             caller_sa=f"caller@{PROJECT}.iam.gserviceaccount.com")
    deleter = tasks_client(settings, acting_as=NO_FULL_VIEW)
    # BASIC is allowed (the emulator, like Google, asks fullView only for bodies)...
    assert len(list(deleter.list_tasks(parent=queue))) == 1
    with pytest.raises(PermissionDenied) as refused:
        next(search_payloads(deleter, queue, "input_doc_id=abc"))
    message = refused.value.message
    assert "deleter@example.com lacks the permission cloudtasks.tasks.fullView" in message
    assert "Grant it roles/cloudtasks.viewer" in message
    assert (f"gcloud tasks queues add-iam-policy-binding searched --location=us-central1 "
            f"--member={NO_FULL_VIEW} --role=roles/cloudtasks.viewer --project={PROJECT}"
            ) in message
    # The admin, who holds it, finds the task.
    (page,) = search_payloads(enforcing.client(), queue, "input_doc_id=abc")
    assert len(page.hits) == 1

"""Bulk actions against the real emulator: a selection counted first, run or deleted paced
to Cloud Tasks' quotas, with progress, partial failures listed, one audit line."""

from __future__ import annotations

import json
import time

import pytest
from google.cloud import tasks_v2
from google.protobuf import duration_pb2

from enqueuer_core.access import Acting, local_policy
from enqueuer_core.bulk import (
    BulkProgress,
    Pace,
    TaskFilter,
    delete_all,
    run_all,
    select_tasks,
)
from enqueuer_core.errors import Forbidden, InvalidRequest
from tests.acting import as_admin
from tests.emulator.harness import fast_retry, http_task, wait_until

VIEWER = "user:viewer@local-project.test"


def audit(err: str) -> list[dict]:
    """The audit lines among what was written to stderr (the CLI's door writes them there)."""
    return [json.loads(x)["audit"] for x in err.splitlines()
            if x.startswith("{") and '"audit"' in x]


def add(client, queue: str, url: str, bodies: list[dict]) -> list[str]:
    return [client.create_task(parent=queue, task=http_task(url, body=json.dumps(b).encode())
                               ).name for b in bodies]


def test_run_all_of_300_failing_tasks_paced_with_progress_one_gone_and_one_line(
        client, make_queue, worker, capsys):
    # Each task fails once (the worker answers 500), then waits an hour to be retried.
    queue = make_queue(
        rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=500,
                                        max_concurrent_dispatches=100),
        retry_config=fast_retry(min_backoff=duration_pb2.Duration(seconds=3600),
                                max_backoff=duration_pb2.Duration(seconds=3600)))
    worker.respond("/bulk-run", [500] * 300)
    add(client, queue, worker.url + "/bulk-run", [{"n": i} for i in range(300)])
    worker.at("/bulk-run", 300, timeout=30)
    selection = wait_until(
        lambda: (s := select_tasks(client, queue, TaskFilter(failing=True))).count == 300
        and s, timeout=10, what="300 tasks failing")
    assert (selection.scanned, selection.capped) == (300, False)

    gone = selection.names[-1]
    seen: list[BulkProgress] = []

    def progress(p: BulkProgress) -> None:
        seen.append(p)
        if p.handled == 100:  # another client deletes a task the bulk run has not reached
            client.delete_task(name=gone)

    capsys.readouterr()
    started = time.monotonic()
    result = run_all(client, selection, as_admin(), progress=progress, pace=Pace(100, 1.0))
    elapsed = time.monotonic() - started

    # Paced: 100 calls a second at most, so the third hundred waited two seconds.
    assert elapsed >= 2.0
    assert [p.handled for p in seen] == list(range(1, 301))
    assert seen[-1] == BulkProgress(300, 300, 1)
    assert len(result.done) == 299 and gone not in result.done
    ((task, why),) = result.failures
    assert task == gone and "does not exist" in why
    worker.at("/bulk-run", 599, timeout=30)  # each of the others reached the worker again
    wait_until(lambda: not list(client.list_tasks(parent=queue)), timeout=20,
               what="the tasks that ran are done")

    (line,) = audit(capsys.readouterr().err)
    assert (line["action"], line["target"], line["outcome"], line["count"], line["done"],
            line["failed"], line["filter"], line["bulk"]) == (
        "run", queue, "ok", 300, 299, 1, "failing", True)


def test_delete_all_on_a_payload_text_deletes_only_those(client, make_queue, capsys):
    queue = make_queue(paused=True)
    names = add(client, queue, "http://127.0.0.1:9/x",
                [{"input_doc_id": "doc-x" if i % 3 == 0 else f"doc-{i}"} for i in range(30)])
    selection = select_tasks(client, queue, TaskFilter(text="DOC-X"), page_size=7)
    assert selection.count == 10 and selection.scanned == 30
    capsys.readouterr()
    result = delete_all(client, selection, as_admin())
    assert sorted(result.done) == sorted(names[::3]) and not result.failures
    left = {t.name for t in client.list_tasks(parent=queue)}
    assert left == set(names) - set(names[::3])
    (line,) = audit(capsys.readouterr().err)
    assert (line["action"], line["count"], line["done"], line["failed"], line["outcome"]) == (
        "delete", 10, 10, 0, "ok")


def test_a_selection_by_payload_field_and_its_cap(client, make_queue):
    queue = make_queue(paused=True)
    names = add(client, queue, "http://127.0.0.1:9/x",
                [{"doc": {"id": "abc" if i in (2, 9) else str(i)}} for i in range(12)])
    selection = select_tasks(client, queue, TaskFilter(field="doc.id=abc"), page_size=5)
    assert selection.names == [names[2], names[9]]
    capped = select_tasks(client, queue, TaskFilter(field="doc.id=abc"), cap=6, page_size=5)
    assert (capped.names, capped.scanned, capped.capped) == ([names[2]], 6, True)
    with pytest.raises(InvalidRequest, match="FIELD=VALUE"):
        select_tasks(client, queue, TaskFilter(field="doc.id"))


def test_a_viewer_is_refused_and_nothing_is_done(client, make_queue, worker, capsys):
    queue = make_queue(paused=True)
    names = add(client, queue, worker.url + "/viewer-bulk", [{"n": i} for i in range(3)])
    selection = select_tasks(client, queue, TaskFilter())  # reading is allowed
    assert selection.count == 3
    viewer = Acting(VIEWER, local_policy(), "cli")
    capsys.readouterr()
    with pytest.raises(Forbidden, match="running a task now needs the operator role"):
        run_all(client, selection, viewer)
    with pytest.raises(Forbidden, match="deleting a task needs the operator role"):
        delete_all(client, selection, viewer)
    assert sorted(t.name for t in client.list_tasks(parent=queue)) == sorted(names)
    assert not [r for r in worker.requests if r.path == "/viewer-bulk"]
    lines = audit(capsys.readouterr().err)
    assert [(x["action"], x["outcome"], x["count"], x["principal"]) for x in lines] == [
        ("run", "refused", 3, VIEWER), ("delete", "refused", 3, VIEWER)]


def test_the_pace_keeps_any_window_within_its_calls():
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    pace = Pace(3, 60.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(7):
        pace.acquire()
    # Three at once, three a minute later, the seventh a minute after those.
    assert slept == [60.0, 60.0] and now[0] == 120.0

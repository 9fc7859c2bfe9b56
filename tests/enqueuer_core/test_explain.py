"""Each way a worker's attempt fails, explained: from codes, and from what the real emulator
records when a real worker answers so."""

from __future__ import annotations

import pytest

from enqueuer_core.explain import Explanation, explain_failure
from enqueuer_core.inspect import TaskSnapshot
from enqueuer_core.workers import WorkerSpec
from tests.emulator.harness import http_task, wait_until

CALLER = "caller@proj.iam.gserviceaccount.com"
WORKER = WorkerSpec(name="brain", queue="queue-brain",
                    url="https://brain-abc123-uc.a.run.app/process",
                    audience="https://brain-abc123-uc.a.run.app", deadline_s=700)
WRONG_AUDIENCE = WorkerSpec(name="brain", queue="queue-brain",
                            url="https://brain-abc123-uc.a.run.app/process",
                            audience="https://old-brain.a.run.app", deadline_s=700)


@pytest.mark.parametrize("code", [None, "", "OK", "200", "204"])
def test_no_attempt_or_success_needs_no_explanation(code):
    assert explain_failure(code, "HTTP status code 200", WORKER) is None


def test_401_is_the_audience_and_names_the_one_to_set():
    e = explain_failure("401", "UNAUTHENTICATED(16): HTTP status code 401", WRONG_AUDIENCE)
    assert isinstance(e, Explanation) and e.check == "audience"
    assert "401" in e.headline and "audience" in e.detail
    assert "https://old-brain.a.run.app" in e.detail and WORKER.url in e.detail
    assert "Set AUD_BRAIN to https://brain-abc123-uc.a.run.app " in e.fix
    matching = explain_failure("401", None, WORKER)
    assert "missing, expired" in matching.detail
    assert explain_failure("UNAUTHENTICATED", None, None).check == "audience"


def test_403_is_the_invoker_binding_with_the_command():
    e = explain_failure("403", "HTTP status code 403", WORKER, caller=CALLER)
    assert e.check == "invoker" and "run.invoker" in e.detail and CALLER in e.detail
    assert ("gcloud run services add-iam-policy-binding brain "
            f"--member=serviceAccount:{CALLER} --role=roles/run.invoker") in e.fix
    assert "serviceAccount:CALLER_SA" in explain_failure("403", None, None).fix


def test_404_is_the_url_path():
    e = explain_failure("404", "HTTP status code 404", WORKER)
    assert e.check == "url" and WORKER.url in e.detail and "Set URL_BRAIN to" in e.fix


@pytest.mark.parametrize("code", ["504", "DEADLINE_EXCEEDED"])
def test_deadline_names_the_dispatch_deadline(code):
    e = explain_failure(code, "the target did not answer within the dispatch deadline (700s)",
                        WORKER)
    assert e.check == "deadline" and "700s" in e.detail and "request timeout" in e.detail
    assert "Set DEADLINE_BRAIN_S " in e.fix and "--timeout" in e.fix


@pytest.mark.parametrize("code", ["429", "503", "RESOURCE_EXHAUSTED"])
def test_overload_says_retries_continue(code):
    e = explain_failure(code, None, WORKER)
    assert "overloaded" in e.headline and "retries" in e.detail


@pytest.mark.parametrize("code", ["429", "RESOURCE_EXHAUSTED"])
def test_a_429_links_to_the_capacity_check(code):
    # Cloud Run's 429: more in flight than max instances x concurrency.
    e = explain_failure(code, "RESOURCE_EXHAUSTED(8): HTTP status code 429", WORKER)
    assert e.check == "capacity" and "capacity check" in e.fix
    assert "max instances" in e.fix and "concurrent dispatches" in e.fix


def test_a_503_names_no_check():
    # The worker's own 503, or an instance not ready yet: no one check confirms it.
    e = explain_failure("503", None, WORKER)
    assert e.check is None and "capacity check" not in e.fix


def test_unreachable_worker():
    e = explain_failure("UNAVAILABLE", "UNAVAILABLE(14): the request to http://x/p failed: "
                        "Cannot connect to host x:80 [Connection refused]", WORKER)
    assert "cannot be reached" in e.headline and WORKER.url in e.detail
    assert e.check == "url"


@pytest.mark.parametrize("code", ["500", "502", "INTERNAL"])
def test_other_5xx_points_at_the_worker_logs(code):
    e = explain_failure(code, None, WORKER)
    assert "failed" in e.headline and "logs" in e.fix and e.check is None


@pytest.mark.parametrize("code", ["400", "422", "INVALID_ARGUMENT"])
def test_400_and_422_are_the_payload(code):
    e = explain_failure(code, None, WORKER)
    assert "payload" in e.headline and "new idempotency key" in e.fix


def test_an_unexplained_code_still_says_something():
    e = explain_failure("418", "HTTP status code 418", None)
    assert "418" in e.headline and e.check is None


def test_what_the_emulator_records_is_explained(client, make_queue, receiver):
    """Real answers from a real worker (and a closed port), as TaskSnapshot reads them."""
    queue = make_queue()
    answers = {"/a": 401, "/b": 403, "/c": 404, "/d": 503, "/e": 500, "/f": 422, "/g": 429}
    for path, status in answers.items():
        receiver.respond(path, [status] * 50)
        client.create_task(parent=queue, task=http_task(receiver.url + path))
    client.create_task(parent=queue, task=http_task("http://127.0.0.1:9/gone"))

    def answered() -> list[TaskSnapshot]:
        snaps = [TaskSnapshot.from_task(t) for t in client.list_tasks(parent=queue)]
        return snaps if all(s.last_response_code for s in snaps) else []

    snaps = wait_until(answered, timeout=10, what="every task attempted")
    client.pause_queue(name=queue)
    checks = {s.url.rsplit("/", 1)[1]: explain_failure(s.last_response_code,
                                                       s.last_response_message, None)
              for s in snaps}
    assert checks["a"].check == "audience" and checks["b"].check == "invoker"
    assert checks["c"].check == "url" and "overloaded" in checks["d"].headline
    assert "logs" in checks["e"].fix and "payload" in checks["f"].headline
    assert "cannot be reached" in checks["gone"].headline
    assert checks["g"].check == "capacity" and checks["d"].check is None

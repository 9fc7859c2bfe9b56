"""The capacity check: its arithmetic (Cloud Run's defaults, Little's law, the two ways out
with their numbers), the workers file's typical duration, and diagnose() against a real
emulator: a queue of 1,000 concurrent dispatches at a service of 2 instances x 10 is
caught, then passes once the queue is brought down to what the service takes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import grpc
import pytest
from google.cloud import run_v2, tasks_v2
from google.cloud.run_v2.services.services.transports import ServicesGrpcTransport
from google.protobuf import field_mask_pb2

from enqueuer_core.config import load_settings
from enqueuer_core.diagnose import CHECKS, CheckResult, diagnose
from enqueuer_core.diagnose.capacity import (
    ServiceCapacity,
    job_durations,
    judge,
    service_capacity,
    typical_duration,
)
from enqueuer_core.errors import ConfigError
from enqueuer_core.workers import WorkerSpec, load_registry
from tests.emulator.harness import (
    LOCATION,
    PARENT,
    PROJECT,
    RunningEmulator,
    http_task,
    queue_name,
    start_emulator,
    wait_until,
)

CALLER = f"caller@{PROJECT}.iam.gserviceaccount.com"
WHERE_TASKS = f"--location={LOCATION} --project={PROJECT}"
WHERE_RUN = f"--region={LOCATION} --project={PROJECT}"
SPEC = WorkerSpec(name="brain", queue="queue-brain", url="https://brain.a.run.app/process",
                  audience="https://brain.a.run.app", deadline_s=700)


def service(**template: object) -> run_v2.Service:
    return run_v2.Service(name=f"{PARENT}/services/brain", template=template)


TWO_BY_TEN = ServiceCapacity(2, 10)


def check(concurrent: int, rate: float, duration: float | None = None,
          cap: ServiceCapacity = TWO_BY_TEN, source: str = "typical_duration_s"):
    return judge("queue-brain", "brain", cap, concurrent, rate, duration, source,
                 WHERE_TASKS, WHERE_RUN, "brain")


# -- the arithmetic ---------------------------------------------------------------------

def test_capacity_is_instances_times_concurrency_with_cloud_runs_defaults():
    set_ = service_capacity(service(scaling={"max_instance_count": 2},
                                    max_instance_request_concurrency=10))
    assert (set_.requests, set_.defaults) == (20, ())
    unset = service_capacity(service())
    assert (unset.instances, unset.concurrency) == (100, 80)
    assert unset.defaults == ("max instances unset: Cloud Run's default 100",
                              "concurrency unset: Cloud Run's default 80")
    # Less than one CPU: one request at a time, by default.
    small = service_capacity(service(containers=[{"resources": {"limits": {"cpu": "500m"}}}]))
    assert small.concurrency == 1
    # A service-level limit caps the revision's; manual scaling runs exactly its count.
    capped = service(scaling={"max_instance_count": 50}, max_instance_request_concurrency=4)
    capped.scaling.max_instance_count = 3
    assert service_capacity(capped).requests == 12
    manual = service(max_instance_request_concurrency=5)
    manual.scaling.scaling_mode = run_v2.ServiceScaling.ScalingMode.MANUAL
    manual.scaling.manual_instance_count = 4
    assert service_capacity(manual).requests == 20


def test_too_many_concurrent_dispatches_warn_with_both_numbers_and_both_ways_out():
    status, evidence, fix = check(1000, 500)
    assert status == "warn"
    assert "queue-brain may dispatch 1000 at once" in evidence
    assert "brain takes 2 instances x 10 = 20 requests at once" in evidence
    assert "429" in evidence
    assert fix == (f"gcloud tasks queues update queue-brain --max-concurrent-dispatches=20 "
                   f"{WHERE_TASKS}, or gcloud run services update brain --max-instances=100 "
                   f"{WHERE_RUN}")


def test_without_a_duration_the_steady_load_cannot_be_judged_and_says_how_to_give_it():
    _, evidence, _ = check(1000, 500)
    assert "The steady load could not be judged" in evidence
    assert "typical_duration_s = SECONDS in [workers.brain] of the workers file" in evidence


def test_littles_law_says_whether_the_overload_is_steady_or_only_bursts():
    _, steady, _ = check(1000, 500, 0.3)
    assert "even at a steady rate: 500/s x 0.3 s (typical_duration_s) = 150 requests in " \
           "flight" in steady
    status, bursts, _ = check(1000, 5, 2)
    assert status == "warn"
    assert "at a steady rate: 5/s x 2 s (typical_duration_s) = 10 requests in flight, which " \
           "fit; backlogs and bursts do not" in bursts


def test_a_queue_within_capacity_passes_whatever_its_rate():
    assert check(20, 500) == ("pass", "queue-brain dispatches at most 20 at once; brain takes "
                              "2 instances x 10 = 20 requests at once", None)
    # Cloud Tasks keeps at most 20 in flight: the queue, not the service, holds it back.
    status, evidence, fix = check(10, 500, 0.3)
    assert (status, fix) == ("pass", None)
    assert "= 150 requests in flight, so queue-brain holds the rate back to 33.3/s " \
           "(no 429s)" in evidence


def test_more_instances_than_the_baseline_quota_say_so():
    _, _, fix = check(5000, 500, cap=ServiceCapacity(1, 1))
    assert "--max-instances=5000" in fix and "quota increase" in fix


def attempt(seconds: float, code: int = 0) -> tasks_v2.Attempt:
    a = tasks_v2.Attempt(dispatch_time={"seconds": 100}, response_status={"code": code})
    a.response_time = {"seconds": 100 + int(seconds), "nanos": int(seconds % 1 * 1e9)}
    return a


def test_the_duration_is_the_workers_file_s_else_the_median_of_what_the_worker_answered():
    # 429 (8), 401 (16), 403 (7), 404 (5) and no connection (14) come before the job runs.
    attempts = [attempt(2), attempt(4, code=13), attempt(30, code=4), attempt(0.01, code=8),
                attempt(0.01, code=16), attempt(0.01, code=7), attempt(0.01, code=5),
                attempt(0.01, code=14)]
    durations = job_durations(attempts)
    assert sorted(durations) == [2, 4, 30]
    assert typical_duration(SPEC, durations) == (4, "median of the last 3 attempts in the queue")
    assert typical_duration(SPEC, []) == (None, "")
    given = WorkerSpec(name="brain", queue="queue-brain", url=SPEC.url,
                       audience=SPEC.audience, deadline_s=700, typical_duration_s=12.5)
    assert typical_duration(given, durations) == (12.5, "typical_duration_s of [workers.brain]")


def workers_file(tmp_path, body: str):
    f = tmp_path / "workers.toml"
    f.write_text(body)
    return load_registry(load_settings(cloud_tasks_emulator_host="127.0.0.1:1",
                                       workers_file=str(f)))


def test_typical_duration_in_the_workers_file(tmp_path):
    reg = workers_file(tmp_path, "[workers.brain]\ntypical_duration_s = 45\n"
                                 "[workers.resumenes]\nurl = \"https://r.a.run.app/s\"\n")
    assert reg.get("brain").typical_duration_s == 45
    assert reg.get("resumenes").typical_duration_s is None
    with pytest.raises(ConfigError, match=r"\[workers.brain\]: typical_duration_s: "
                                          "Input should be greater than 0"):
        workers_file(tmp_path, "[workers.brain]\ntypical_duration_s = 0\n")
    with pytest.raises(ConfigError) as e:
        workers_file(tmp_path, "[workers.brain]\ndeadline_s = 60\ntypical_duration_s = 90\n")
    assert "typical_duration_s = 90 is more than deadline_s = 60" in e.value.message
    assert "raise deadline_s" in e.value.message


# -- diagnose() against the emulator -----------------------------------------------------

CONFIG = f"""
[[queues]]
name = "queue-brain"  # Cloud Tasks' default concurrency; failed attempts wait a minute
rate_limits = {{ max_concurrent_dispatches = 1000 }}
retry_config = {{ max_attempts = 5, min_backoff_s = 60, max_backoff_s = 60 }}

[[services]]
name = "brain"
port = 0
paths = ["/process"]
max_instances = 2
concurrency = 10
invokers = ["serviceAccount:{CALLER}"]
"""


@pytest.fixture(scope="module")
def em(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    em = start_emulator(tmp_path_factory.mktemp("capacity"), CONFIG)
    try:
        yield em
    finally:
        assert em.stop() == 0, "".join(em.stderr)


@pytest.fixture(scope="module")
def brain_url(em: RunningEmulator) -> str:
    run = run_v2.ServicesClient(transport=ServicesGrpcTransport(
        channel=grpc.insecure_channel(em.target)))
    return run.get_service(name=f"{PARENT}/services/brain").uri


def capacity_of(em: RunningEmulator, brain_url: str, **overrides: object) -> CheckResult:
    settings = load_settings(lenient=True, **{
        "cloud_tasks_emulator_host": em.target, "project_id": PROJECT,
        "tasks_region": LOCATION, "caller_sa": CALLER, "url_brain": f"{brain_url}/process",
        **overrides})
    return {r.check: r for r in diagnose(settings, ["brain"])}["capacity"]


def test_capacity_is_a_check_after_the_queue():
    ids = [c for c, _ in CHECKS]
    assert ids.index("queue") < ids.index("capacity") < ids.index("queue_failures")


def test_a_queue_pushing_more_than_the_service_takes_warns_then_passes_once_lowered(
        em, brain_url):
    # A slow job that fails: its last attempt (500 after 0.3 s) is timed by the check.
    tasks = em.client()
    body = json.dumps({"_simulate": {"fail_first": 9, "status": 500, "delay_s": 0.3}})
    task = tasks.create_task(parent=queue_name("queue-brain"), task=http_task(
        f"{brain_url}/process", body.encode(),
        oidc={"service_account_email": CALLER, "audience": brain_url}))
    wait_until(lambda: tasks.get_task(name=task.name).last_attempt.response_time,
               timeout=10, what="the slow job's answer")

    got = capacity_of(em, brain_url)
    assert got.status == "warn", got
    assert "queue-brain may dispatch 1000 at once" in got.evidence
    assert "brain takes 2 instances x 10 = 20 requests at once" in got.evidence
    assert re.search(r"even at a steady rate: 500/s x 0\.3\d* s \(median of the last 1 attempt in "
                     r"the queue\) = 15\d requests in flight", got.evidence), got.evidence
    assert got.fix == (
        f"gcloud tasks queues update queue-brain --max-concurrent-dispatches=20 {WHERE_TASKS}, "
        f"or gcloud run services update brain --max-instances=100 {WHERE_RUN}")

    tasks.update_queue(
        queue=tasks_v2.Queue(name=queue_name("queue-brain"),
                             rate_limits=tasks_v2.RateLimits(max_concurrent_dispatches=20)),
        update_mask=field_mask_pb2.FieldMask(paths=["rate_limits.max_concurrent_dispatches"]))
    repaired = capacity_of(em, brain_url)
    assert repaired.status == "pass" and repaired.fix is None
    assert repaired.evidence.startswith("queue-brain dispatches at most 20 at once; brain "
                                        "takes 2 instances x 10 = 20 requests at once")


def test_without_the_queue_or_the_service_it_cannot_judge(em, brain_url):
    no_queue = capacity_of(em, brain_url, queue_brain="queue-missing")
    assert (no_queue.status, no_queue.evidence) == ("unknown", "needs: queue")
    no_service = capacity_of(em, brain_url, url_brain="http://127.0.0.1:9/process",
                             aud_brain="http://127.0.0.1:9")
    assert (no_service.status, no_service.evidence) == ("unknown", "needs: service")


def test_tasks_turned_away_with_429_point_at_the_capacity_check(em, brain_url):
    # Most tasks' last attempt 429: retried with backoff, so a warning that names the cause.
    tasks = em.client()
    tasks.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=queue_name("queue-busy")))
    body = json.dumps({"_simulate": {"fail_first": 9, "status": 429}}).encode()
    made = [tasks.create_task(parent=queue_name("queue-busy"), task=http_task(
        f"{brain_url}/process", body,
        oidc={"service_account_email": CALLER, "audience": brain_url})) for _ in range(2)]
    wait_until(lambda: all(tasks.get_task(name=t.name).last_attempt.response_time
                           for t in made), timeout=10, what="both tasks' first answer")

    settings = load_settings(lenient=True, cloud_tasks_emulator_host=em.target,
                             project_id=PROJECT, tasks_region=LOCATION, caller_sa=CALLER,
                             url_brain=f"{brain_url}/process", queue_brain="queue-busy")
    got = {r.check: r for r in diagnose(settings, ["brain"])}["queue_failures"]
    assert got.status == "warn", got
    assert "2 of 2 tasks' last attempt: 429" in got.evidence
    assert "Cloud Run had no free instance" in got.evidence
    assert got.fix == "see the capacity check"

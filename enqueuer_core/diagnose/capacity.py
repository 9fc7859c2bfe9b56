"""The ``capacity`` check: the queue cannot push more requests at once than the worker's
Cloud Run service takes.

A service takes at most *max instances* x *max concurrent requests per instance* requests at
once; past that Cloud Run answers 429 ("The request was aborted because there was no
available instance"), and Cloud Tasks retries with backoff. Defaults when the service does
not set them, from the Admin v2 reference (``google.cloud.run_v2``):
``RevisionScaling.max_instance_count`` "When unspecified, the field is set to the server
default value of 100"; ``RevisionTemplate.max_instance_request_concurrency`` "If not
specified or 0, concurrency defaults to 80 when requested CPU >= 1 and defaults to 1 when
requested CPU < 1". A service-level ``scaling.max_instance_count`` caps the revisions'
total, and manual scaling runs exactly ``manual_instance_count``. The queue's limits default
to 1000 concurrent dispatches and 500 per second (``google.cloud.tasks_v2.RateLimits``).

Two numbers are compared with the service's capacity:

- the queue's ``max_concurrent_dispatches``: how many requests Cloud Tasks may have in
  flight at once (a backlog, or a burst of ``max_burst_size``, reaches it);
- ``max_dispatches_per_second`` x the worker's typical duration: the requests in flight at
  a steady rate (Little's law). The duration is the workers file's ``typical_duration_s``,
  else the median time from dispatch to response of the last attempts of the queue's tasks
  that the worker itself answered, else unknown.

Cloud Tasks never has more than ``max_concurrent_dispatches`` in flight, so the check warns
when that number exceeds the capacity; the steady load says whether the excess is a
standing overload or only backlogs and bursts, and a steady load above the queue's own
limit means the queue, not the service, holds the rate back (no 429s).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from google.cloud import run_v2, tasks_v2

from enqueuer_core.cloud_run import short_name
from enqueuer_core.diagnose.gather import Diagnosis
from enqueuer_core.diagnose.result import Status
from enqueuer_core.workers import WorkerSpec

TITLE = "The queue cannot push more than the service can take"
DEFAULT_MAX_INSTANCES = 100
DEFAULT_CONCURRENCY = 80  # 1 when the container asks for less than one CPU
DEFAULT_CONCURRENT_DISPATCHES = 1000
DEFAULT_DISPATCHES_PER_SECOND = 500.0
QUOTA_INSTANCES = 1000  # the baseline regional quota; more needs a quota increase
# google.rpc codes of answers that come before the job runs (the door's 401/403, a wrong
# path, Cloud Run's own 429/503, no connection): their time says nothing of a job's.
_NOT_THE_JOB = {5, 7, 8, 14, 16}

Verdict = tuple[Status, str, str | None]


@dataclass(frozen=True)
class ServiceCapacity:
    """How many requests a service takes at once, and what of it is Cloud Run's default."""

    instances: int
    concurrency: int
    defaults: tuple[str, ...] = ()  # "max instances unset: Cloud Run's default 100", ...

    @property
    def requests(self) -> int:
        return self.instances * self.concurrency


def _cpu(limit: str) -> float | None:
    """A container's CPU limit ("1", "2", "500m") in CPUs; None when unreadable."""
    try:
        return float(limit[:-1]) / 1000 if limit.endswith("m") else float(limit)
    except ValueError:
        return None


def service_capacity(svc: run_v2.Service) -> ServiceCapacity:
    """What the service's Admin v2 description says it takes, Cloud Run's defaults filled in."""
    notes: list[str] = []
    scaling = svc.scaling
    if scaling.scaling_mode == run_v2.ServiceScaling.ScalingMode.MANUAL:
        instances = scaling.manual_instance_count or 0
    else:
        caps = [n for n in (svc.template.scaling.max_instance_count,
                            scaling.max_instance_count) if n]
        instances = min(caps) if caps else DEFAULT_MAX_INSTANCES
        if not caps:
            notes.append(f"max instances unset: Cloud Run's default {DEFAULT_MAX_INSTANCES}")
    concurrency = svc.template.max_instance_request_concurrency
    if not concurrency:
        limits = svc.template.containers[0].resources.limits if svc.template.containers else {}
        cpu = _cpu(limits.get("cpu", "1"))
        concurrency = 1 if cpu is not None and cpu < 1 else DEFAULT_CONCURRENCY
        notes.append(f"concurrency unset: Cloud Run's default {concurrency}")
    return ServiceCapacity(instances, concurrency, tuple(notes))


def job_durations(attempts: list[tasks_v2.Attempt]) -> list[float]:
    """Dispatch-to-response seconds of the attempts the worker itself answered."""
    return [(a.response_time - a.dispatch_time).total_seconds() for a in attempts
            if a.response_time and a.dispatch_time
            and a.response_status.code not in _NOT_THE_JOB]


def typical_duration(spec: WorkerSpec, durations: list[float]) -> tuple[float | None, str]:
    """The worker's typical job duration and where it comes from."""
    if spec.typical_duration_s is not None:
        return spec.typical_duration_s, f"typical_duration_s of [workers.{spec.name}]"
    if durations:
        n = len(durations)
        return (statistics.median(durations),
                f"median of the last {n} attempt{'s' if n > 1 else ''} in the queue")
    return None, ""


def _n(x: float) -> str:
    return f"{x:.3g}" if x < 100 else f"{x:,.0f}"


def judge(queue: str, service: str, cap: ServiceCapacity, concurrent: int, rate: float,
          duration: float | None, source: str, where_tasks: str, where_run: str,
          worker: str) -> Verdict:
    """The verdict on a queue pushing at ``service`` (pure: the arithmetic of the check)."""
    take = (f"{service} takes {cap.instances} instance{'s' if cap.instances > 1 else ''} x "
            f"{cap.concurrency} = {cap.requests} requests at once"
            + (f" ({'; '.join(cap.defaults)})" if cap.defaults else ""))
    steady, little = None, ""
    if duration is not None:
        steady = rate * duration  # Little's law: arrivals per second x seconds each
        little = f"{_n(rate)}/s x {_n(duration)} s ({source}) = {_n(steady)} requests in flight"
    if concurrent <= cap.requests:
        evidence = f"{queue} dispatches at most {concurrent} at once; {take}"
        if steady is not None and duration and steady > concurrent:
            evidence += (f"; at a steady rate: {little}, so {queue} holds the rate back to "
                         f"{_n(concurrent / duration)}/s (no 429s)")
        elif little:
            evidence += f"; at a steady rate: {little}"
        return "pass", evidence, None
    evidence = (f"{queue} may dispatch {concurrent} at once, more than {take}: the rest "
                "get 429 (no available instance) and wait for Cloud Tasks' retries")
    if steady is None:
        evidence += (f". The steady load could not be judged: no typical duration of "
                     f"{worker}'s jobs (give typical_duration_s = SECONDS in "
                     f"[workers.{worker}] of the workers file, or let tasks run so that "
                     "their attempts can be timed)")
    elif steady > cap.requests:
        evidence += f"; even at a steady rate: {little}"
    else:
        evidence += f"; at a steady rate: {little}, which fit; backlogs and bursts do not"
    instances = math.ceil(concurrent / cap.concurrency)
    quota = (f" (above {QUOTA_INSTANCES} needs a Cloud Run quota increase)"
             if instances > QUOTA_INSTANCES else "")
    fix = (f"gcloud tasks queues update {queue} --max-concurrent-dispatches={cap.requests} "
           f"{where_tasks}, or gcloud run services update {service} "
           f"--max-instances={instances} {where_run}{quota}")
    return "warn", evidence, fix


def capacity(d: Diagnosis, spec: WorkerSpec) -> Verdict:
    """The check's runner: the worker's service and queue as the diagnosis read them."""
    svc = d.service(spec)
    if svc is None:
        return "unknown", "needs: service", None
    got = d.queues[spec.queue]
    if got.missing is not None:
        return "unknown", "needs: queue", None
    if got.error or got.value is None:
        return "unknown", got.error or "the queue could not be read", None
    limits = got.value.rate_limits
    concurrent = limits.max_concurrent_dispatches or DEFAULT_CONCURRENT_DISPATCHES
    rate = limits.max_dispatches_per_second or DEFAULT_DISPATCHES_PER_SECOND
    duration, source = typical_duration(spec, job_durations(d.attempts.get(spec.queue, [])))
    return judge(spec.queue, short_name(svc.name), service_capacity(svc), concurrent, rate,
                 duration, source, f"--location={d.s.tasks_region} --project={d.s.project_id}",
                 d.where, spec.name)

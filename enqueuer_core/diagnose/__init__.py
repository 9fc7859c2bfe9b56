"""Diagnostics: can every worker be reached? Each check says what it saw and the exact fix.

Per worker, in display order (``CHECKS``): the configuration (caller account, URL scheme,
audience, deadline); Cloud Run through its Admin v2 API (the service behind the URL, the
audiences it accepts, its ingress, its request timeout); IAM (``roles/run.invoker`` for the
caller account on the service, ``iam.serviceAccounts.actAs`` on the caller account and
``cloudtasks.tasks.create`` on the queue for the principal running the enqueuer); the queue
(exists, RUNNING) and the last-attempt codes of the tasks in it. Asked for (``probe=True``,
``enqueuer diagnose --probe``), a live probe of each worker's door comes last
(``enqueuer_core.probe``): a signed GET that proves token, audience and invoker binding.

The Google calls run concurrently. An API that is unreachable or refuses makes the checks that
need it ``unknown`` with the reason; a check that needs a failed one is ``unknown`` with
``needs: <check>``. Nothing here raises for what it finds.

What the APIs cannot show: grants on the project (or folder) are not part of a service's
policy, so ``invoker`` may fail while a project-level ``roles/run.invoker`` lets the caller
in (the evidence says so). ``TestIamPermissions`` answers for whoever calls it: run the
diagnostics with the enqueuer's credentials for ``act_as`` and ``create_tasks`` to speak for
the enqueuer. Reading Cloud Run needs ``roles/run.viewer``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from enqueuer_core import clients
from enqueuer_core import probe as probing
from enqueuer_core.access import Acting, Action
from enqueuer_core.calls import Got, built
from enqueuer_core.cloud_run import short_name
from enqueuer_core.config import LOCAL_PRINCIPAL, Settings
from enqueuer_core.diagnose.checks import CHECKS, RUNNERS, TITLES
from enqueuer_core.diagnose.gather import Diagnosis
from enqueuer_core.diagnose.result import CheckResult, Status, worst
from enqueuer_core.workers import load_registry

__all__ = ["CHECKS", "TITLES", "CheckResult", "Status", "diagnose", "worst"]



def diagnose(settings: Settings, workers: list[str] | None = None, *, tasks_client: Any = None,
             run_client: Any = None, iam_client: Any = None, projects_client: Any = None,
             enqueuers: list[str] | None = None,
             timeout_s: float = 10.0, probe: bool = False,
             acting: Acting | None = None) -> list[CheckResult]:
    """Every check for each worker (all of them, or those named), in ``CHECKS`` order.

    Clients not given are built from the settings. ``act_as`` and ``create_tasks`` speak
    for whoever the clients call as (``TestIamPermissions``), unless ``enqueuers`` names the
    accounts to judge (emails): then the caller account's, the queues' and the project's
    policies are read, as ``enqueuer setup`` does when a platform engineer runs it.
    ``UnknownService`` names the valid workers when one asked for does not exist.

    ``probe`` appends a ``probe`` result per worker, probed as ``acting`` (required then):
    ``Forbidden`` for a principal who may not probe, before any request. Nothing else raises.
    """
    registry = load_registry(settings)
    specs = [registry.get(w) for w in workers] if workers else list(registry)
    if probe:
        if acting is None:
            raise ValueError("diagnose(probe=True) needs acting: who probes the doors")
        if acting.why_not(Action.PROBE):
            # Refused before any request, with the refusal's audit line.
            probing.probe_workers(settings, acting, [s.name for s in specs])
    tasks = tasks_client or built(clients.tasks_client, settings, "Cloud Tasks")
    run = run_client or built(clients.run_client, settings, "the Cloud Run Admin API")
    iam = iam_client or built(clients.iam_client, settings, "the IAM API")
    principal = None if isinstance(tasks, Got) else clients.principal(tasks)
    if principal is None and settings.on_emulator:
        principal = LOCAL_PRINCIPAL
    # The project's number and policy are read whoever runs it (the service_agent check).
    projects = projects_client or built(clients.projects_client, settings,
                                         "the Resource Manager API")
    d = Diagnosis(settings, specs, tasks, run, iam, principal, timeout_s, projects, enqueuers)
    with ThreadPoolExecutor(max_workers=16, thread_name_prefix="diagnose") as pool:
        d.fetch(pool)
    results = []
    for spec in specs:
        for check, title in CHECKS:
            if check == probing.CHECK:  # only when asked for: appended below
                continue
            try:
                status, evidence, fix = RUNNERS[check](d, spec)
            except Exception as e:
                status, evidence, fix = "unknown", f"{type(e).__name__}: {e}", None
            results.append(CheckResult(spec.name, check, title, status, evidence,
                                       None if status == "pass" else fix))
    if probe and acting is not None:
        services = {spec.name: short_name(svc.name) for spec in specs
                    if (svc := d.service(spec)) is not None}
        results += probing.probe_workers(
            settings, acting, [s.name for s in specs], timeout_s=timeout_s,
            tasks_client=tasks, queues=d.queues, services=services)
    return results

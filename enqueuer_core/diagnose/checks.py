"""The checks, in display order: each turns a diagnosis and a worker into a status, the
evidence it saw and the exact fix."""

from __future__ import annotations

import collections
from collections.abc import Callable
from urllib.parse import urlsplit

from google.cloud import run_v2, tasks_v2
from google.iam.v1 import policy_pb2

from enqueuer_core import iam_policies
from enqueuer_core.calls import Got
from enqueuer_core.cloud_run import normalized, short_name
from enqueuer_core.config import MAX_DEADLINE_S, MIN_DEADLINE_S, base_url
from enqueuer_core.diagnose import capacity, routing, service_agent
from enqueuer_core.diagnose.gather import Diagnosis
from enqueuer_core.diagnose.result import Status
from enqueuer_core.inspect import TaskSnapshot
from enqueuer_core.workers import WorkerSpec

CHECKS: list[tuple[str, str]] = [
    ("caller_sa", "Caller account is a service account"),
    ("url_scheme", "Worker URL is https"),
    ("audience", "Audience is the scheme and host of the URL"),
    ("deadline", "Dispatch deadline within 15 s - 30 min"),
    ("service", "A Cloud Run service serves the URL"),
    ("audience_accepted", "The service accepts the audience"),
    ("ingress", "Ingress lets Cloud Tasks through"),
    ("deadline_vs_timeout", "Deadline fits the service's request timeout"),
    ("invoker", "Caller account may invoke the service"),
    ("act_as", "Enqueuer may act as the caller account"),
    ("create_tasks", "Enqueuer may create tasks on the queue"),
    ("service_agent", service_agent.TITLE),
    ("queue", "Queue exists and is running"),
    ("queue_target", "Queue routing leaves the worker's URL and token"),
    ("capacity", capacity.TITLE),
    ("queue_failures", "Tasks in the queue are not failing"),
    ("probe", "A real request gets through the door"),  # only when asked for (probe.py)
]
TITLES = dict(CHECKS)
# What a failing last attempt means, by the code most failing tasks share.
_CAUSES = {
    "401": ("audience", "the token's audience is not one the service accepts (401)"),
    "UNAUTHENTICATED": ("audience", "the token's audience is not one the service accepts"),
    "403": ("invoker", "the caller account may not invoke the service (403)"),
    "PERMISSION_DENIED": ("invoker", "the caller account may not invoke the service"),
    "404": ("url", "the URL's path is not served by the worker (404)"),
    "NOT_FOUND": ("url", "the URL's path is not served by the worker"),
    "504": ("deadline", "the worker did not answer within the service's timeout (504)"),
    "DEADLINE_EXCEEDED": ("deadline", "the attempt outlived the dispatch deadline"),
}
_DEFAULT_TIMEOUT_S = 300  # Cloud Run's request timeout when a revision sets none

# -- the checks: (diagnosis, worker) -> (status, evidence, fix) ---------------------------

Verdict = tuple[Status, str, str | None]


def _caller_sa(d: Diagnosis, spec: WorkerSpec) -> Verdict:
    sa = d.s.caller_sa or ""
    example = f"caller@{d.s.project_id}.iam.gserviceaccount.com"
    if "@" not in sa:
        return "fail", f"CALLER_SA={sa!r} is not an email", f"CALLER_SA={example}"
    if not sa.lower().endswith("gserviceaccount.com"):
        return ("warn", f"CALLER_SA={sa} is not a service account: Cloud Tasks mints OIDC "
                "tokens for service accounts only", f"CALLER_SA={example}")
    return "pass", f"CALLER_SA={sa}", None


def _url_scheme(d: Diagnosis, spec: WorkerSpec) -> Verdict:
    parts = urlsplit(spec.url)
    https = spec.url.replace("http://", "https://", 1)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return ("fail", f"{spec.url!r} is not an http(s) URL",
                d.setting(spec, "URL", "https://SERVICE-HASH-uc.a.run.app/PATH"))
    if parts.scheme == "https":
        return "pass", spec.url, None
    if d.s.on_emulator:
        return "pass", f"{spec.url} (http is accepted on the emulator only)", None
    return ("fail", f"{spec.url}: Cloud Run serves https only",
            d.setting(spec, "URL", https))


def _audience(d: Diagnosis, spec: WorkerSpec) -> Verdict:
    want = base_url(spec.url)
    aud = spec.audience
    parts = urlsplit(aud)
    if parts.path or parts.query or parts.fragment or aud.endswith("/"):
        return ("fail", f"audience {aud} has a path, query or trailing slash: Cloud Run "
                "accepts its base URL only, and answers 401", d.setting(spec, "AUD", want))
    if normalized(aud) != normalized(want):
        return ("warn", f"audience {aud} is not the URL's base {want}: it works only if the "
                "service lists it among its custom audiences (see audience_accepted)",
                d.setting(spec, "AUD", want))
    return "pass", f"audience {aud}", None


def _deadline(d: Diagnosis, spec: WorkerSpec) -> Verdict:
    s = spec.deadline_s
    if MIN_DEADLINE_S <= s <= MAX_DEADLINE_S:
        return "pass", f"{s} s", None
    fixed = min(max(s, MIN_DEADLINE_S), MAX_DEADLINE_S)
    return ("fail", f"{s} s is outside what Cloud Tasks accepts for HTTP tasks "
            f"({MIN_DEADLINE_S}-{MAX_DEADLINE_S} s)", d.setting(spec, "DEADLINE", fixed, "_S"))


def _service(d: Diagnosis, spec: WorkerSpec) -> Verdict:
    if d.services.error:
        return "unknown", d.services.error, _viewer_fix(d)
    svc = d.service(spec)
    if svc is None:
        names = ", ".join(f"{short_name(s.name)} ({s.uri})"
                          for s in d.services.value or []) or "none"
        return ("fail", f"no service in {d.location} serves {base_url(spec.url)}; the "
                f"services there: {names}",
                f"gcloud run services list {d.where} and set "
                f"{d.env(spec, 'URL')} to the service's URL (with the worker's path)")
    return "pass", f"{short_name(svc.name)} serves {svc.uri}", None


def _needs_service(d: Diagnosis, spec: WorkerSpec) -> run_v2.Service | Verdict:
    svc = d.service(spec)
    if svc is None:
        return "unknown", "needs: service", None
    return svc


def _audience_accepted(d: Diagnosis, spec: WorkerSpec) -> Verdict:
    svc = _needs_service(d, spec)
    if isinstance(svc, tuple):
        return svc
    accepted = [u for u in dict.fromkeys([svc.uri, *svc.urls, *svc.custom_audiences]) if u]
    if spec.audience in accepted:
        return "pass", f"{spec.audience} is one of {', '.join(accepted)}", None
    name = short_name(svc.name)
    return ("fail", f"{short_name(svc.name)} accepts {', '.join(accepted)}, not {spec.audience}: "
            "Cloud Run answers 401",
            f"{d.setting(spec, 'AUD', svc.uri)} (or gcloud run services update {name} "
            f"--add-custom-audiences={spec.audience} {d.where})")


def _ingress(d: Diagnosis, spec: WorkerSpec) -> Verdict:
    svc = _needs_service(d, spec)
    if isinstance(svc, tuple):
        return svc
    ingress = run_v2.IngressTraffic(svc.ingress)
    fix = f"gcloud run services update {short_name(svc.name)} --ingress=all {d.where}"
    if ingress == run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL:
        return "pass", "ingress: all", None
    if ingress in (run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_ONLY,
                   run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER):
        return ("pass", f"ingress: {ingress.name}: Cloud Tasks in the same project "
                f"({d.s.project_id}) counts as internal", None)
    return "warn", f"ingress: {ingress.name}: Cloud Tasks may be refused", fix


def _deadline_vs_timeout(d: Diagnosis, spec: WorkerSpec) -> Verdict:
    svc = _needs_service(d, spec)
    if isinstance(svc, tuple):
        return svc
    timeout = svc.template.timeout
    seconds = int(timeout.total_seconds()) if timeout else _DEFAULT_TIMEOUT_S
    if spec.deadline_s <= seconds:
        return "pass", f"deadline {spec.deadline_s} s <= timeout {seconds} s", None
    return ("fail", f"deadline {spec.deadline_s} s > timeout {seconds} s of "
            f"{short_name(svc.name)}: Cloud Run answers 504 first",
            f"{d.setting(spec, 'DEADLINE', seconds, '_S')} (or gcloud run services update "
            f"{short_name(svc.name)} --timeout={spec.deadline_s} {d.where})")


def _invoker(d: Diagnosis, spec: WorkerSpec) -> Verdict:
    svc = _needs_service(d, spec)
    if isinstance(svc, tuple):
        return svc
    got = d.policies.get(svc.name) or Got(error="needs: service")
    if got.error or got.value is None:
        return "unknown", got.error or got.missing or "no policy", _viewer_fix(d)
    policy: policy_pb2.Policy = got.value
    member = f"serviceAccount:{d.s.caller_sa}".lower()
    holders = iam_policies.holders(policy, "run.routes.invoke")
    public = [m for m in ("allusers", "allauthenticatedusers") if m in holders]
    name = short_name(svc.name)
    fix = (f"gcloud run services add-iam-policy-binding {name} "
           f"--member=serviceAccount:{d.s.caller_sa} --role=roles/run.invoker {d.where}")
    if member in holders:
        if public:
            return ("warn", f"{d.s.caller_sa} holds {holders[member]} on {name}, and so does "
                    f"{' and '.join(public)}: the worker is public",
                    f"gcloud run services remove-iam-policy-binding {name} "
                    f"--member=allUsers --role=roles/run.invoker {d.where}")
        return "pass", f"{d.s.caller_sa} holds {holders[member]} on {name}", None
    if public:
        return ("warn", f"{name} is public ({' and '.join(public)} may invoke it); "
                f"{d.s.caller_sa} has no binding of its own", fix)
    return ("fail", f"{d.s.caller_sa} holds no roles/run.invoker on {name} (grants on the "
            "project are not visible here): Cloud Run answers 403", fix)


def _judged_from_policies(d: Diagnosis, got: Got, permission: str, where: str,
                          fix: Callable[[str], str]) -> Verdict:
    """``permission`` on a resource for each of ``d.enqueuers``, from its policy and the
    project's (when readable)."""
    if got.error:
        return "unknown", got.error, None
    policies = [got.value]
    project = d.project_policy.value
    if project is not None:
        policies.append(project)
    held, lacking = [], []
    for account in d.enqueuers:
        who = iam_policies.member(account)
        role = next((r for p in policies if (r := iam_policies.holds(p, who, permission))),
                    None)
        (held if role else lacking).append(f"{account} ({role})" if role else account)
    seen = "" if project is not None else (
        f" (the project's policy could not be read: {d.project_policy.error})"
        if d.project_policy.error else "")
    if not lacking:
        return "pass", f"{' and '.join(held)} hold {permission} on {where}{seen}", None
    return ("fail", f"{' and '.join(lacking)} lack {permission} on {where}{seen}",
            "; ".join(fix(a) for a in lacking))


def _act_as(d: Diagnosis, spec: WorkerSpec) -> Verdict:
    got = d.act_as
    sa = d.s.caller_sa
    who = d.principal or "the account running the enqueuer"
    member = f"serviceAccount:{d.principal}" if d.principal else "serviceAccount:PRINCIPAL"
    fix = (f"gcloud iam service-accounts add-iam-policy-binding {sa} --member={member} "
           f"--role=roles/iam.serviceAccountUser --project={d.s.project_id}")
    if got.missing is not None:
        return ("fail", f"the caller account {sa} does not exist",
                f"gcloud iam service-accounts create {(sa or '').split('@')[0]} "
                f"--project={d.s.project_id}")
    if d.enqueuers:
        return _judged_from_policies(
            d, got, "iam.serviceAccounts.actAs", f"the caller account {sa}",
            lambda a: f"gcloud iam service-accounts add-iam-policy-binding {sa} "
                      f"--member={iam_policies.member(a)} --role=roles/iam.serviceAccountUser "
                      f"--project={d.s.project_id}")
    if got.error:
        return "unknown", got.error, None
    if "iam.serviceAccounts.actAs" in got.value.permissions:
        return "pass", f"{who} holds iam.serviceAccounts.actAs on {sa}", None
    return ("fail", f"{who} lacks iam.serviceAccounts.actAs on {sa}: creating a task "
            "answers 403", fix)


def _create_tasks(d: Diagnosis, spec: WorkerSpec) -> Verdict:
    got = d.create[spec.queue]
    if got.missing is not None or d.queues[spec.queue].missing is not None:
        return "unknown", "needs: queue", None
    if d.enqueuers:
        return _judged_from_policies(
            d, got, "cloudtasks.tasks.create", f"the queue {spec.queue}",
            lambda a: f"gcloud tasks queues add-iam-policy-binding {spec.queue} "
                      f"--location={d.s.tasks_region} --member={iam_policies.member(a)} "
                      f"--role=roles/cloudtasks.enqueuer --project={d.s.project_id}")
    if got.error:
        return "unknown", got.error, None
    who = d.principal or "the account running the enqueuer"
    member = f"serviceAccount:{d.principal}" if d.principal else "serviceAccount:PRINCIPAL"
    if "cloudtasks.tasks.create" in got.value.permissions:
        return "pass", f"{who} holds cloudtasks.tasks.create on {spec.queue}", None
    return ("fail", f"{who} lacks cloudtasks.tasks.create on {spec.queue}",
            f"gcloud tasks queues add-iam-policy-binding {spec.queue} "
            f"--location={d.s.tasks_region} --member={member} "
            f"--role=roles/cloudtasks.enqueuer --project={d.s.project_id}")


def _queue(d: Diagnosis, spec: WorkerSpec) -> Verdict:
    got = d.queues[spec.queue]
    loc = f"--location={d.s.tasks_region} --project={d.s.project_id}"
    if got.missing is not None:
        return ("fail", f"{d.s.queue_path(spec.queue)} does not exist",
                f"gcloud tasks queues create {spec.queue} {loc}")
    if got.error:
        return "unknown", got.error, None
    state = tasks_v2.Queue.State(got.value.state)
    if state == tasks_v2.Queue.State.RUNNING:
        return "pass", f"{spec.queue} is RUNNING", None
    if state == tasks_v2.Queue.State.PAUSED:
        return ("warn", f"{spec.queue} is PAUSED: tasks wait and nothing is dispatched",
                f"gcloud tasks queues resume {spec.queue} {loc}")
    return ("fail", f"{spec.queue} is {state.name}",
            f"gcloud tasks queues resume {spec.queue} {loc}")


def _queue_failures(d: Diagnosis, spec: WorkerSpec) -> Verdict:
    got = d.listed[spec.queue]
    if got.missing is not None:
        return "unknown", "needs: queue", None
    if got.error:
        return "unknown", got.error, None
    tasks: list[TaskSnapshot] = got.value
    answered = [t for t in tasks if t.last_response_code is not None]
    failing = [t for t in answered if t.failing]
    if not failing:
        return "pass", f"{len(answered)} of {len(tasks)} tasks answered; none failing", None
    codes = collections.Counter(t.last_response_code for t in failing)
    code, count = codes.most_common(1)[0]
    seen = ", ".join(f"{n}× {c}" for c, n in codes.most_common(4))
    evidence = f"{count} of {len(answered)} tasks' last attempt: {code}"
    if len(codes) > 1:
        evidence += f" ({seen})"
    if str(code) in ("429", "RESOURCE_EXHAUSTED") and count * 2 >= len(failing):
        # Cloud Run's "no available instance": retried with backoff, so a warning.
        return ("warn", evidence + ": Cloud Run had no free instance: the queue pushes more "
                "requests at once than the service takes", "see the capacity check")
    cause = _CAUSES.get(str(code))
    if cause is None or count * 2 < len(failing):
        return "warn", evidence + ": the worker's own answer", None
    kind, what = cause
    fixes = {
        "audience": f"set {d.env(spec, 'AUD')} to {base_url(spec.url)} (see audience, "
                    "audience_accepted)",
        "invoker": f"gcloud run services add-iam-policy-binding SERVICE "
                   f"--member=serviceAccount:{d.s.caller_sa} --role=roles/run.invoker "
                   f"{d.where} (see invoker)",
        "url": f"set {d.env(spec, 'URL')} to the worker's endpoint (see service)",
        "deadline": f"lower {d.env(spec, 'DEADLINE', '_S')} or raise the service's --timeout "
                    "(see deadline_vs_timeout)",
    }
    return "fail", f"{evidence}: {kind} problem: {what}", fixes[kind]


def _viewer_fix(d: Diagnosis) -> str:
    who = f"serviceAccount:{d.principal}" if d.principal else "the account running diagnose"
    return (f"gcloud projects add-iam-policy-binding {d.s.project_id} --member={who} "
            "--role=roles/run.viewer (reading Cloud Run needs it)")


RUNNERS: dict[str, Callable[[Diagnosis, WorkerSpec], Verdict]] = {
    "caller_sa": _caller_sa, "url_scheme": _url_scheme, "audience": _audience,
    "deadline": _deadline, "service": _service, "audience_accepted": _audience_accepted,
    "ingress": _ingress, "deadline_vs_timeout": _deadline_vs_timeout, "invoker": _invoker,
    "act_as": _act_as, "create_tasks": _create_tasks, "queue": _queue,
    "queue_failures": _queue_failures,
    "service_agent": service_agent.service_agent,
    "capacity": capacity.capacity,
    "queue_target": routing.queue_target,
}

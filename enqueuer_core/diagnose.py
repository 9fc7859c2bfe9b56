"""Diagnostics: can every worker be reached? Each check says what it saw and the exact fix.

Per worker, in display order (``CHECKS``): the configuration (caller account, URL scheme,
audience, deadline); Cloud Run through its Admin v2 API (the service behind the URL, the
audiences it accepts, its ingress, its request timeout); IAM (``roles/run.invoker`` for the
caller account on the service, ``iam.serviceAccounts.actAs`` on the caller account and
``cloudtasks.tasks.create`` on the queue for the principal running the enqueuer); the queue
(exists, RUNNING) and the last-attempt codes of the tasks in it.

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

import collections
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from google.api_core import exceptions as gexc
from google.cloud import run_v2, tasks_v2
from google.iam.v1 import iam_policy_pb2, policy_pb2

from enqueuer_core import clients, cloud_run, iam_policies
from enqueuer_core.config import (
    LOCAL_PRINCIPAL,
    MAX_DEADLINE_S,
    MIN_DEADLINE_S,
    Settings,
    base_url,
)
from enqueuer_core.errors import EnqueuerError
from enqueuer_core.inspect import TaskSnapshot
from enqueuer_core.workers import WorkerSpec, load_registry

Status = Literal["pass", "warn", "fail", "unknown"]
_RANK: dict[str, int] = {"pass": 0, "warn": 1, "unknown": 2, "fail": 3}

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
    ("queue", "Queue exists and is running"),
    ("queue_failures", "Tasks in the queue are not failing"),
]
TITLES = dict(CHECKS)
# The settings suffix of each built-in worker: AUD_BRAIN, URL_TESTI, ...
_SHORT = {"brain": "BRAIN", "testimonios": "TESTI", "transcripciones": "TRANS"}
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
T = TypeVar("T")


@dataclass(frozen=True)
class CheckResult:
    worker: str
    check: str
    title: str
    status: Status
    evidence: str
    fix: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def worst(results: Iterable[CheckResult | str]) -> Status:
    """The most serious status: fail > unknown > warn > pass (``pass`` for none)."""
    statuses = [r if isinstance(r, str) else r.status for r in results]
    return max(statuses, key=_RANK.__getitem__, default="pass")  # type: ignore[return-value]


@dataclass(frozen=True)
class _Got:
    """One API answer: ``value``, or ``missing`` (NOT_FOUND), or ``error`` (the reason)."""

    value: Any = None
    error: str | None = None
    missing: str | None = None


def _call(api: str, fn: Callable[[], T]) -> _Got:
    try:
        return _Got(value=fn())
    except gexc.NotFound as e:
        return _Got(missing=e.message)
    except gexc.PermissionDenied as e:
        return _Got(error=f"{api} refused: {e.message}")
    except (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.RetryError) as e:
        return _Got(error=f"{api} is unreachable or too slow: {e}")
    except gexc.GoogleAPICallError as e:
        return _Got(error=f"{api} failed: {e.code.name if e.code else 'error'}: {e.message}")
    except EnqueuerError as e:
        return _Got(error=f"{api}: {e.message}")
    except _ClientError as e:
        return _Got(error=str(e))
    except Exception as e:
        return _Got(error=f"{api}: {type(e).__name__}: {e}")


class _Diagnosis:
    """The answers of every Google call one run needs, fetched concurrently."""

    def __init__(self, settings: Settings, specs: list[WorkerSpec], tasks: Any, run: Any,
                 iam: Any, principal: str | None, timeout_s: float,
                 projects: Any = None, enqueuers: list[str] | None = None) -> None:
        self.s = settings
        self.specs = specs
        self.tasks, self.run, self.iam, self.projects = tasks, run, iam, projects
        self.principal = principal
        # Accounts judged from the policies instead of TestIamPermissions (see diagnose()).
        self.enqueuers = enqueuers or []
        self.timeout = timeout_s
        self.location = f"projects/{settings.project_id}/locations/{settings.tasks_region}"

    # -- fetching ----------------------------------------------------------------------

    def fetch(self, pool: ThreadPoolExecutor) -> None:
        queues = sorted({spec.queue for spec in self.specs})
        services = pool.submit(self._list_services)
        if self.enqueuers:
            act_as = pool.submit(self._caller_policy)
            create = {q: pool.submit(self._queue_policy, q) for q in queues}
            project = pool.submit(self._project_policy)
        else:
            act_as = pool.submit(self._act_as)
            create = {q: pool.submit(self._test_queue, q) for q in queues}
        got_queue = {q: pool.submit(self._get_queue, q) for q in queues}
        listed = {q: pool.submit(self._list_tasks, q) for q in queues}
        self.services: _Got = services.result()
        found = {self.service_of(spec) for spec in self.specs} - {None}
        policies = {name: pool.submit(self._policy, name) for name in found}
        self.act_as = act_as.result()
        self.queues = {q: f.result() for q, f in got_queue.items()}
        self.create = {q: f.result() for q, f in create.items()}
        self.listed = {q: f.result() for q, f in listed.items()}
        self.policies = {name: f.result() for name, f in policies.items()}
        # Grants on the project count too; unreadable, only the resources' own are seen.
        self.project_policy = project.result() if self.enqueuers else _Got()

    def _client(self, client: Any, what: str) -> Any:
        if isinstance(client, _Got):
            raise _ClientError(client.error or what)
        return client

    def _list_services(self) -> _Got:
        return _call("the Cloud Run Admin API", lambda: cloud_run.list_services(
            self._client(self.run, "Cloud Run Admin API"), self.location, self.timeout))

    def _policy(self, service: str) -> _Got:
        return _call("the Cloud Run Admin API", lambda: self._client(
            self.run, "Cloud Run Admin API").get_iam_policy(
            request=iam_policy_pb2.GetIamPolicyRequest(resource=service),
            retry=None, timeout=self.timeout))

    def _act_as(self) -> _Got:
        if "@" not in (self.s.caller_sa or ""):
            return _Got(error="needs: caller_sa")
        return _call("the IAM API", lambda: self._client(self.iam, "IAM API")
                     .test_iam_permissions(
            request=iam_policy_pb2.TestIamPermissionsRequest(
                resource=f"projects/-/serviceAccounts/{self.s.caller_sa}",
                permissions=["iam.serviceAccounts.actAs"]),
            retry=None, timeout=self.timeout))

    def _caller_policy(self) -> _Got:
        if "@" not in (self.s.caller_sa or ""):
            return _Got(error="needs: caller_sa")
        return _call("the IAM API", lambda: self._client(self.iam, "IAM API").get_iam_policy(
            request=iam_policies.policy_request(f"projects/-/serviceAccounts/{self.s.caller_sa}"),
            retry=None, timeout=self.timeout))

    def _queue_policy(self, queue: str) -> _Got:
        return _call("Cloud Tasks", lambda: self._client(self.tasks, "Cloud Tasks")
                     .get_iam_policy(request=iam_policies.policy_request(self.s.queue_path(queue)),
                                     retry=None, timeout=self.timeout))

    def _project_policy(self) -> _Got:
        return _call("the Resource Manager API", lambda: self._client(
            self.projects, "Resource Manager API").get_iam_policy(
            request=iam_policies.policy_request(f"projects/{self.s.project_id}"),
            retry=None, timeout=self.timeout))

    def _get_queue(self, queue: str) -> _Got:
        return _call("Cloud Tasks", lambda: self._client(self.tasks, "Cloud Tasks").get_queue(
            name=self.s.queue_path(queue), retry=None, timeout=self.timeout))

    def _test_queue(self, queue: str) -> _Got:
        return _call("Cloud Tasks", lambda: self._client(self.tasks, "Cloud Tasks")
                     .test_iam_permissions(
            request=iam_policy_pb2.TestIamPermissionsRequest(
                resource=self.s.queue_path(queue), permissions=["cloudtasks.tasks.create"]),
            retry=None, timeout=self.timeout))

    def _list_tasks(self, queue: str) -> _Got:
        return _call("Cloud Tasks", lambda: [
            TaskSnapshot.from_task(t) for t in self._client(self.tasks, "Cloud Tasks")
            .list_tasks(request=tasks_v2.ListTasksRequest(
                parent=self.s.queue_path(queue), page_size=1000),
                retry=None, timeout=self.timeout).tasks])

    # -- helpers -----------------------------------------------------------------------

    def service_of(self, spec: WorkerSpec) -> str | None:
        """The name of the service whose URL is the worker's scheme and host."""
        svc = self.service(spec)
        return svc.name if svc is not None else None

    def service(self, spec: WorkerSpec) -> run_v2.Service | None:
        if self.services.value is None:
            return None
        return cloud_run.service_for(self.services.value, spec.url)

    def env(self, spec: WorkerSpec, prefix: str, suffix: str = "") -> str:
        short = _SHORT.get(spec.name)
        if short is None:
            return f"[workers.{spec.name}] {prefix.lower()} in the workers file"
        return f"{prefix}_{short}{suffix}"

    def setting(self, spec: WorkerSpec, prefix: str, value: object, suffix: str = "") -> str:
        short = _SHORT.get(spec.name)
        if short is None:
            field = {"AUD": "audience", "URL": "url", "DEADLINE": "deadline_s"}[prefix]
            shown = f'"{value}"' if isinstance(value, str) else value
            return f"{field} = {shown} in [workers.{spec.name}] of the workers file"
        return f"{prefix}_{short}{suffix}={value}"

    @property
    def where(self) -> str:
        return f"--region={self.s.tasks_region} --project={self.s.project_id}"


class _ClientError(Exception):
    pass


_norm = cloud_run.normalized
_short = cloud_run.short_name


# -- the checks: (diagnosis, worker) -> (status, evidence, fix) ---------------------------

Verdict = tuple[Status, str, str | None]


def _caller_sa(d: _Diagnosis, spec: WorkerSpec) -> Verdict:
    sa = d.s.caller_sa or ""
    example = f"caller@{d.s.project_id}.iam.gserviceaccount.com"
    if "@" not in sa:
        return "fail", f"CALLER_SA={sa!r} is not an email", f"CALLER_SA={example}"
    if not sa.lower().endswith("gserviceaccount.com"):
        return ("warn", f"CALLER_SA={sa} is not a service account: Cloud Tasks mints OIDC "
                "tokens for service accounts only", f"CALLER_SA={example}")
    return "pass", f"CALLER_SA={sa}", None


def _url_scheme(d: _Diagnosis, spec: WorkerSpec) -> Verdict:
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


def _audience(d: _Diagnosis, spec: WorkerSpec) -> Verdict:
    want = base_url(spec.url)
    aud = spec.audience
    parts = urlsplit(aud)
    if parts.path or parts.query or parts.fragment or aud.endswith("/"):
        return ("fail", f"audience {aud} has a path, query or trailing slash: Cloud Run "
                "accepts its base URL only, and answers 401", d.setting(spec, "AUD", want))
    if _norm(aud) != _norm(want):
        return ("warn", f"audience {aud} is not the URL's base {want}: it works only if the "
                "service lists it among its custom audiences (see audience_accepted)",
                d.setting(spec, "AUD", want))
    return "pass", f"audience {aud}", None


def _deadline(d: _Diagnosis, spec: WorkerSpec) -> Verdict:
    s = spec.deadline_s
    if MIN_DEADLINE_S <= s <= MAX_DEADLINE_S:
        return "pass", f"{s} s", None
    fixed = min(max(s, MIN_DEADLINE_S), MAX_DEADLINE_S)
    return ("fail", f"{s} s is outside what Cloud Tasks accepts for HTTP tasks "
            f"({MIN_DEADLINE_S}-{MAX_DEADLINE_S} s)", d.setting(spec, "DEADLINE", fixed, "_S"))


def _service(d: _Diagnosis, spec: WorkerSpec) -> Verdict:
    if d.services.error:
        return "unknown", d.services.error, _viewer_fix(d)
    svc = d.service(spec)
    if svc is None:
        names = ", ".join(f"{_short(s.name)} ({s.uri})" for s in d.services.value or []) or "none"
        return ("fail", f"no service in {d.location} serves {base_url(spec.url)}; the "
                f"services there: {names}",
                f"gcloud run services list {d.where} and set "
                f"{d.env(spec, 'URL')} to the service's URL (with the worker's path)")
    return "pass", f"{_short(svc.name)} serves {svc.uri}", None


def _needs_service(d: _Diagnosis, spec: WorkerSpec) -> run_v2.Service | Verdict:
    svc = d.service(spec)
    if svc is None:
        return "unknown", "needs: service", None
    return svc


def _audience_accepted(d: _Diagnosis, spec: WorkerSpec) -> Verdict:
    svc = _needs_service(d, spec)
    if isinstance(svc, tuple):
        return svc
    accepted = [u for u in dict.fromkeys([svc.uri, *svc.urls, *svc.custom_audiences]) if u]
    if spec.audience in accepted:
        return "pass", f"{spec.audience} is one of {', '.join(accepted)}", None
    name = _short(svc.name)
    return ("fail", f"{_short(svc.name)} accepts {', '.join(accepted)}, not {spec.audience}: "
            "Cloud Run answers 401",
            f"{d.setting(spec, 'AUD', svc.uri)} (or gcloud run services update {name} "
            f"--add-custom-audiences={spec.audience} {d.where})")


def _ingress(d: _Diagnosis, spec: WorkerSpec) -> Verdict:
    svc = _needs_service(d, spec)
    if isinstance(svc, tuple):
        return svc
    ingress = run_v2.IngressTraffic(svc.ingress)
    fix = f"gcloud run services update {_short(svc.name)} --ingress=all {d.where}"
    if ingress == run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL:
        return "pass", "ingress: all", None
    if ingress in (run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_ONLY,
                   run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER):
        return ("pass", f"ingress: {ingress.name}: Cloud Tasks in the same project "
                f"({d.s.project_id}) counts as internal", None)
    return "warn", f"ingress: {ingress.name}: Cloud Tasks may be refused", fix


def _deadline_vs_timeout(d: _Diagnosis, spec: WorkerSpec) -> Verdict:
    svc = _needs_service(d, spec)
    if isinstance(svc, tuple):
        return svc
    timeout = svc.template.timeout
    seconds = int(timeout.total_seconds()) if timeout else _DEFAULT_TIMEOUT_S
    if spec.deadline_s <= seconds:
        return "pass", f"deadline {spec.deadline_s} s <= timeout {seconds} s", None
    return ("fail", f"deadline {spec.deadline_s} s > timeout {seconds} s of "
            f"{_short(svc.name)}: Cloud Run answers 504 first",
            f"{d.setting(spec, 'DEADLINE', seconds, '_S')} (or gcloud run services update "
            f"{_short(svc.name)} --timeout={spec.deadline_s} {d.where})")


def _invoker(d: _Diagnosis, spec: WorkerSpec) -> Verdict:
    svc = _needs_service(d, spec)
    if isinstance(svc, tuple):
        return svc
    got = d.policies.get(svc.name) or _Got(error="needs: service")
    if got.error or got.value is None:
        return "unknown", got.error or got.missing or "no policy", _viewer_fix(d)
    policy: policy_pb2.Policy = got.value
    member = f"serviceAccount:{d.s.caller_sa}".lower()
    holders = iam_policies.holders(policy, "run.routes.invoke")
    public = [m for m in ("allusers", "allauthenticatedusers") if m in holders]
    name = _short(svc.name)
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


def _judged_from_policies(d: _Diagnosis, got: _Got, permission: str, where: str,
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


def _act_as(d: _Diagnosis, spec: WorkerSpec) -> Verdict:
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


def _create_tasks(d: _Diagnosis, spec: WorkerSpec) -> Verdict:
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


def _queue(d: _Diagnosis, spec: WorkerSpec) -> Verdict:
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


def _queue_failures(d: _Diagnosis, spec: WorkerSpec) -> Verdict:
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


def _viewer_fix(d: _Diagnosis) -> str:
    who = f"serviceAccount:{d.principal}" if d.principal else "the account running diagnose"
    return (f"gcloud projects add-iam-policy-binding {d.s.project_id} --member={who} "
            "--role=roles/run.viewer (reading Cloud Run needs it)")


_RUNNERS: dict[str, Callable[[_Diagnosis, WorkerSpec], Verdict]] = {
    "caller_sa": _caller_sa, "url_scheme": _url_scheme, "audience": _audience,
    "deadline": _deadline, "service": _service, "audience_accepted": _audience_accepted,
    "ingress": _ingress, "deadline_vs_timeout": _deadline_vs_timeout, "invoker": _invoker,
    "act_as": _act_as, "create_tasks": _create_tasks, "queue": _queue,
    "queue_failures": _queue_failures,
}


def _build(factory: Callable[[Settings], Any], settings: Settings, what: str) -> Any:
    try:
        return factory(settings)
    except EnqueuerError as e:
        return _Got(error=f"{what}: {e.message}")


def diagnose(settings: Settings, workers: list[str] | None = None, *, tasks_client: Any = None,
             run_client: Any = None, iam_client: Any = None, projects_client: Any = None,
             enqueuers: list[str] | None = None,
             timeout_s: float = 10.0) -> list[CheckResult]:
    """Every check for each worker (all of them, or those named), in ``CHECKS`` order.

    Clients not given are built from the settings. ``act_as`` and ``create_tasks`` speak
    for whoever the clients call as (``TestIamPermissions``), unless ``enqueuers`` names the
    accounts to judge (emails): then the caller account's, the queues' and the project's
    policies are read, as ``enqueuer setup`` does when a platform engineer runs it.
    ``UnknownService`` names the valid workers when one asked for does not exist; nothing
    else raises.
    """
    registry = load_registry(settings)
    specs = [registry.get(w) for w in workers] if workers else list(registry)
    tasks = tasks_client or _build(clients.tasks_client, settings, "Cloud Tasks")
    run = run_client or _build(clients.run_client, settings, "the Cloud Run Admin API")
    iam = iam_client or _build(clients.iam_client, settings, "the IAM API")
    principal = None if isinstance(tasks, _Got) else clients.principal(tasks)
    if principal is None and settings.on_emulator:
        principal = LOCAL_PRINCIPAL
    projects = None
    if enqueuers:
        projects = projects_client or _build(clients.projects_client, settings,
                                             "the Resource Manager API")
    d = _Diagnosis(settings, specs, tasks, run, iam, principal, timeout_s, projects, enqueuers)
    with ThreadPoolExecutor(max_workers=16, thread_name_prefix="diagnose") as pool:
        d.fetch(pool)
    results = []
    for spec in specs:
        for check, title in CHECKS:
            try:
                status, evidence, fix = _RUNNERS[check](d, spec)
            except Exception as e:
                status, evidence, fix = "unknown", f"{type(e).__name__}: {e}", None
            results.append(CheckResult(spec.name, check, title, status, evidence,
                                       None if status == "pass" else fix))
    return results

"""The live probe of each worker's door: a real request, signed as Cloud Tasks signs it.

Diagnostics read configuration and policies; the probe proves them. For each worker, on its
effective target (the task's URL, audience and account, or what the queue's ``http_target``
overrides: ``diagnose.target``), it mints an ID token as that account for that audience
through IAM Credentials' ``generateIdToken`` (with the email claim, as Cloud Tasks' tokens
carry it), then sends a **GET** to the worker's URL with ``Authorization: Bearer``. Never
the job's method: a POST would run a job.

Cloud Run's door answers before the container does: 401 when the token or its audience is
refused, 403 when the account lacks ``run.routes.invoke``. Anything else (200, the app's
404, a POST-only handler's 405, even a 5xx) came from behind the door: token, audience and
invoker binding are proven. One CheckResult ``probe`` per worker:

- ``pass``: proven;
- ``fail``: 401 or 403 at the door (the status, the door's reason, the fix), the worker
  unreachable, or the account unknown to IAM;
- ``unknown``: the probe could not tell. Most often the principal running it may not mint
  tokens as the account: it needs ``roles/iam.serviceAccountOpenIdTokenCreator`` on it (the
  fix says who and how). Also: a 404 page of Google's own (no service at that URL, or an
  ingress that turns away requests from outside the project, which Cloud Tasks in the
  project passes), a queue that sends OAuth tokens, a worker slower than the timeout.

Probing is an operator's action (``Action.PROBE``): a viewer is refused before any
request; each run leaves one audit line. The request never follows a redirect: the token
goes to the worker's host and nowhere else.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2

from enqueuer_core import clients
from enqueuer_core.access import Acting, Action, member_for_email
from enqueuer_core.calls import Got, built, call
from enqueuer_core.config import Settings, base_url
from enqueuer_core.diagnose.checks import TITLES
from enqueuer_core.diagnose.result import CheckResult, Status
from enqueuer_core.diagnose.target import EffectiveTarget, effective_target
from enqueuer_core.errors import EnqueuerError
from enqueuer_core.setting_names import setting_name
from enqueuer_core.workers import WorkerSpec, load_registry

CHECK = "probe"
MINTER_ROLE = "roles/iam.serviceAccountOpenIdTokenCreator"
USER_AGENT = "Enqueuer-Probe"  # not Google-Cloud-Tasks: the probe does not pass for it
_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)
Verdict = tuple[Status, str, str | None]


def probe_workers(settings: Settings, acting: Acting, workers: list[str] | None = None, *,
                  timeout_s: float = 10.0, tasks_client: Any = None,
                  credentials_client: Any = None, queues: Mapping[str, Got] | None = None,
                  services: Mapping[str, str] | None = None) -> list[CheckResult]:
    """Probe each worker (all, or those named) in parallel; one ``probe`` result each.

    ``Forbidden`` unless ``acting`` may probe (operator or admin), before any request;
    ``UnknownService`` for a worker that does not exist. Clients not given are built from
    the settings; ``queues`` (queue ID -> GetQueue's answer) and ``services`` (worker -> its
    Cloud Run service's name) spare the calls ``diagnose`` has made already and name the
    service in the fixes.
    """
    registry = load_registry(settings)
    specs = [registry.get(w) for w in workers] if workers else list(registry)
    names = [s.name for s in specs]
    with acting.doing(Action.PROBE, f"projects/{settings.project_id}", workers=names) as record:
        tasks = tasks_client or built(clients.tasks_client, settings, "Cloud Tasks")
        creds = credentials_client or built(clients.credentials_client, settings,
                                             "the IAM Credentials API")
        prober = Prober(settings, tasks, creds, timeout_s, queues or {}, services or {})
        with ThreadPoolExecutor(max_workers=min(16, len(specs) or 1),
                                thread_name_prefix="probe") as pool:
            results = list(pool.map(prober.result, specs))
        record["results"] = {r.worker: r.status for r in results}
    return results



class Prober:
    """One run's clients and settings; ``result`` probes one worker."""

    def __init__(self, settings: Settings, tasks: Any, creds: Any, timeout_s: float,
                 queues: Mapping[str, Got], services: Mapping[str, str]) -> None:
        self.s = settings
        self.tasks, self.creds = tasks, creds
        self.timeout = timeout_s
        self.queues, self.services = queues, services
        self.where = f"--region={settings.tasks_region} --project={settings.project_id}"

    def result(self, spec: WorkerSpec) -> CheckResult:
        try:
            status, evidence, fix = self.probe(spec)
        except Exception as e:  # a probe reports; it never breaks the run
            status, evidence, fix = "unknown", f"{type(e).__name__}: {e}", None
        return CheckResult(spec.name, CHECK, TITLES[CHECK], status, evidence,
                           None if status == "pass" else fix)

    def probe(self, spec: WorkerSpec) -> Verdict:
        got = self.queues.get(spec.queue) or self._get_queue(spec.queue)
        target = effective_target(spec, self.s.caller_sa, got.value)
        seen = "" if got.value is not None else (
            f" (the queue's own settings unread: {got.error or got.missing}; probed with the "
            "task's)")
        if target.token == "oauth":
            return ("unknown", "the queue's http_target sends an OAuth access token, not an "
                    f"ID token: the probe mints ID tokens only (see queue_target){seen}", None)
        token = ""
        if target.token == "oidc":
            if not target.account or "@" not in target.account or not target.audience:
                return "unknown", "needs: caller_sa (no account to mint a token as)", None
            minted = self._mint(target.account, target.audience)
            if isinstance(minted, tuple):
                return minted
            token = minted
        return self._get(spec, target, token, seen)

    # -- the two calls ------------------------------------------------------------------

    def _get_queue(self, queue: str) -> Got:
        def get() -> tasks_v2.Queue:
            if isinstance(self.tasks, Got):
                raise EnqueuerError(self.tasks.error or "no Cloud Tasks client")
            return self.tasks.get_queue(name=self.s.queue_path(queue), retry=None,
                                        timeout=self.timeout)
        return call("Cloud Tasks", get)

    def _mint(self, account: str, audience: str) -> str | Verdict:
        """An ID token as ``account`` for ``audience``, or the verdict of why not."""
        if isinstance(self.creds, Got):
            return "unknown", self.creds.error or "no IAM Credentials client", None
        try:
            return self.creds.generate_id_token(
                name=f"projects/-/serviceAccounts/{account}", audience=audience,
                include_email=True, retry=None, timeout=self.timeout).token
        except gexc.PermissionDenied as e:
            who = self._minter()
            return ("unknown", f"{who} may not mint ID tokens as {account}, so the door was "
                    f"not tried (IAM Credentials: {e.message}): the probe needs {MINTER_ROLE} "
                    f"on {account} for {who}",
                    f"gcloud iam service-accounts add-iam-policy-binding {account} "
                    f"--member={who if ':' in who else 'PRINCIPAL'} --role={MINTER_ROLE} "
                    f"--project={self.s.project_id}")
        except gexc.NotFound as e:
            return ("fail", f"the account {account} does not exist ({e.message}): Cloud Tasks "
                    "cannot mint its tokens either",
                    f"gcloud iam service-accounts create {account.split('@')[0]} "
                    f"--project={self.s.project_id}")
        except gexc.GoogleAPICallError as e:
            code = e.code.name if e.code else "error"
            return "unknown", f"the IAM Credentials API failed: {code}: {e.message}", None

    def _minter(self) -> str:
        """Who asks IAM Credentials for the token, as an IAM member when known."""
        email = clients.principal(self.creds)
        if email:
            return member_for_email(email)
        try:
            return clients.acting_principal(self.s)
        except EnqueuerError:
            return "the account running the probe"

    def _get(self, spec: WorkerSpec, t: EffectiveTarget, token: str, seen: str) -> Verdict:
        headers = {"User-Agent": USER_AGENT}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        signed = (f"as {t.account}, audience {t.audience}" if token
                  else "with no token (the tasks carry none)")
        try:
            # No redirect is followed: the token must not travel to another host.
            with httpx.Client(timeout=self.timeout, follow_redirects=False) as http:
                answer = http.get(t.url, headers=headers)
        except httpx.TimeoutException as e:
            kind = "connect" if isinstance(e, httpx.ConnectTimeout) else "answer"
            if kind == "connect":
                return ("fail", f"GET {t.url}: unreachable (no connection within "
                        f"{self.timeout:g} s){seen}", self._url_fix(spec))
            return ("unknown", f"GET {t.url} {signed}: no answer within {self.timeout:g} s; "
                    f"the door's verdict is unknown{seen}", None)
        except httpx.HTTPError as e:
            return ("fail", f"GET {t.url}: unreachable ({type(e).__name__}: {e}){seen}",
                    self._url_fix(spec))
        status = answer.status_code
        said = f"GET {t.url} {signed}: Cloud Run's door answered {status}"
        if status in (401, 403):
            reason = _door_reason(answer)
            fix = self._audience_fix(spec, t) if status == 401 else self._invoker_fix(spec, t)
            return "fail", f"{said} ({reason}){seen}", fix
        if status == 404 and _googles_404(answer):
            return ("unknown", f"GET {t.url} {signed}: 404 from Google's front end, not the "
                    f"app ({_door_reason(answer)}): no Cloud Run service at this URL, or an "
                    "ingress that turns away requests from outside the project (Cloud Tasks "
                    f"in the project gets in): see service and ingress{seen}", None)
        if not token:
            return ("pass", f"proven: the door lets requests without a token in (GET answered "
                    f"{status}): {t.url} is public{seen}", None)
        return ("pass", f"proven: token, audience and invoker binding accepted (GET answered "
                f"{status}): {t.url} {signed}{seen}", None)

    # -- fixes --------------------------------------------------------------------------

    def _service(self, spec: WorkerSpec) -> str:
        return self.services.get(spec.name) or "SERVICE"

    def _audience_fix(self, spec: WorkerSpec, t: EffectiveTarget) -> str:
        if t.audience != spec.audience:
            return (f"the audience {t.audience} is the queue's http_target override: make it "
                    f"{base_url(t.url)} (see queue_target)")
        return (f"{setting_name(spec, 'audience', self.s).assign(base_url(t.url))} (or gcloud "
                f"run services update {self._service(spec)} "
                f"--add-custom-audiences={t.audience} {self.where})")

    def _invoker_fix(self, spec: WorkerSpec, t: EffectiveTarget) -> str:
        fix = (f"gcloud run services add-iam-policy-binding {self._service(spec)} "
               f"--member=serviceAccount:{t.account} --role=roles/run.invoker {self.where}")
        if t.account and t.account.lower() != (self.s.caller_sa or "").lower():
            fix += " (the account is the queue's http_target override: see queue_target)"
        return fix

    def _url_fix(self, spec: WorkerSpec) -> str:
        return (f"gcloud run services list {self.where} and set "
                f"{setting_name(spec, 'url', self.s)} to the service's URL (with the worker's "
                "path)")


def _door_reason(answer: httpx.Response) -> str:
    """Why the door refused: the emulator says exactly; Google, in its header or page."""
    if reason := answer.headers.get("X-Emulator-Reason"):
        return reason
    if reason := answer.headers.get("WWW-Authenticate"):
        return f"WWW-Authenticate: {reason}"
    m = _TITLE.search(answer.text[:4096])
    return html.unescape(" ".join(m[1].split())) if m else "no reason given"


def _googles_404(answer: httpx.Response) -> bool:
    """Google's own 404 page (its front end's, not the app's)."""
    if "X-Emulator-Reason" in answer.headers:
        return True
    text = answer.text[:4096]
    return "<title>404 Page not found</title>" in text and "Error: Page not found" in text

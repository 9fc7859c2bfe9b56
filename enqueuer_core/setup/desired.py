"""What Google must hold for this config: pure, from the settings, the workers and the Cloud Run
services found for them. Each item knows its ``gcloud`` equivalent.

The accounts, and what each is granted (least privilege, on the resource rather than the
project wherever Google allows it):

| account | holds | on |
|---|---|---|
| ``API_SA`` (the API) | ``roles/cloudtasks.enqueuer`` | each worker's queue |
| ``DASHBOARD_SA`` (the dashboard) | ``roles/cloudtasks.editor`` (enqueue, list, run, delete tasks; pause, resume, purge; no IAM) | each worker's queue |
| both | ``roles/iam.serviceAccountUser`` (mint tasks' tokens as it) | ``CALLER_SA`` |
| the Cloud Tasks service agent (``service-PROJECT_NUMBER@gcp-sa-cloudtasks.iam.gserviceaccount.com``) | ``roles/iam.serviceAccountTokenCreator`` (Cloud Tasks mints the tasks' OIDC tokens as it) | ``CALLER_SA`` |
| ``DASHBOARD_SA`` | ``roles/iam.serviceAccountOpenIdTokenCreator`` (the Diagnostics "Probe" mints an ID token as it) | ``CALLER_SA`` |
| ``DASHBOARD_SA`` | ``roles/iam.serviceAccountViewer`` (diagnostics read who may mint as it) | ``CALLER_SA`` |
| ``CALLER_SA`` (the tokens) | ``roles/run.invoker`` | each worker's Cloud Run service |
| ``DASHBOARD_SA`` | ``roles/run.viewer`` (diagnostics list the services) | the project |
| ``DASHBOARD_SA`` | ``roles/logging.viewer`` (history: attempts, dead letters, activity) | the project |

and the three accounts exist. Each worker's queue exists, with the rate limits and retry
configuration of the workers file where it gives them.

The service agent's grant is the original service's setup step 3. Google documents it as
required for projects created before 19 March 2019; newer projects hold
``roles/cloudtasks.serviceAgent`` on the project, which carries the same
``iam.serviceAccounts.getOpenIdToken`` and ``getAccessToken``
(https://cloud.google.com/iam/docs/roles-permissions/cloudtasks), so the grant is harmless
there. Its email needs the project's number: without it (Resource Manager would not show it)
the plan names what to grant instead (``AgentUnknown``).
"""  # noqa: E501

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Literal

from enqueuer_core.config import Settings
from enqueuer_core.errors import ConfigError
from enqueuer_core.iam_policies import member
from enqueuer_core.workers import RateLimits, Registry, RetryConfig, WorkerSpec

Scope = Literal["queue", "service_account", "run_service", "project"]
API_QUEUE_ROLE = "roles/cloudtasks.enqueuer"
DASHBOARD_QUEUE_ROLE = "roles/cloudtasks.editor"
ACT_AS_ROLE = "roles/iam.serviceAccountUser"
INVOKER_ROLE = "roles/run.invoker"
DASHBOARD_PROJECT_ROLE = "roles/run.viewer"
# Reads log entries (logging.logEntries.list) of the project's logs: the queues' task-operation
# logs and the services' audit lines. Granted on the project: a log bucket's policy would need
# IAM conditions, and the project is where Google's docs grant it
# (https://cloud.google.com/logging/docs/access-control#logging.viewer).
HISTORY_ROLE = "roles/logging.viewer"
TOKEN_CREATOR_ROLE = "roles/iam.serviceAccountTokenCreator"
# What Google grants the service agent on the project itself (the roles page above).
TASKS_AGENT_ROLE = "roles/cloudtasks.serviceAgent"
# Only getOpenIdToken: the Probe mints ID tokens, never access tokens.
OPENID_TOKEN_ROLE = "roles/iam.serviceAccountOpenIdTokenCreator"
# The smallest predefined role holding iam.serviceAccounts.getIamPolicy, on the account only:
# the service_agent check reads the caller account's policy.
SA_VIEWER_ROLE = "roles/iam.serviceAccountViewer"
_SA_DOMAIN = ".iam.gserviceaccount.com"


def tasks_service_agent(project_number: str) -> str:
    """The email of the project's Cloud Tasks service agent."""
    return f"service-{project_number}@gcp-sa-cloudtasks{_SA_DOMAIN}"


def _cmd(*words: str) -> str:
    return " ".join(shlex.quote(w) for w in words)


@dataclass(frozen=True)
class AccountWant:
    """A service account that must exist."""

    email: str
    purpose: str
    project: str

    @property
    def account_id(self) -> str | None:
        """The ID to create it with, when it belongs to the project (else it cannot be
        created from here)."""
        local, _, domain = self.email.partition("@")
        return local if domain.lower() == f"{self.project}{_SA_DOMAIN}" else None

    @property
    def display_name(self) -> str:
        """``enqueuer-api`` -> ``Enqueuer API``."""
        return " ".join("API" if w == "api" else w.capitalize()
                        for w in (self.account_id or "").split("-"))

    @property
    def what(self) -> str:
        return f"service account {self.email} ({self.purpose})"

    def gcloud(self) -> str:
        if self.account_id is None:
            return (f"# {self.email} belongs to another project: create it there, or set "
                    "the setting to an account of this project")
        return _cmd("gcloud", "iam", "service-accounts", "create", self.account_id,
                    f"--display-name={self.display_name}", f"--project={self.project}")


@dataclass(frozen=True)
class QueueWant:
    """A queue that must exist, with what the workers file says of its configuration."""

    path: str
    workers: tuple[str, ...]
    rate_limits: RateLimits | None = None
    retry_config: RetryConfig | None = None

    @property
    def queue_id(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def location(self) -> tuple[str, str]:
        parts = self.path.split("/")
        return parts[1], parts[3]

    @property
    def what(self) -> str:
        return f"queue {self.queue_id} (for {', '.join(self.workers)})"

    def settings(self) -> dict[str, float | int]:
        """The configured fields, by their name in the Queue message's field mask."""
        out: dict[str, float | int] = {}
        for prefix, model in (("rate_limits", self.rate_limits),
                              ("retry_config", self.retry_config)):
            for name, value in (model.model_dump(exclude_none=True) if model else {}).items():
                out[f"{prefix}.{name}"] = value
        return out

    def gcloud(self, verb: str = "create", only: set[str] | None = None) -> str:
        project, location = self.location
        flags = [_flag(k, v) for k, v in self.settings().items() if only is None or k in only]
        return _cmd("gcloud", "tasks", "queues", verb, self.queue_id, f"--location={location}",
                    *flags, f"--project={project}")


def _flag(field_path: str, value: float | int) -> str:
    name = field_path.split(".", 1)[1].removesuffix("_s").replace("_", "-")
    shown = str(int(value)) if float(value).is_integer() else str(value)
    return f"--{name}={shown}{'s' if field_path.endswith('_s') else ''}"


@dataclass(frozen=True)
class Grant:
    """``member`` must hold ``role`` on ``resource`` (a full resource name)."""

    scope: Scope
    resource: str
    role: str
    member: str
    why: str

    @property
    def short(self) -> str:
        return self.resource.rsplit("/", 1)[-1]

    @property
    def api(self) -> str:
        """The Google API that holds the resource's policy."""
        return {"queue": "Cloud Tasks", "service_account": "the IAM API",
                "run_service": "the Cloud Run Admin API",
                "project": "the Resource Manager API"}[self.scope]

    @property
    def what(self) -> str:
        where = {"queue": "queue", "service_account": "account", "run_service": "service",
                 "project": "project"}[self.scope]
        return f"{self.role} for {self.member} on {where} {self.short} ({self.why})"

    def gcloud(self) -> str:
        who = [f"--member={self.member}", f"--role={self.role}"]
        parts = self.resource.split("/")
        if self.scope == "queue":
            return _cmd("gcloud", "tasks", "queues", "add-iam-policy-binding", self.short,
                        f"--location={parts[3]}", *who, f"--project={parts[1]}")
        if self.scope == "run_service":
            return _cmd("gcloud", "run", "services", "add-iam-policy-binding", self.short,
                        f"--region={parts[3]}", *who, f"--project={parts[1]}")
        if self.scope == "service_account":
            project = self.short.partition("@")[2].removesuffix(_SA_DOMAIN)
            return _cmd("gcloud", "iam", "service-accounts", "add-iam-policy-binding",
                        self.short, *who, f"--project={project}")
        return _cmd("gcloud", "projects", "add-iam-policy-binding", self.short, *who,
                    "--condition=None")


@dataclass(frozen=True)
class ServiceMissing:
    """A worker whose URL no Cloud Run service serves: its invoker grant cannot be made."""

    worker: str
    url: str
    location: str

    @property
    def what(self) -> str:
        return (f"the Cloud Run service of {self.worker}: none in {self.location} serves "
                f"{self.url}; deploy the worker, or set its URL to the service's")

    def gcloud(self) -> str:
        parts = self.location.split("/")
        return _cmd("gcloud", "run", "services", "list", f"--region={parts[3]}",
                    f"--project={parts[1]}")


@dataclass(frozen=True)
class AgentUnknown:
    """The service agent's grant when the project's number (and so its email) is unknown."""

    caller: str
    project: str

    @property
    def resource(self) -> str:
        return f"projects/{self.project}/serviceAccounts/{self.caller}"

    @property
    def what(self) -> str:
        return (f"{TOKEN_CREATOR_ROLE} for the Cloud Tasks service agent "
                f"(service-PROJECT_NUMBER@gcp-sa-cloudtasks{_SA_DOMAIN}) on account "
                f"{self.caller} (Cloud Tasks mints the tasks' OIDC tokens as it; "
                f"`gcloud projects describe {self.project} --format=value(projectNumber)` "
                "shows the number)")

    def gcloud(self) -> str:
        return _cmd("gcloud", "iam", "service-accounts", "add-iam-policy-binding", self.caller,
                    f"--member=serviceAccount:service-PROJECT_NUMBER@gcp-sa-cloudtasks"
                    f"{_SA_DOMAIN}", f"--role={TOKEN_CREATOR_ROLE}",
                    f"--project={self.project}")


@dataclass
class DesiredState:
    accounts: list[AccountWant] = field(default_factory=list)
    queues: list[QueueWant] = field(default_factory=list)
    grants: list[Grant] = field(default_factory=list)
    missing_services: list[ServiceMissing] = field(default_factory=list)
    workers: list[str] = field(default_factory=list)
    # Set when the project's number was not known: the service agent's grant, unnamed.
    agent_unknown: AgentUnknown | None = None


def desired_state(settings: Settings, registry: Registry, services: dict[str, str | None],
                  workers: list[str] | None = None,
                  project_number: str | None = None) -> DesiredState:
    """The state this config needs, for the workers named (all by default).

    ``services`` maps each worker to the Cloud Run service serving its URL (a full name), or
    ``None`` when none does; ``project_number`` names the Cloud Tasks service agent (None:
    ``agent_unknown`` instead of its grant). ``ConfigError`` when two workers share a queue
    but configure it differently.
    """
    specs = [registry.get(w) for w in workers] if workers else list(registry)
    project = settings.project_id or ""
    api, dashboard, caller = settings.api_sa or "", settings.dashboard_sa or "", \
        settings.caller_sa or ""
    state = DesiredState(workers=[s.name for s in specs])
    seen: set[str] = set()
    for email, purpose in ((caller, "CALLER_SA: the workers' tokens are minted for it"),
                           (api, "API_SA: the API runs as it"),
                           (dashboard, "DASHBOARD_SA: the dashboard runs as it")):
        if email.lower() not in seen:
            seen.add(email.lower())
            state.accounts.append(AccountWant(email, purpose, project))

    state.queues = _queues(settings, specs)
    for queue in state.queues:
        state.grants.append(Grant("queue", queue.path, API_QUEUE_ROLE, member(api),
                                  "the API enqueues"))
        state.grants.append(Grant("queue", queue.path, DASHBOARD_QUEUE_ROLE, member(dashboard),
                                  "the dashboard enqueues and acts on tasks and the queue"))
    caller_resource = f"projects/{project}/serviceAccounts/{caller}"
    for email, who in ((api, "the API"), (dashboard, "the dashboard")):
        state.grants.append(Grant("service_account", caller_resource, ACT_AS_ROLE,
                                  member(email), f"{who} mints tasks' tokens as it"))
    if project_number:
        state.grants.append(Grant(
            "service_account", caller_resource, TOKEN_CREATOR_ROLE,
            member(tasks_service_agent(project_number)),
            "Cloud Tasks mints the tasks' OIDC tokens as it"))
    else:
        state.agent_unknown = AgentUnknown(caller, project)
    state.grants.append(Grant("service_account", caller_resource, OPENID_TOKEN_ROLE,
                              member(dashboard), "the Diagnostics \"Probe\" mints an ID token "
                              "as it to knock on each worker's door"))
    state.grants.append(Grant("service_account", caller_resource, SA_VIEWER_ROLE,
                              member(dashboard), "diagnostics read who may mint tokens as it: "
                              "the service_agent check"))
    location = f"projects/{project}/locations/{settings.tasks_region}"
    for spec in specs:
        service = services.get(spec.name)
        if service is None:
            state.missing_services.append(ServiceMissing(spec.name, spec.url, location))
            continue
        state.grants.append(Grant("run_service", service, INVOKER_ROLE, member(caller),
                                  f"the tokens of {spec.name}'s tasks get in"))
    state.grants.append(Grant("project", f"projects/{project}", DASHBOARD_PROJECT_ROLE,
                              member(dashboard), "diagnostics read Cloud Run"))
    state.grants.append(Grant("project", f"projects/{project}", HISTORY_ROLE,
                              member(dashboard), "the dashboard reads history from Cloud "
                              "Logging: attempts, dead letters, activity"))
    state.grants = _merged(state.grants)
    return state


def _merged(grants: list[Grant]) -> list[Grant]:
    """One grant per (resource, role, member): an account may play two parts."""
    by_key: dict[tuple[str, str, str], Grant] = {}
    for g in grants:
        key = (g.resource, g.role, g.member.lower())
        seen = by_key.get(key)
        by_key[key] = g if seen is None else Grant(g.scope, g.resource, g.role, g.member,
                                                   f"{seen.why}; {g.why}")
    return list(by_key.values())


def _queues(settings: Settings, specs: list[WorkerSpec]) -> list[QueueWant]:
    by_queue: dict[str, list[WorkerSpec]] = {}
    for spec in specs:
        by_queue.setdefault(spec.queue, []).append(spec)
    out = []
    for queue_id, sharing in by_queue.items():
        configured = {(s.rate_limits, s.retry_config) for s in sharing
                      if s.rate_limits or s.retry_config}
        if len(configured) > 1:
            names = ", ".join(s.name for s in sharing)
            raise ConfigError(
                f"the workers {names} share the queue {queue_id} but the workers file gives "
                "it different rate_limits or retry_config: give them in one of the workers "
                "only, or make them the same")
        rate, retry = next(iter(configured), (None, None))
        out.append(QueueWant(settings.queue_path(queue_id), tuple(s.name for s in sharing),
                             rate, retry))
    return out

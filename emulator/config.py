"""The emulator's TOML configuration: project, location, and the queues created at start.

```toml
project = "local-project"
project_number = "123456789012"     # what GetProject answers (default: derived from project)
location = "us-central1"
task_name_reservation_s = 3600      # how long a finished task's name stays taken

[[queues]]
name = "queue-brain"
rate_limits = { max_dispatches_per_second = 5, max_concurrent_dispatches = 10 }
retry_config = { max_attempts = 5, min_backoff_s = 1, max_backoff_s = 60, max_doublings = 3 }

log_sampling_ratio = 1.0            # task-operation logs for every task (default 0: none)

[[queues.bindings]]                 # the queue's IAM policy (no bindings: left as it is)
role = "roles/cloudtasks.enqueuer"
members = ["serviceAccount:api@local-project.iam.gserviceaccount.com"]

[iam]                               # who calls the APIs, and whether IAM is checked
enforce = true                      # default false: every caller may do everything
principal = "serviceAccount:enqueuer@local-project.iam.gserviceaccount.com"

[[iam.bindings]]                    # on the project
role = "roles/cloudtasks.enqueuer"
members = ["serviceAccount:enqueuer@local-project.iam.gserviceaccount.com"]

[[service_accounts]]                # who may act as an account
email = "caller@local-project.iam.gserviceaccount.com"

[[service_accounts.bindings]]
role = "roles/iam.serviceAccountUser"
members = ["serviceAccount:enqueuer@local-project.iam.gserviceaccount.com"]

[[services]]                        # a Cloud Run service, behind its front door
name = "brain"
port = 8081
paths = ["/process"]
timeout_s = 900
max_instances = 10                  # Cloud Run's max instances (default 100)
concurrency = 80                    # requests each instance takes at once (default 80)
invokers = ["serviceAccount:caller@local-project.iam.gserviceaccount.com"]

[logging]                           # Cloud Logging's entries (WriteLogEntries, ListLogEntries)
retention_days = 30                 # older entries are not listed, then deleted

[oidc]                              # the emulator as Google's sign-in (st.login, Authlib)
users = ["alice@example.com", { email = "bob@example.com", name = "Bob Example" }]

[[oidc.clients]]                    # none: any client ID and secret, any http(s) redirect
client_id = "dashboard"
client_secret = "dashboard-secret"
redirect_uris = ["http://localhost:8501/oauth2callback"]
```

Policies named here (the project's ``[iam] bindings``, a queue's or a service account's
``bindings``, a service's ``invokers``) are applied at every start: the file is
authoritative for them, and a SetIamPolicy on one lasts until the next start. A queue
without a ``bindings`` key keeps the policy it has, so one set over the API (by
``enqueuer setup``, say) survives restarts; ``bindings = []`` empties it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from emulator.names import LOCATION_PATTERN, PROJECT_PATTERN, QUEUE_ID_RE


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RateLimitsConfig(_Strict):
    max_dispatches_per_second: float | None = Field(None, gt=0, le=500)
    max_concurrent_dispatches: int | None = Field(None, gt=0, le=5000)


class RetryConfigModel(_Strict):
    max_attempts: int | None = Field(None, ge=-1)
    min_backoff_s: float | None = Field(None, ge=0)
    max_backoff_s: float | None = Field(None, ge=0)
    max_doublings: int | None = Field(None, ge=0)
    max_retry_duration_s: float | None = Field(None, ge=0)


_MEMBER = r"^(allUsers|allAuthenticatedUsers|(user|serviceAccount|group|domain):.+)$"


class BindingConfig(_Strict):
    role: str = Field(pattern=r"^roles/[A-Za-z0-9_.]+$")
    members: list[str] = Field(min_length=1)

    @field_validator("members")
    @classmethod
    def _members(cls, members: list[str]) -> list[str]:
        for m in members:
            if not re.match(_MEMBER, m):
                raise ValueError(
                    f'member "{m}" must be "allUsers", "allAuthenticatedUsers" or "TYPE:ID", '
                    'for example "serviceAccount:caller@PROJECT.iam.gserviceaccount.com"'
                )
        return members


class QueueConfig(_Strict):
    name: str = Field(pattern=QUEUE_ID_RE.pattern, description="the queue ID")
    paused: bool = False
    rate_limits: RateLimitsConfig = RateLimitsConfig()
    retry_config: RetryConfigModel = RetryConfigModel()
    # The queue's IAM policy; None (no ``bindings`` key) leaves the policy as it is.
    bindings: list[BindingConfig] | None = None
    # stackdriver_logging_config.sampling_ratio: the fraction of tasks whose operations go to
    # Cloud Logging (0.0, Google's default, writes none). None leaves the queue's value as it
    # is, so a ratio set over the API (gcloud tasks queues update) survives restarts.
    log_sampling_ratio: float | None = Field(None, ge=0, le=1)


class ServiceAccountConfig(_Strict):
    """A service account and who may use it (``roles/iam.serviceAccountUser`` ...)."""

    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    bindings: list[BindingConfig] = []


class ServiceConfig(_Strict):
    """A Cloud Run service the emulator hosts on ``port``, behind Cloud Run's front door."""

    name: str = Field(pattern=r"^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$")
    port: int = Field(ge=0, le=65535, description="0: any free port")
    paths: list[str] = Field(["/"], min_length=1, description="what the sample worker serves")
    timeout_s: float = Field(300.0, gt=0, le=3600, description="the request timeout")
    custom_audiences: list[str] = []
    ingress: Literal["all", "internal", "internal-and-cloud-load-balancing"] = "all"
    service_account: str | None = None  # the identity the service runs as
    invokers: list[str] = Field([], description="members holding roles/run.invoker")
    # Beyond max_instances x concurrency requests in flight the front door answers 429, as
    # Cloud Run does when it cannot scale further (see front_door.Capacity).
    max_instances: int = Field(100, description="template.scaling.max_instance_count")
    concurrency: int = Field(80, description="template.max_instance_request_concurrency")

    @field_validator("max_instances")
    @classmethod
    def _max_instances(cls, n: int) -> int:
        # Cloud Run: 100 by default for a new service; more up to the region's quota (a
        # baseline of 1000 instances: cloud.google.com/run/docs/configuring/max-instances-limits).
        if not 1 <= n <= 1000:
            raise ValueError(f"max_instances = {n}: Cloud Run takes 1 to 1000 instances "
                             "(1000 is the baseline regional quota); leave it out for "
                             "Cloud Run's default, 100")
        return n

    @field_validator("concurrency")
    @classmethod
    def _concurrency(cls, n: int) -> int:
        # cloud.google.com/run/docs/about-concurrency: "up to 80 requests at the same time;
        # you can increase this to a maximum of 1000".
        if not 1 <= n <= 1000:
            raise ValueError(f"concurrency = {n}: Cloud Run takes 1 to 1000 requests per "
                             "instance; leave it out for Cloud Run's default, 80 (1: one "
                             "request at a time)")
        return n

    @field_validator("paths")
    @classmethod
    def _paths(cls, paths: list[str]) -> list[str]:
        for p in paths:
            if not p.startswith("/") or "?" in p or "#" in p:
                raise ValueError(f'path "{p}" must start with "/" and hold no query, '
                                 'for example "/process"')
        return paths


class IamConfig(_Strict):
    """Who calls the emulator's APIs, and whether IAM is checked where Google checks it."""

    enforce: bool = False
    # Used when a call carries no ``x-emulator-principal`` metadata.
    principal: str = Field("serviceAccount:enqueuer@local-project.iam.gserviceaccount.com",
                           pattern=_MEMBER)
    bindings: list[BindingConfig] = []  # on the project


_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")


def email_problem(email: object) -> str | None:
    """Why ``email`` is not an address the emulator signs tokens for, or None if it is."""
    if isinstance(email, str) and _EMAIL_RE.match(email):
        return None
    return (f"{email!r} is not an email address: write one \"@\" and a domain with a dot, "
            'for example "alice@example.com"')


def http_url_problem(url: object, what: str) -> str | None:
    """Why ``url`` is not an absolute http(s) URL, or None if it is."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        return (f"{what} {url!r} must be an absolute http:// or https:// URL, "
                'for example "http://localhost:8501/oauth2callback"')
    if parts.fragment or url.endswith("#"):  # type: ignore[union-attr]
        return f"{what} {url!r} must not have a #fragment: remove it"
    return None


class OidcUser(_Strict):
    """An account offered on the emulator's "Choose an account" page."""

    email: str
    name: str | None = Field(None, min_length=1, description="default: the email's local part")

    @field_validator("email")
    @classmethod
    def _email(cls, email: str) -> str:
        if problem := email_problem(email):
            raise ValueError(problem)
        return email

    @property
    def display_name(self) -> str:
        return self.name or self.email.split("@", 1)[0]


class OidcClientConfig(_Strict):
    """An OAuth client, as registered in Google's console: only these redirect URIs work."""

    client_id: str = Field(min_length=1)
    client_secret: str = Field(min_length=1)
    redirect_uris: list[str] = Field(min_length=1)

    @field_validator("redirect_uris")
    @classmethod
    def _redirect_uris(cls, uris: list[str]) -> list[str]:
        for uri in uris:
            if problem := http_url_problem(uri, "redirect URI"):
                raise ValueError(problem)
        return uris


class OidcConfig(_Strict):
    """The emulator as an OpenID Connect provider. Without ``clients`` it accepts any client
    ID and secret and any http(s) redirect URI: the permissive default for local work."""

    users: list[OidcUser] = []
    clients: list[OidcClientConfig] = []

    @field_validator("users", mode="before")
    @classmethod
    def _users(cls, users: Any) -> Any:
        # A bare string is the short form of { email = "..." }.
        if not isinstance(users, list):
            return users
        out: list[Any] = []
        for i, entry in enumerate(users):
            if isinstance(entry, str):
                out.append({"email": entry})
            elif isinstance(entry, dict):
                out.append(entry)
            else:
                raise ValueError(f'entry {i} ({entry!r}) must be an email string or '
                                 '{ email = "...", name = "..." }')
        return out

    @model_validator(mode="after")
    def _unique(self) -> OidcConfig:
        for what, values in (("user email", [u.email.lower() for u in self.users]),
                             ("client_id", [c.client_id for c in self.clients])):
            if dupes := sorted({v for v in values if values.count(v) > 1}):
                raise ValueError(f"{what} {dupes[0]!r} is listed twice: keep one entry")
        return self

    def user(self, email: str) -> OidcUser:
        """The configured account for ``email``, or a new one with the default name."""
        for u in self.users:
            if u.email.lower() == email.lower():
                return u
        return OidcUser(email=email)


class LoggingConfig(_Strict):
    """Cloud Logging in the emulator: how long entries are kept (Google's _Default bucket
    keeps them 30 days and accepts 1 to 3650: cloud.google.com/logging/quotas)."""

    retention_days: int = Field(30, ge=1, le=3650)


class EmulatorConfig(_Strict):
    project: str = Field("local-project", pattern=f"^{PROJECT_PATTERN}$")
    # The project's number (Resource Manager's GetProject answers projects/NUMBER); None: a
    # stable 12-digit number derived from ``project``. Set it to name the project's service
    # agents (service-NUMBER@gcp-sa-cloudtasks...) in the bindings below.
    project_number: str | None = Field(None, pattern=r"^[1-9][0-9]{0,18}$")
    location: str = Field("us-central1", pattern=f"^{LOCATION_PATTERN}$")
    task_name_reservation_s: float = Field(3600.0, ge=0)
    queue_name_reservation_s: float = Field(7 * 24 * 3600.0, ge=0)
    queues: list[QueueConfig] = []
    services: list[ServiceConfig] = []
    service_accounts: list[ServiceAccountConfig] = []
    iam: IamConfig = IamConfig()
    oidc: OidcConfig = OidcConfig()
    logging: LoggingConfig = LoggingConfig()

    def queue_name(self, queue_id: str) -> str:
        return f"projects/{self.project}/locations/{self.location}/queues/{queue_id}"

    def service_name(self, service: str) -> str:
        return f"projects/{self.project}/locations/{self.location}/services/{service}"


class ConfigError(Exception):
    """The configuration file cannot be used; the message says where and why."""


def load_config(path: str | Path | None) -> EmulatorConfig:
    if path is None:
        return EmulatorConfig()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file. Pass --config with an existing TOML file."
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    try:
        return EmulatorConfig.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None

"""Settings from the environment (the original service's names), checked at start-up.

| variable | default | |
|---|---|---|
| ``PROJECT_ID``, ``TASKS_REGION``, ``CALLER_SA`` | required on Google | local ones on emulator |
| ``QUEUE_BRAIN``, ``QUEUE_TESTI``, ``QUEUE_TRANS`` | ``queue-brain`` ... | queue IDs |
| ``URL_BRAIN``, ``URL_TESTI``, ``URL_TRANS`` | required on Google | the worker endpoint |
| ``AUD_BRAIN``, ``AUD_TESTI``, ``AUD_TRANS`` | scheme + host of the URL | the token audience |
| ``DEADLINE_BRAIN_S``, ``..._TESTI_S``, ``..._TRANS_S`` | 700, 390, 880 | dispatch deadline |
| ``WORKERS_FILE`` | none | TOML: more workers, payload schemas (see ``workers.py``) |
| ``CLOUD_TASKS_EMULATOR_HOST`` | none | ``host:port``: every Google call goes to the emulator |
| ``API_SA``, ``DASHBOARD_SA`` | ``enqueuer-api@PROJECT...``, ``enqueuer-dashboard@...`` | the |
|  |  | accounts the API and the dashboard run as (``enqueuer setup`` grants them) |
| ``EMULATOR_OPERATOR`` | the dev stack's admin | whom ``enqueuer setup`` (and every CLI |
|  |  | command) acts as on the emulator (on Google: the Application Default Credentials) |
| ``API_AUTH`` | ``google`` | ``google``: callers send a Google ID token; ``none``: anonymous |
|  |  | callers act as ``allUsers`` (the original open API, on purpose only) |
| ``API_AUDIENCE`` | required by the API on Google | the API's URL: callers' tokens' audience |
| ``DASHBOARD_AUTH`` | ``iap`` on Google, ``none`` | ``oidc`` (``st.login``), ``iap`` (IAP header) |
|  | on the emulator | or ``none`` (visitors act as ``allUsers``; a red banner) |
| ``IAP_AUDIENCE`` | required with ``iap`` | ``/projects/NUMBER/locations/REGION/services/NAME`` |
| ``EMULATOR_HTTP_URL`` | gRPC port + 1 | the emulator's HTTP port: its token keys and login |
| ``AUDIT_PAYLOADS`` | ``hash`` | what an enqueue's audit line keeps of the payload: ``hash`` |
|  |  | (size and SHA-256) or ``full`` (the payload itself too, so that a dead job can be |
|  |  | replayed from the logs; anyone who reads the logs then reads the payloads) |
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from enqueuer_core.errors import ConfigError

MIN_DEADLINE_S, MAX_DEADLINE_S = 15, 1800
AUDIT_PAYLOADS = ("hash", "full")
_LENIENT: ContextVar[bool] = ContextVar("lenient_settings", default=False)
# What the local stack runs (`enqueuer dev`): used when the emulator stands in for Google.
LOCAL_PROJECT = "local-project"
LOCAL_REGION = "us-central1"
LOCAL_CALLER_SA = "enqueuer-caller@local-project.iam.gserviceaccount.com"
# The account the enqueuer itself runs as on the local stack (the emulator's default caller).
LOCAL_PRINCIPAL = "enqueuer@local-project.iam.gserviceaccount.com"
# The dev stack's platform engineer: holds the admin roles `enqueuer setup --apply` needs.
LOCAL_ADMIN = "user:admin@local-project.test"
# Who may do what on the local stack when the workers file has no [access]: one user per role.
LOCAL_USERS = {LOCAL_ADMIN: "admin", "user:operator@local-project.test": "operator",
               "user:viewer@local-project.test": "viewer"}
# The identity `enqueuer --local token` mints a token for unless told otherwise: it may enqueue.
LOCAL_API_CALLER = "operator@local-project.test"
LOCAL_API_AUDIENCE = "http://127.0.0.1:8080"
GOOGLE_ID_TOKEN_CERTS = "https://www.googleapis.com/oauth2/v1/certs"
IAP_PUBLIC_KEYS = "https://www.gstatic.com/iap/verify/public_key"
IAP_AUDIENCE_FORMS = ("/projects/NUMBER/locations/REGION/services/NAME (IAP on Cloud Run)",
                      "/projects/NUMBER/global/backendServices/ID (behind a load balancer)")
LOCAL_URLS = {
    "BRAIN": "http://127.0.0.1:8081/process",
    "TESTI": "http://127.0.0.1:8082/generate-testimony",
    "TRANS": "http://127.0.0.1:8083/api/transcribe",
}


def base_url(url: str) -> str:
    """Scheme and host of a URL: the audience Cloud Run expects for it."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def check_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{name}={url!r} is not an http(s) URL: set it to the worker's "
                         "endpoint, for example https://brain-abc123-uc.a.run.app/process")


def check_audience(name: str, audience: str) -> None:
    check_url(name, audience)
    parts = urlsplit(audience)
    if parts.path or parts.query or parts.fragment or audience.endswith("/"):
        raise ValueError(
            f"{name}={audience!r} must be the worker's base URL, scheme and host only (no "
            f"path, query or trailing slash): set it to {base_url(audience)!r}"
        )


def check_deadline(name: str, seconds: int) -> None:
    if not MIN_DEADLINE_S <= seconds <= MAX_DEADLINE_S:
        raise ValueError(
            f"{name}={seconds} is outside what Cloud Tasks accepts for HTTP tasks: set a "
            f"number of seconds from {MIN_DEADLINE_S} to {MAX_DEADLINE_S} (30 minutes)"
        )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    project_id: str | None = None
    tasks_region: str | None = None
    caller_sa: str | None = None
    cloud_tasks_emulator_host: str | None = None
    workers_file: Path | None = None

    queue_brain: str = "queue-brain"
    queue_testi: str = "queue-testimonios"
    queue_trans: str = "queue-transcripciones"
    url_brain: str | None = None
    url_testi: str | None = None
    url_trans: str | None = None
    aud_brain: str | None = None
    aud_testi: str | None = None
    aud_trans: str | None = None
    deadline_brain_s: int = Field(700)
    deadline_testi_s: int = Field(390)
    deadline_trans_s: int = Field(880)
    # The accounts the two Cloud Run services run as; `enqueuer setup` grants them their roles.
    api_sa: str | None = None
    dashboard_sa: str | None = None
    emulator_operator: str = LOCAL_ADMIN
    # Who may call the API and open the dashboard (see enqueuer_core/access).
    api_auth: Literal["google", "none"] = "google"
    api_audience: str | None = None
    dashboard_auth: Literal["oidc", "iap", "none"] | None = None
    iap_audience: str | None = None
    emulator_http_url: str | None = None
    # What the enqueue audit line keeps of a payload (enqueuer_core/access/audit.py).
    audit_payloads: Literal["full", "hash"] = "hash"

    @field_validator("audit_payloads", mode="before")
    @classmethod
    def _audit_payloads(cls, value: object) -> object:
        if value not in AUDIT_PAYLOADS:
            raise ValueError(
                f"AUDIT_PAYLOADS={value!r} is not a choice: set hash (the enqueue audit line "
                "keeps the payload's size and SHA-256; the default) or full (it keeps the "
                "payload too, which replaying a dead job needs)")
        return value

    @property
    def on_emulator(self) -> bool:
        return bool(self.cloud_tasks_emulator_host)

    @model_validator(mode="after")
    def _complete_and_check(self) -> Settings:
        if self.on_emulator:
            self.project_id = self.project_id or LOCAL_PROJECT
            self.tasks_region = self.tasks_region or LOCAL_REGION
            self.caller_sa = self.caller_sa or LOCAL_CALLER_SA
            for short, url in LOCAL_URLS.items():
                field = f"url_{short.lower()}"
                if getattr(self, field) is None:
                    setattr(self, field, url)
        missing = [n for n in ("PROJECT_ID", "TASKS_REGION", "CALLER_SA")
                   if not getattr(self, n.lower())]
        missing += [f"URL_{s}" for s in LOCAL_URLS if not getattr(self, f"url_{s.lower()}")]
        if missing:
            raise ValueError(
                f"set {', '.join(missing)} (or CLOUD_TASKS_EMULATOR_HOST=host:port to run "
                "against the local emulator)"
            )
        lenient = _LENIENT.get()
        if "@" not in (self.caller_sa or "") and not lenient:
            raise ValueError(f"CALLER_SA={self.caller_sa!r} must be a service account email, "
                             "for example caller@PROJECT.iam.gserviceaccount.com")
        for name, account in (("api_sa", "enqueuer-api"), ("dashboard_sa", "enqueuer-dashboard")):
            value = getattr(self, name)
            if value is None:
                # Locally both run as the emulator's default caller, as `enqueuer dev` does.
                value = (LOCAL_PRINCIPAL if self.on_emulator
                         else f"{account}@{self.project_id}.iam.gserviceaccount.com")
                setattr(self, name, value)
            if "@" not in value and not lenient:
                raise ValueError(f"{name.upper()}={value!r} must be a service account email, "
                                 f"for example {account}@PROJECT.iam.gserviceaccount.com")
        self._complete_auth()
        if ":" not in self.emulator_operator:
            raise ValueError(f"EMULATOR_OPERATOR={self.emulator_operator!r} must be an IAM "
                             f"member, for example {LOCAL_ADMIN}")
        for short in LOCAL_URLS:
            s = short.lower()
            url = getattr(self, f"url_{s}")
            audience = getattr(self, f"aud_{s}")
            if audience is None:
                setattr(self, f"aud_{s}", base_url(url))
            if lenient:
                continue
            check_url(f"URL_{short}", url)
            if audience is not None:
                check_audience(f"AUD_{short}", audience)
            check_deadline(f"DEADLINE_{short}_S", getattr(self, f"deadline_{s}_s"))
        return self

    def _complete_auth(self) -> None:
        if self.on_emulator:
            if self.emulator_http_url is None:
                host, _, port = (self.cloud_tasks_emulator_host or "").rpartition(":")
                # The emulator serves HTTP on the port after its gRPC one unless told otherwise.
                self.emulator_http_url = (f"http://{host or '127.0.0.1'}:{int(port) + 1}"
                                          if port.isdigit() else None)
            self.api_audience = self.api_audience or LOCAL_API_AUDIENCE
            self.dashboard_auth = self.dashboard_auth or "none"
        else:
            self.dashboard_auth = self.dashboard_auth or "iap"
        if self.api_audience is not None:
            check_url("API_AUDIENCE", self.api_audience)
        if self.iap_audience is not None and not self.iap_audience.startswith("/projects/"):
            raise ValueError(f"IAP_AUDIENCE={self.iap_audience!r} is not an IAP audience: "
                             "use " + " or ".join(IAP_AUDIENCE_FORMS))

    def check_api_auth(self) -> None:
        """What the API needs to check its callers (the CLI does not): ``ConfigError``."""
        if self.api_auth == "google" and not self.api_audience:
            raise ConfigError(
                "Enqueuer's settings are not usable: set API_AUDIENCE to the API's own URL "
                "(https://enqueuer-api-...run.app; `enqueuer deploy` sets it): callers' ID "
                "tokens must carry it as audience. API_AUTH=none instead opens the API to "
                "anonymous callers, on purpose only")

    def check_dashboard_auth(self) -> None:
        """What the dashboard needs to know its users: ``ConfigError`` with the fix."""
        if self.dashboard_auth == "iap" and not self.iap_audience:
            raise ConfigError(
                "Enqueuer's settings are not usable: set IAP_AUDIENCE to the audience IAP "
                "signs its assertions for: " + " or ".join(IAP_AUDIENCE_FORMS)
                + " (`enqueuer deploy` sets it), or DASHBOARD_AUTH=oidc to log in with st.login")

    @property
    def id_token_certs_url(self) -> str:
        """Where the signing certificates of callers' ID tokens are (PEM)."""
        if self.on_emulator and self.emulator_http_url:
            return f"{self.emulator_http_url}/oauth2/v1/certs"
        return GOOGLE_ID_TOKEN_CERTS

    @property
    def iap_keys_url(self) -> str:
        """Where IAP's public keys are (PEM, by key id)."""
        if self.on_emulator and self.emulator_http_url:
            return f"{self.emulator_http_url}/iap/verify/public_key"
        return IAP_PUBLIC_KEYS

    def queue_path(self, queue_id: str) -> str:
        return f"projects/{self.project_id}/locations/{self.tasks_region}/queues/{queue_id}"


def load_settings(*, lenient: bool = False, **overrides: object) -> Settings:
    """Settings from the environment (``overrides`` win); ``ConfigError`` says what to set.

    ``lenient`` accepts settings that would not work (an audience with a path, a deadline out
    of range, ...) so that diagnostics can report each of them as a failed check with its
    fix; only what is missing outright is still refused.
    """
    token = _LENIENT.set(lenient)
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as e:
        problems = "; ".join(
            (str(err.get("ctx", {}).get("error")) if err["type"] == "value_error"
             else f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}")
            for err in e.errors()
        )
        raise ConfigError(f"Enqueuer's settings are not usable: {problems}") from None
    finally:
        _LENIENT.reset(token)

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
| ``EMULATOR_OPERATOR`` | the dev stack's operator | whom ``enqueuer setup`` acts as on the |
|  |  | emulator (on Google: the Application Default Credentials) |
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from enqueuer_core.errors import ConfigError

MIN_DEADLINE_S, MAX_DEADLINE_S = 15, 1800
_LENIENT: ContextVar[bool] = ContextVar("lenient_settings", default=False)
# What the local stack runs (`enqueuer dev`): used when the emulator stands in for Google.
LOCAL_PROJECT = "local-project"
LOCAL_REGION = "us-central1"
LOCAL_CALLER_SA = "enqueuer-caller@local-project.iam.gserviceaccount.com"
# The account the enqueuer itself runs as on the local stack (the emulator's default caller).
LOCAL_PRINCIPAL = "enqueuer@local-project.iam.gserviceaccount.com"
# The dev stack's platform engineer: holds the admin roles `enqueuer setup --apply` needs.
LOCAL_OPERATOR = "user:operator@local-project.test"
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
    emulator_operator: str = LOCAL_OPERATOR

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
        if ":" not in self.emulator_operator:
            raise ValueError(f"EMULATOR_OPERATOR={self.emulator_operator!r} must be an IAM "
                             f"member, for example {LOCAL_OPERATOR}")
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

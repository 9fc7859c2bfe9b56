"""The emulator's TOML configuration: project, location, and the queues created at start.

```toml
project = "local-project"
location = "us-central1"
task_name_reservation_s = 3600      # how long a finished task's name stays taken

[[queues]]
name = "queue-brain"
rate_limits = { max_dispatches_per_second = 5, max_concurrent_dispatches = 10 }
retry_config = { max_attempts = 5, min_backoff_s = 1, max_backoff_s = 60, max_doublings = 3 }
```
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


class QueueConfig(_Strict):
    name: str = Field(pattern=QUEUE_ID_RE.pattern, description="the queue ID")
    paused: bool = False
    rate_limits: RateLimitsConfig = RateLimitsConfig()
    retry_config: RetryConfigModel = RetryConfigModel()


class EmulatorConfig(_Strict):
    project: str = Field("local-project", pattern=f"^{PROJECT_PATTERN}$")
    location: str = Field("us-central1", pattern=f"^{LOCATION_PATTERN}$")
    task_name_reservation_s: float = Field(3600.0, ge=0)
    queue_name_reservation_s: float = Field(7 * 24 * 3600.0, ge=0)
    queues: list[QueueConfig] = []

    def queue_name(self, queue_id: str) -> str:
        return f"projects/{self.project}/locations/{self.location}/queues/{queue_id}"


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

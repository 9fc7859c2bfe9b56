"""Where a worker's setting is set, by name: what a fix tells someone to change.

The three built-in workers take their queue, URL, audience and deadline from the
environment (``QUEUE_BRAIN``, ``URL_TESTI``, ``AUD_TRANS``, ``DEADLINE_BRAIN_S``, ...); a
worker the workers file adds, and any field the file sets for a built-in one, comes from
its ``[workers.NAME]`` table instead (``enqueuer_core.workers``). Diagnostics
(``diagnose.gather``), the explanations of failed attempts (``explain``) and the pages name
settings through here, so that a fix always names the setting that really holds the value.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from enqueuer_core.config import Settings
from enqueuer_core.workers import WorkerSpec

Field = Literal["queue", "url", "audience", "deadline_s"]
# The environment's name for each built-in worker: AUD_BRAIN, URL_TESTI, ...
BUILTIN_SHORT = {"brain": "BRAIN", "testimonios": "TESTI", "transcripciones": "TRANS"}
_ENV: dict[str, str] = {"queue": "QUEUE_{}", "url": "URL_{}", "audience": "AUD_{}",
                        "deadline_s": "DEADLINE_{}_S"}
# The prefixes diagnostics' fixes were written with (AUD_..., DEADLINE_..._S).
BY_PREFIX: dict[str, Field] = {"QUEUE": "queue", "URL": "url", "AUD": "audience",
                               "DEADLINE": "deadline_s"}
# Read once per file version: a check names several settings per run.
_FILE_CACHE: dict[tuple[Path, float], dict[str, set[str]]] = {}


@dataclass(frozen=True)
class SettingName:
    """The place of one worker's setting: an environment variable, or a workers file field."""

    worker: str
    field: Field
    env: str | None  # the variable (AUD_TESTI); None: the workers file's field

    @property
    def name(self) -> str:
        """``AUD_TESTI``, or the field's name (``audience``)."""
        return self.env or self.field

    def __str__(self) -> str:
        if self.env:
            return self.env
        return f"{self.field} in [workers.{self.worker}] of the workers file"

    def assign(self, value: object) -> str:
        """The setting with ``value``: ``AUD_TESTI=https://...`` or the TOML line, where."""
        if self.env:
            return f"{self.env}={value}"
        shown = f'"{value}"' if isinstance(value, str) else value
        return f"{self.field} = {shown} in [workers.{self.worker}] of the workers file"


def _file_fields(path: Path) -> dict[str, set[str]]:
    """The fields each ``[workers.NAME]`` table of the workers file sets ({} unreadable:
    the settings' own error says why, elsewhere)."""
    try:
        key = (path, path.stat().st_mtime)
    except OSError:
        return {}
    if key not in _FILE_CACHE:
        try:
            workers = tomllib.loads(path.read_text()).get("workers") or {}
        except (OSError, tomllib.TOMLDecodeError):
            workers = {}
        _FILE_CACHE.clear()
        _FILE_CACHE[key] = {name: set(table) for name, table in workers.items()
                            if isinstance(table, dict)}
    return _FILE_CACHE[key]


def setting_name(worker: WorkerSpec | str, field: Field,
                 settings: Settings | None = None) -> SettingName:
    """Where ``worker``'s ``field`` is set.

    Without ``settings`` the worker's name decides (a built-in name: the environment);
    with them, a field the workers file sets for a built-in worker is the file's. An
    audience the file does not set, for a worker whose URL it does, is derived from that
    URL (``workers._spec``): it is set in the file too.
    """
    name = worker if isinstance(worker, str) else worker.name
    short = BUILTIN_SHORT.get(name)
    if short is None:
        return SettingName(name, field, None)
    if settings is not None and settings.workers_file:
        given = _file_fields(Path(settings.workers_file)).get(name, set())
        if field in given or (field == "audience" and "url" in given):
            return SettingName(name, field, None)
    return SettingName(name, field, _ENV[field].format(short))


def by_prefix(worker: WorkerSpec | str, prefix: str,
              settings: Settings | None = None) -> SettingName:
    """``setting_name`` by the environment's prefix (``AUD``, ``URL``, ``DEADLINE``)."""
    return setting_name(worker, BY_PREFIX[prefix], settings)

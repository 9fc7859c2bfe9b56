"""``enqueuer gcloud-env``: the real gcloud against the local stack.

Registered on ``cli.app`` (``cli.py`` imports this module), as ``cli_history`` is.
"""

from __future__ import annotations

import os

import typer

from enqueuer_core import gcloud_env
from enqueuer_core.cli import JsonFlag, _print_json, _reporting, _settings, app
from enqueuer_core.config import Settings
from enqueuer_core.errors import ConfigError


@app.command("gcloud-env")
def gcloud_env_command(as_json: JsonFlag = False) -> None:
    """The variables that point gcloud at the local emulator, as shell exports.

    eval "$(enqueuer --local gcloud-env)" in a shell; then
    gcloud tasks queues list --location=us-central1
    lists the local stack's queues. No Google login is used or changed; the
    `unset` line it prints gives the shell its own gcloud back.
    With --json: the variables as a JSON object.
    """
    with _reporting(as_json):
        settings = _emulator_settings()
        if settings is None:
            raise gcloud_env.off_emulator_error()
        if as_json:
            _print_json(gcloud_env.gcloud_env(settings))
            return
        typer.echo(gcloud_env.gcloud_script(settings), nl=False)


def _emulator_settings() -> Settings | None:
    """The settings; None when they are Google's and incomplete, which ``gcloud_env``
    refuses anyway, with what to run instead, not with what else Google's settings lack."""
    if os.environ.get("CLOUD_TASKS_EMULATOR_HOST"):
        return _settings()
    try:
        return _settings()
    except ConfigError:
        return None

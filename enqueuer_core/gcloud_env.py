"""The environment that points the real ``gcloud`` at the local emulator instead of Google.

``eval "$(enqueuer --local gcloud-env)"`` in a shell, then ``gcloud tasks queues list
--location=us-central1`` lists the local queues: gcloud sends Cloud Tasks' (and Cloud
Logging's) REST calls to the emulator's HTTP port, with no credentials, for the local project.
Nothing is written to the user's gcloud configuration, and nothing reaches Google: gcloud
reads ``CLOUDSDK_*`` variables as properties, so ``unset`` gives the shell its gcloud back.

What is left out, and why:

- Cloud Run: ``gcloud run services list|describe`` call the Knative-style v1 API
  (``/apis/serving.knative.dev/v1/namespaces/...``) on regional hosts, which the emulator
  does not serve (it serves the Run Admin v2 API the client libraries use).
- A default location: gcloud has no property for Cloud Tasks' location. Without
  ``--location`` it asks the Cloud Tasks locations list and App Engine (``apps/PROJECT``)
  which location is the project's App Engine one; App Engine goes to the emulator too, which
  has no app, so gcloud asks for ``--location`` instead of calling Google.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from enqueuer_core.config import Settings
from enqueuer_core.errors import ConfigError

# The APIs gcloud sends to the emulator, as gcloud names them in CLOUDSDK_API_ENDPOINT_OVERRIDES_*.
APIS = ("cloudtasks", "logging", "appengine")


def gcloud_env(settings: Settings) -> dict[str, str]:
    """The variables that make gcloud talk to the emulator ``settings`` point at.

    Raises ``ConfigError`` when the settings are Google's: gcloud needs nothing from
    Enqueuer there.
    """
    if not settings.on_emulator:
        raise off_emulator_error()
    if not settings.emulator_http_url:
        raise ConfigError(
            f"the emulator's HTTP port is unknown (CLOUD_TASKS_EMULATOR_HOST="
            f"{settings.cloud_tasks_emulator_host!r} has no numeric port to add 1 to): set "
            "EMULATOR_HTTP_URL to it, for example http://127.0.0.1:8124")
    # gcloud joins the override and the API's path ("v2/projects/..."): without the trailing
    # slash it would ask for http://127.0.0.1:8124v2/...
    endpoint = settings.emulator_http_url.rstrip("/") + "/"
    env = {f"CLOUDSDK_API_ENDPOINT_OVERRIDES_{api.upper()}": endpoint for api in APIS}
    # No Google login: gcloud neither needs nor sends credentials (the emulator acts for
    # its default principal), and the user's own gcloud login is left alone.
    env["CLOUDSDK_AUTH_DISABLE_CREDENTIALS"] = "true"
    env["CLOUDSDK_CORE_PROJECT"] = str(settings.project_id)
    return env


def off_emulator_error() -> ConfigError:
    """What ``gcloud_env`` raises for settings that are Google's."""
    return ConfigError(
        "gcloud-env points gcloud at the local emulator, and these settings are Google's "
        "(CLOUD_TASKS_EMULATOR_HOST is not set): run `enqueuer --local gcloud-env` while "
        "`enqueuer dev` runs, or set CLOUD_TASKS_EMULATOR_HOST=host:port. On Google gcloud "
        "needs nothing from Enqueuer: `gcloud auth login` and `gcloud config set project "
        "PROJECT`")


def shell_exports(env: dict[str, str]) -> str:
    """``export K=V`` lines (POSIX-shell quoted), one per variable, in ``env``'s order."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())


def unset_line(env: dict[str, str]) -> str:
    """The command that gives the shell its own gcloud back."""
    return "unset " + " ".join(env)


def sourcing_line(settings: Settings) -> str | None:
    """On the emulator, the line that sets a shell up for the gcloud commands Enqueuer prints
    (the console script as installed beside this Python); None on Google, where gcloud needs
    nothing. A stack started with ``--state DIR`` is found with ``ENQUEUER_STATE=DIR``, as
    every ``enqueuer --local`` command finds it."""
    if not settings.on_emulator:
        return None
    installed = Path(sys.executable).with_name("enqueuer")
    enqueuer = str(installed) if installed.is_file() else "enqueuer"
    return f'eval "$({shlex.quote(enqueuer)} --local gcloud-env)"'


def gcloud_script(settings: Settings) -> str:
    """What ``enqueuer gcloud-env`` prints: comments a reader needs, then the exports; the
    whole of it is meant for ``eval "$(...)"`` (the comments are ignored there)."""
    env = gcloud_env(settings)
    return (
        f"# gcloud against the local emulator ({settings.emulator_http_url}), project "
        f"{settings.project_id}, no Google login.\n"
        f"# gcloud has no default location for Cloud Tasks: pass --location="
        f"{settings.tasks_region}, for example\n"
        f"#   gcloud tasks queues list --location={settings.tasks_region}\n"
        f"# Undo: {unset_line(env)}\n"
        + shell_exports(env)
    )

"""The Google clients, built from the settings: Google itself, or the emulator.

With ``CLOUD_TASKS_EMULATOR_HOST`` every call goes over plaintext gRPC to the emulator and no
Google credentials are needed; otherwise the clients use Application Default Credentials.
"""

from __future__ import annotations

import weakref

import google.auth
import grpc
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

from enqueuer_core.config import Settings

# Who each client calls Google as, from the credentials it was built with.
_principals: weakref.WeakKeyDictionary[tasks_v2.CloudTasksClient, str] = (
    weakref.WeakKeyDictionary()
)


def tasks_client(settings: Settings) -> tasks_v2.CloudTasksClient:
    if settings.on_emulator:
        channel = grpc.insecure_channel(settings.cloud_tasks_emulator_host)  # type: ignore[arg-type]
        return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
    credentials, _ = google.auth.default(
        scopes=["https://www.googleapis.com/auth/cloud-platform"]
    )
    client = tasks_v2.CloudTasksClient(credentials=credentials)
    email = getattr(credentials, "service_account_email", None)
    if email and "@" in email:
        _principals[client] = email
    return client


def principal(client: tasks_v2.CloudTasksClient) -> str | None:
    """Who the client calls Google as, when its credentials say (for error messages)."""
    return _principals.get(client)

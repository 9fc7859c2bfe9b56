"""The Google clients (Cloud Tasks, Cloud Run Admin, IAM Admin), built from the settings:
Google itself, or the emulator.

With ``CLOUD_TASKS_EMULATOR_HOST`` every call goes over plaintext gRPC to the emulator and no
Google credentials are needed; otherwise the clients use Application Default Credentials.
Both the blocking client (CLI, scripts) and the asyncio one (the API, whose event loop a
blocking call would stall) come from here.
"""

from __future__ import annotations

import weakref
from typing import Any

import google.auth
import google.auth.exceptions
import grpc
from google.cloud import iam_admin_v1, run_v2, tasks_v2
from google.cloud.iam_admin_v1.services.iam.transports import IAMGrpcTransport
from google.cloud.run_v2.services.services.transports import ServicesGrpcTransport
from google.cloud.tasks_v2.services.cloud_tasks.transports import (
    CloudTasksGrpcAsyncIOTransport,
    CloudTasksGrpcTransport,
)

from enqueuer_core.config import LOCAL_PRINCIPAL, Settings
from enqueuer_core.errors import ConfigError

# Who each client calls Google as, from the credentials it was built with.
_principals: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
# gRPC's own reconnect backoff grows to two minutes: after an outage of the emulator the
# client would go on failing long after it is back.
_EMULATOR_CHANNEL = [("grpc.initial_reconnect_backoff_ms", 200),
                     ("grpc.max_reconnect_backoff_ms", 2000)]


def _credentials() -> Any:
    try:
        credentials, _ = google.auth.default(
            scopes=["https://www.googleapis.com/auth/cloud-platform"]
        )
    except google.auth.exceptions.DefaultCredentialsError:
        raise ConfigError(
            "No Google credentials found: run `gcloud auth application-default login`, or "
            "set GOOGLE_APPLICATION_CREDENTIALS to a key file, or set "
            "CLOUD_TASKS_EMULATOR_HOST=host:port to use the local emulator."
        ) from None
    return credentials


def _remember_principal(client: Any, credentials: Any) -> Any:
    email = getattr(credentials, "service_account_email", None)
    if email and "@" in email:
        _principals[client] = email
    return client


def tasks_client(settings: Settings) -> tasks_v2.CloudTasksClient:
    if settings.on_emulator:
        channel = grpc.insecure_channel(
            settings.cloud_tasks_emulator_host,  # type: ignore[arg-type]
            options=_EMULATOR_CHANNEL,
        )
        client = tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
        _principals[client] = LOCAL_PRINCIPAL  # the emulator's caller unless told otherwise
        return client
    credentials = _credentials()
    return _remember_principal(tasks_v2.CloudTasksClient(credentials=credentials), credentials)


def tasks_async_client(settings: Settings) -> tasks_v2.CloudTasksAsyncClient:
    """An asyncio client; build it inside the event loop that will use it."""
    if settings.on_emulator:
        channel = grpc.aio.insecure_channel(
            settings.cloud_tasks_emulator_host,  # type: ignore[arg-type]
            options=_EMULATOR_CHANNEL,
        )
        aclient = tasks_v2.CloudTasksAsyncClient(
            transport=CloudTasksGrpcAsyncIOTransport(channel=channel)
        )
        _principals[aclient] = LOCAL_PRINCIPAL
        return aclient
    credentials = _credentials()
    return _remember_principal(
        tasks_v2.CloudTasksAsyncClient(credentials=credentials), credentials
    )


def principal(client: Any) -> str | None:
    """Who the client calls Google as, when its credentials say (for error messages)."""
    return _principals.get(client)


def _emulator_channel(settings: Settings) -> grpc.Channel:
    return grpc.insecure_channel(
        settings.cloud_tasks_emulator_host,  # type: ignore[arg-type]
        options=_EMULATOR_CHANNEL,
    )


def run_client(settings: Settings) -> run_v2.ServicesClient:
    """Cloud Run Admin v2 (services, their IAM policies): Google, or the emulator."""
    if settings.on_emulator:
        client = run_v2.ServicesClient(
            transport=ServicesGrpcTransport(channel=_emulator_channel(settings)))
        _principals[client] = LOCAL_PRINCIPAL
        return client
    credentials = _credentials()
    return _remember_principal(run_v2.ServicesClient(credentials=credentials), credentials)


def iam_client(settings: Settings) -> iam_admin_v1.IAMClient:
    """IAM Admin v1 (service accounts and their policies): Google, or the emulator."""
    if settings.on_emulator:
        client = iam_admin_v1.IAMClient(
            transport=IAMGrpcTransport(channel=_emulator_channel(settings)))
        _principals[client] = LOCAL_PRINCIPAL
        return client
    credentials = _credentials()
    return _remember_principal(iam_admin_v1.IAMClient(credentials=credentials), credentials)

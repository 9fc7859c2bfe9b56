"""The Google clients (Cloud Tasks, Cloud Run Admin, IAM Admin), built from the settings:
Google itself, or the emulator.

With ``CLOUD_TASKS_EMULATOR_HOST`` every call goes over plaintext gRPC to the emulator and no
Google credentials are needed; otherwise the clients use Application Default Credentials.
Both the blocking client (CLI, scripts) and the asyncio one (the API, whose event loop a
blocking call would stall) come from here.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

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

C = TypeVar("C")
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


def _client(settings: Settings, client_cls: type[C], transport_cls: type,
            channel: Callable[..., Any] = grpc.insecure_channel) -> C:
    """A Google client: over plaintext gRPC to the emulator, or with ADC to Google."""
    if settings.on_emulator:
        emulator = channel(settings.cloud_tasks_emulator_host, options=_EMULATOR_CHANNEL)
        client = client_cls(transport=transport_cls(channel=emulator))
        _principals[client] = LOCAL_PRINCIPAL  # the emulator's caller unless told otherwise
        return client
    credentials = _credentials()
    return _remember_principal(client_cls(credentials=credentials), credentials)


def tasks_client(settings: Settings) -> tasks_v2.CloudTasksClient:
    return _client(settings, tasks_v2.CloudTasksClient, CloudTasksGrpcTransport)


def tasks_async_client(settings: Settings) -> tasks_v2.CloudTasksAsyncClient:
    """An asyncio client; build it inside the event loop that will use it."""
    return _client(settings, tasks_v2.CloudTasksAsyncClient, CloudTasksGrpcAsyncIOTransport,
                   grpc.aio.insecure_channel)


def run_client(settings: Settings) -> run_v2.ServicesClient:
    """Cloud Run Admin v2 (services, their IAM policies): Google, or the emulator."""
    return _client(settings, run_v2.ServicesClient, ServicesGrpcTransport)


def iam_client(settings: Settings) -> iam_admin_v1.IAMClient:
    """IAM Admin v1 (service accounts and their policies): Google, or the emulator."""
    return _client(settings, iam_admin_v1.IAMClient, IAMGrpcTransport)


def principal(client: Any) -> str | None:
    """Who the client calls Google as, when its credentials say (for error messages)."""
    return _principals.get(client)

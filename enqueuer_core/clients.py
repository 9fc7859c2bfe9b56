"""The Google clients (Cloud Tasks, Cloud Run Admin, IAM Admin, IAM Credentials, Resource
Manager, Cloud Logging), built from the settings: Google itself, or the emulator.

With ``CLOUD_TASKS_EMULATOR_HOST`` every call goes over plaintext gRPC to the emulator and no
Google credentials are needed; otherwise the clients use Application Default Credentials.
Both the blocking client (CLI, scripts) and the asyncio one (the API, whose event loop a
blocking call would stall) come from here, and ``CreateTask``, the call every enqueue makes,
with as little CPU around it as each client allows.
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import google.auth
import google.auth.exceptions
import google.auth.jwt
import google.auth.transport.requests
import grpc
from google.api_core import gapic_v1, grpc_helpers, grpc_helpers_async
from google.cloud import iam_admin_v1, iam_credentials_v1, resourcemanager_v3, run_v2, tasks_v2
from google.cloud.iam_admin_v1.services.iam.transports import IAMGrpcTransport
from google.cloud.iam_credentials_v1.services.iam_credentials.transports import (
    IAMCredentialsGrpcTransport,
)
from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
from google.cloud.logging_v2.services.logging_service_v2.transports import (
    LoggingServiceV2GrpcTransport,
)
from google.cloud.resourcemanager_v3.services.projects.transports import ProjectsGrpcTransport
from google.cloud.run_v2.services.services.transports import ServicesGrpcTransport
from google.cloud.tasks_v2.services.cloud_tasks.transports import (
    CloudTasksGrpcAsyncIOTransport,
    CloudTasksGrpcTransport,
)
from google.cloud.tasks_v2.services.cloud_tasks.transports.base import DEFAULT_CLIENT_INFO

from enqueuer_core.config import LOCAL_PRINCIPAL, Settings
from enqueuer_core.errors import ConfigError, Unauthenticated

C = TypeVar("C")
# Who each client calls Google as, from the credentials it was built with.
_principals: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
# gRPC's own reconnect backoff grows to two minutes: after an outage of the emulator the
# client would go on failing long after it is back.
_EMULATOR_CHANNEL = [("grpc.initial_reconnect_backoff_ms", 200),
                     ("grpc.max_reconnect_backoff_ms", 2000)]
# The metadata that tells the emulator who is calling (Google reads it from the credentials).
EMULATOR_PRINCIPAL_HEADER = "x-emulator-principal"


class ActingAs(grpc.UnaryUnaryClientInterceptor):
    """Every call on the channel carries ``x-emulator-principal: MEMBER``."""

    def __init__(self, member: str) -> None:
        self.member = member

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = [*(details.metadata or ()), (EMULATOR_PRINCIPAL_HEADER, self.member)]
        return continuation(details._replace(metadata=metadata), request)


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
            channel: Callable[..., Any] = grpc.insecure_channel,
            acting_as: str | None = None) -> C:
    """A Google client: over plaintext gRPC to the emulator, or with ADC to Google.

    ``acting_as`` (a member, ``user:ana@example.com``) is whom the emulator takes the caller
    for; on Google the credentials decide and it is ignored.
    """
    if settings.on_emulator:
        emulator = channel(settings.cloud_tasks_emulator_host, options=_EMULATOR_CHANNEL)
        if acting_as:
            emulator = grpc.intercept_channel(emulator, ActingAs(acting_as))
        client = client_cls(transport=transport_cls(channel=emulator))
        # The emulator's default caller unless told otherwise.
        _principals[client] = acting_as.split(":", 1)[-1] if acting_as else LOCAL_PRINCIPAL
        return client
    credentials = _credentials()
    return _remember_principal(client_cls(credentials=credentials), credentials)


def tasks_client(settings: Settings, acting_as: str | None = None) -> tasks_v2.CloudTasksClient:
    return _client(settings, tasks_v2.CloudTasksClient, CloudTasksGrpcTransport,
                   acting_as=acting_as)


class CreateTask:
    """CreateTask as the client makes it, with little around it: the client's
    ``x-goog-api-client`` and routing headers, the timeout given, no retry, and Google's errors
    raised as ``google.api_core`` exceptions by the client's own wrapper (``wrap_errors``),
    which ``errors.translate_google_errors`` translates. For the asyncio client, calling it
    returns an awaitable.

    Creating a task is the call whose CPU bounds the enqueue rate (bench/api.py). The client's
    generic method path (its retry and timeout decorators, metadata merging, the routing field
    read back through proto-plus) is some 85 Python calls per enqueue for what this does in a
    dozen. Not checked per call, as the client does: that the credentials' universe domain is
    the client's (an endpoint outside googleapis.com; ``check_reachable`` still asks it).
    """

    def __init__(self, stub: Any, asyncio: bool) -> None:
        self._call = (grpc_helpers_async if asyncio else grpc_helpers).wrap_errors(stub)

    @classmethod
    def of(cls, client: tasks_v2.CloudTasksClient | tasks_v2.CloudTasksAsyncClient,
           ) -> CreateTask:
        """On the client's own stub: its channel, credentials and interceptors."""
        return cls(client.transport.create_task,
                   isinstance(client, tasks_v2.CloudTasksAsyncClient))

    def __call__(self, request: Any, timeout: float) -> Any:
        """Create the task of ``request``, a raw ``CreateTaskRequest`` message."""
        return self._call(tasks_v2.CreateTaskRequest.wrap(request), timeout=timeout,
                          metadata=(_API_CLIENT, _routing(request.parent)))


_API_CLIENT = DEFAULT_CLIENT_INFO.to_grpc_metadata()
_CREATE_TASK = "/google.cloud.tasks.v2.CloudTasks/CreateTask"  # the method, as the proto names it


@functools.lru_cache(maxsize=256)
def _routing(parent: str) -> tuple[str, str]:
    """The routing header of a call on ``parent`` (a process enqueues to a few queues: the
    URL-encoded value is made once each)."""
    return gapic_v1.routing_header.to_grpc_metadata((("parent", parent),))


class AsyncTasks(NamedTuple):
    client: tasks_v2.CloudTasksAsyncClient
    create: CreateTask


def tasks_async(settings: Settings) -> AsyncTasks:
    """An asyncio client, and CreateTask on a twin of its channel; build them inside the event
    loop that will use them.

    The asyncio transport adds its debug-logging interceptor to the channel it is given, and
    an intercepted call runs as a second asyncio task: a quarter of the Python calls of an
    enqueue, for logging that is off unless ``GOOGLE_SDK_PYTHON_LOGGING_SCOPE`` turns it on.
    So CreateTask goes on a second channel made with the same arguments (on Google, those the
    transport resolved: endpoint, credentials, TLS), which the transport never sees; with
    the client's debug logging on, on the client's own stub, logged as the rest.
    """
    twins: list[grpc.aio.Channel] = []
    if settings.on_emulator:
        client = _client(settings, tasks_v2.CloudTasksAsyncClient,
                         CloudTasksGrpcAsyncIOTransport, grpc.aio.insecure_channel)
        twins.append(grpc.aio.insecure_channel(settings.cloud_tasks_emulator_host,
                                               options=_EMULATOR_CHANNEL))
    else:
        def channels(*args: Any, **kwargs: Any) -> grpc.aio.Channel:
            # The transport calls this with what it resolved, for its own channel.
            twins.append(CloudTasksGrpcAsyncIOTransport.create_channel(*args, **kwargs))
            return CloudTasksGrpcAsyncIOTransport.create_channel(*args, **kwargs)

        credentials = _credentials()
        client = _remember_principal(tasks_v2.CloudTasksAsyncClient(
            credentials=credentials,
            transport=lambda **kw: CloudTasksGrpcAsyncIOTransport(channel=channels, **kw)),
            credentials)
    if logging.getLogger(CloudTasksGrpcAsyncIOTransport.__module__).isEnabledFor(
            logging.DEBUG):
        return AsyncTasks(client, CreateTask.of(client))
    stub = twins[0].unary_unary(_CREATE_TASK,
                                request_serializer=tasks_v2.CreateTaskRequest.serialize,
                                response_deserializer=tasks_v2.Task.deserialize)
    return AsyncTasks(client, CreateTask(stub, asyncio=True))


def run_client(settings: Settings, acting_as: str | None = None) -> run_v2.ServicesClient:
    """Cloud Run Admin v2 (services, their IAM policies): Google, or the emulator."""
    return _client(settings, run_v2.ServicesClient, ServicesGrpcTransport, acting_as=acting_as)


def iam_client(settings: Settings, acting_as: str | None = None) -> iam_admin_v1.IAMClient:
    """IAM Admin v1 (service accounts and their policies): Google, or the emulator."""
    return _client(settings, iam_admin_v1.IAMClient, IAMGrpcTransport, acting_as=acting_as)


def credentials_client(settings: Settings, acting_as: str | None = None,
                       ) -> iam_credentials_v1.IAMCredentialsClient:
    """IAM Credentials v1 (ID tokens minted as a service account, for the probe): Google,
    or the emulator."""
    return _client(settings, iam_credentials_v1.IAMCredentialsClient,
                   IAMCredentialsGrpcTransport, acting_as=acting_as)


def projects_client(settings: Settings,
                    acting_as: str | None = None) -> resourcemanager_v3.ProjectsClient:
    """Resource Manager v3 (the project's IAM policy): Google, or the emulator."""
    return _client(settings, resourcemanager_v3.ProjectsClient, ProjectsGrpcTransport,
                   acting_as=acting_as)


def logging_client(settings: Settings, acting_as: str | None = None) -> LoggingServiceV2Client:
    """Cloud Logging v2 (the queues' task-operation logs and the audit lines): Google, or the
    emulator. The low-level client: the high-level ``google.cloud.logging.Client`` insists
    on TLS over gRPC, so it cannot reach the emulator."""
    return _client(settings, LoggingServiceV2Client, LoggingServiceV2GrpcTransport,
                   acting_as=acting_as)


def acting_principal(settings: Settings, acting_as: str | None = None) -> str:
    """Whom the clients built with ``acting_as`` call Google as, for a person to read."""
    if settings.on_emulator:
        return acting_as or f"serviceAccount:{LOCAL_PRINCIPAL}"
    credentials = _credentials()
    email = getattr(credentials, "service_account_email", None)
    if email and "@" in email:
        return f"serviceAccount:{email}"
    account = getattr(credentials, "account", None)  # user credentials from gcloud
    if account:
        return f"user:{account}"
    return "the account of your Application Default Credentials"


def caller_member(settings: Settings) -> str:
    """The IAM member the CLI acts as, for Enqueuer's access config: on the emulator
    ``EMULATOR_OPERATOR``; on Google the identity of the Application Default Credentials
    (a service account's email, or the user's, from the ID token Google issues with them).
    """
    if settings.on_emulator:
        return settings.emulator_operator
    credentials = _credentials()
    email = getattr(credentials, "service_account_email", None)
    if email and "@" in email:
        return f"serviceAccount:{email}"
    email = getattr(credentials, "account", None)
    if not email:
        try:
            credentials.refresh(google.auth.transport.requests.Request())
            token = getattr(credentials, "id_token", None)
            email = google.auth.jwt.decode(token, verify=False).get("email") if token else None
        except (google.auth.exceptions.GoogleAuthError, ValueError):
            email = None
    if not email:
        raise Unauthenticated(
            "Cannot tell who you are from your Application Default Credentials, so Enqueuer's "
            "access config cannot be applied: run `gcloud auth application-default login` "
            "(its credentials carry your email), or use a service account key")
    return f"user:{email}"


def principal(client: Any) -> str | None:
    """Who the client calls Google as, when its credentials say (for error messages)."""
    return _principals.get(client)

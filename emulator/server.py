"""The emulator as one process: store, OIDC issuer, dispatcher, gRPC and HTTP servers.

Everything runs on one asyncio loop; SQLite calls are short and made from that loop, so
no two requests ever interleave inside a store operation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import grpc
from aiohttp import web
from google.cloud import tasks_v2
from google.iam.v1 import iam_policy_pb2
from google.protobuf import field_mask_pb2

from emulator.clock import duration, now_us
from emulator.cloud_run import CloudRun
from emulator.config import BindingConfig, ConfigError, EmulatorConfig, QueueConfig
from emulator.dispatcher import Dispatcher
from emulator.errors import ApiError
from emulator.grpc_server import MAX_MESSAGE_BYTES, GrpcRouter
from emulator.http_api import oidc_routes
from emulator.iam import Authorizer, PolicyStore, service_account_resource
from emulator.iam_admin import IamAdmin
from emulator.iam_credentials import IamCredentials
from emulator.locations import Locations
from emulator.log_filter import INDEXES
from emulator.log_store import LogStore
from emulator.logging_api import LoggingService
from emulator.oidc import Issuer
from emulator.queue_stats import GetQueueRequestB3, ListQueuesRequestB3, QueueStatsService
from emulator.queues import PAUSED, RUNNING, Queue, apply_update, validate_and_default
from emulator.resource_manager import ResourceManager
from emulator.rest import RestGateway
from emulator.store import Store
from emulator.tasks_service import CloudTasksService, Limits

log = logging.getLogger("emulator")

TASKS_V2 = "google.cloud.tasks.v2.CloudTasks"
TASKS_V2BETA3 = "google.cloud.tasks.v2beta3.CloudTasks"


class Emulator:
    def __init__(
        self,
        config: EmulatorConfig,
        db: str | Path = ":memory:",
        host: str = "127.0.0.1",
        port: int = 8123,
        http_port: int = 8124,
    ) -> None:
        self.config = config
        self.db = str(db)
        self.host = host
        self.port = port
        self.http_port = http_port
        self.router = GrpcRouter()
        # As large a body as gRPC takes, so an oversized task gets Google's message on REST too.
        self.http_app = web.Application(client_max_size=MAX_MESSAGE_BYTES)
        self._grpc: grpc.aio.Server | None = None
        self._http: web.AppRunner | None = None
        self._janitor: asyncio.Task[None] | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    async def start(self) -> None:
        self.store = Store(self.db)
        self.issuer = Issuer(self.store)
        self.logs = LogStore(self.store, self.config.logging.retention_days, INDEXES)
        limits = Limits(self.config.task_name_reservation_s, self.config.queue_name_reservation_s)
        self.dispatcher = Dispatcher(self.store, self.issuer, limits.task_name_reservation_s,
                                     self.logs)
        iam = self.config.iam
        self.authorizer = Authorizer(PolicyStore(self.store), self.config.project, iam.enforce,
                                     iam.principal)
        self.tasks = CloudTasksService(self.store, self.dispatcher, limits, self.authorizer)
        self._register_tasks_api()
        self.cloud_run = CloudRun(self.config, self.authorizer, self.issuer, self.host)
        self.cloud_run.register(self.router)
        accounts = IamAdmin(self.config, self.authorizer, self.store)
        accounts.register(self.router)
        IamCredentials(accounts, self.authorizer, self.issuer).register(self.router)
        ResourceManager(self.config, self.authorizer, self.store).register(self.router)
        LoggingService(self.logs, self.authorizer).register(self.router)
        Locations(self.config, self.authorizer).register(self.router)
        oidc_routes(self.http_app, self.issuer, self.config.oidc, self.store)
        # HTTP/JSON beside the OIDC routes, once every method is registered.
        RestGateway(self.router).add_routes(self.http_app)
        try:
            self._apply_config()
            await self._listen()
            await self.cloud_run.start()
            await self.dispatcher.start()
        except BaseException:
            await self.stop()
            raise
        self._janitor = asyncio.get_running_loop().create_task(self._janitor_loop())

    async def _listen(self) -> None:
        self._grpc, self.port = self.router.server(self.host, self.port)
        self._http = web.AppRunner(self.http_app, access_log=None, handle_signals=False)
        await self._http.setup()
        site = web.TCPSite(self._http, self.host, self.http_port)
        try:
            await site.start()
        except OSError as e:
            raise OSError(
                f"cannot listen on {self.host}:{self.http_port} for HTTP: {e.strerror}. "
                "Stop what uses it or pass another --http-port."
            ) from None
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.http_port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        await self._grpc.start()

    async def stop(self) -> None:
        if self._janitor:
            self._janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._janitor
        if self._grpc:
            await self._grpc.stop(grace=1)
        if self._http:
            await self._http.cleanup()
        if hasattr(self, "cloud_run"):
            await self.cloud_run.stop()
        await self.dispatcher.stop()
        self.store.close()

    def _register_tasks_api(self) -> None:
        t = tasks_v2
        self.router.add_all(TASKS_V2, self.tasks, {
            "ListQueues": t.ListQueuesRequest.pb(),
            "GetQueue": t.GetQueueRequest.pb(),
            "CreateQueue": t.CreateQueueRequest.pb(),
            "UpdateQueue": t.UpdateQueueRequest.pb(),
            "DeleteQueue": t.DeleteQueueRequest.pb(),
            "PurgeQueue": t.PurgeQueueRequest.pb(),
            "PauseQueue": t.PauseQueueRequest.pb(),
            "ResumeQueue": t.ResumeQueueRequest.pb(),
            "GetIamPolicy": iam_policy_pb2.GetIamPolicyRequest,
            "SetIamPolicy": iam_policy_pb2.SetIamPolicyRequest,
            "TestIamPermissions": iam_policy_pb2.TestIamPermissionsRequest,
            "ListTasks": t.ListTasksRequest.pb(),
            "GetTask": t.GetTaskRequest.pb(),
            "CreateTask": t.CreateTaskRequest.pb(),
            "DeleteTask": t.DeleteTaskRequest.pb(),
            "RunTask": t.RunTaskRequest.pb(),
        })
        # Queue stats exist only in v2beta3 (Queue.stats through read_mask).
        self.router.add_all(TASKS_V2BETA3, QueueStatsService(self.tasks), {
            "GetQueue": GetQueueRequestB3,
            "ListQueues": ListQueuesRequestB3,
        })

    def _apply_config(self) -> None:
        """Create (or bring up to date) the queues the configuration names."""
        for qc in self.config.queues:
            name = self.config.queue_name(qc.name)
            update, paths = _queue_update(name, qc)
            current = self.store.get_queue(name)
            if current is None:
                current = Queue(name=name)
                validate_and_default(current)
            try:
                queue = apply_update(current, update, field_mask_pb2.FieldMask(paths=paths))
            except ApiError as e:
                raise ConfigError(f"queue {qc.name!r}: {e.message}") from None
            queue.state = PAUSED if qc.paused else RUNNING
            self.store.put_queue(queue)
        # The configuration is authoritative for the policies it names: applied at each start.
        policies = self.authorizer.policies
        if self.config.iam.bindings:
            policies.replace(f"projects/{self.config.project}", _bindings(self.config.iam.bindings))
        for qc in self.config.queues:
            if qc.bindings is not None:
                policies.replace(self.config.queue_name(qc.name), _bindings(qc.bindings))
        for sa in self.config.service_accounts:
            policies.replace(service_account_resource(sa.email), _bindings(sa.bindings))
        for svc in self.config.services:
            invokers = {"roles/run.invoker": svc.invokers} if svc.invokers else {}
            policies.replace(self.config.service_name(svc.name), invokers)

    async def _janitor_loop(self) -> None:
        """Expire task name reservations, and log entries past their retention."""
        while True:
            await asyncio.sleep(min(60.0, max(1.0, self.config.task_name_reservation_s / 4)))
            try:
                self.store.expire_reservations(now_us())
            except Exception:
                log.exception("could not expire task name reservations")
            try:
                # A batch per pass; after a long stop, catch up without stalling dispatch.
                while self.logs.expire(now_us()) and not self.dispatcher.unstarted:
                    await asyncio.sleep(0)
            except Exception:
                log.exception("could not delete log entries past their retention")


def _bindings(bindings: list[BindingConfig]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for b in bindings:
        out.setdefault(b.role, []).extend(m for m in b.members if m not in out.get(b.role, []))
    return out


def _queue_update(name: str, qc: QueueConfig) -> tuple[Queue, list[str]]:
    queue = Queue(name=name)
    paths: list[str] = []
    if qc.log_sampling_ratio is not None:
        queue.stackdriver_logging_config.sampling_ratio = qc.log_sampling_ratio
        paths.append("stackdriver_logging_config.sampling_ratio")
    for field, value in qc.rate_limits.model_dump(exclude_none=True).items():
        setattr(queue.rate_limits, field, value)
        paths.append(f"rate_limits.{field}")
    for field, value in qc.retry_config.model_dump(exclude_none=True).items():
        if field.endswith("_s"):
            proto_field = field[:-2]
            getattr(queue.retry_config, proto_field).CopyFrom(duration(value))
        else:
            proto_field = field
            setattr(queue.retry_config, field, value)
        paths.append(f"retry_config.{proto_field}")
    return queue, paths

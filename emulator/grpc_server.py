"""Serves API methods over gRPC with the services' real names, so official clients connect.

Services register plain functions (request proto -> response proto, or an awaitable of
it); a method that no service registered answers UNIMPLEMENTED, as gRPC does for unknown
methods. ``GrpcRouter.invoke`` is the one way a registered method is called, so the
gRPC port and the HTTP/JSON port (``rest``) answer alike.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc

from emulator.errors import ApiError

log = logging.getLogger("emulator.grpc")
# Large enough that an oversized task reaches CreateTask and gets Google's message.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
# The metadata of the call being served (lower-case keys), for who-is-calling checks.
CALL_METADATA: ContextVar[dict[str, str] | None] = ContextVar("CALL_METADATA", default=None)
PRINCIPAL_HEADER = "x-emulator-principal"


def caller(default: str) -> str:
    """The calling principal: the call's ``x-emulator-principal`` metadata, or ``default``."""
    return (CALL_METADATA.get() or {}).get(PRINCIPAL_HEADER) or default


@dataclass(frozen=True)
class Method:
    """A registered method: its implementation and the protobuf class of its request."""

    fn: Callable[[Any], Any]
    request_type: type


class GrpcRouter:
    def __init__(self) -> None:
        self._services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        # (service, method) -> Method, e.g. ("google.cloud.tasks.v2.CloudTasks", "GetQueue")
        self.methods: dict[tuple[str, str], Method] = {}

    async def invoke(self, service: str, method: str, request: Any,
                     metadata: dict[str, str]) -> Any:
        """Call a registered method as the caller ``metadata`` (lower-case keys) names.

        Raises ``ApiError``: the method's own, or INTERNAL for anything else it raised,
        logged, so every port answers a failure the same way.
        """
        fn = self.methods[(service, method)].fn
        CALL_METADATA.set(metadata)
        try:
            result = fn(request)
            if inspect.isawaitable(result):
                result = await result
            return result
        except ApiError:
            raise
        except Exception as e:
            log.exception("%s/%s failed", service, method)
            raise ApiError(
                grpc.StatusCode.INTERNAL,
                f"The emulator failed on {method}: {type(e).__name__}: {e}. "
                "See the emulator's log.",
            ) from e

    def add(
        self, service: str, method: str, fn: Callable[[Any], Any], request_type: type
    ) -> None:
        self.methods[(service, method)] = Method(fn, request_type)

        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ())
                        if isinstance(v, str)}
            try:
                return await self.invoke(service, method, request, metadata)
            except ApiError as e:
                # An error may carry a google.rpc.Status with details (Logging's partial errors).
                details = getattr(e, "status_details", None)
                trailers = (("grpc-status-details-bin", details),) if details else ()
                await context.abort(e.code, e.message, trailing_metadata=trailers)

        self._services.setdefault(service, {})[method] = grpc.unary_unary_rpc_method_handler(
            handle,
            request_deserializer=request_type.FromString,
            response_serializer=lambda m: m.SerializeToString(),
        )

    def add_all(self, service: str, target: object, methods: dict[str, type]) -> None:
        for method, request_type in methods.items():
            self.add(service, method, getattr(target, method), request_type)

    def server(self, host: str, port: int) -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ]
        )
        server.add_generic_rpc_handlers(
            tuple(
                grpc.method_handlers_generic_handler(name, methods)
                for name, methods in self._services.items()
            )
        )
        try:
            bound = server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:
            bound = 0
        if not bound:
            raise OSError(
                f"cannot listen on {host}:{port} for gRPC: the port is in use. "
                "Stop what uses it or pass another --port."
            )
        return server, bound

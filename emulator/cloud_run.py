"""Cloud Run as the workers see it: the services the emulator hosts, behind Cloud Run's
front door, and the Cloud Run Admin v2 API that describes them.

Each ``[[services]]`` entry of the configuration listens on ``127.0.0.1:port`` (0: any free
port; ``urls()`` gives the bound base URLs) in the emulator's own process. A request goes
through:

- the front door (``front_door.py``): ingress, then the ID token and its audience, then
  ``run.routes.invoke`` from the service's IAM policy, read on every request;
- the service's capacity: past ``max_instances`` x ``concurrency`` requests in flight, 429
  ``Rate exceeded.`` (``front_door.Capacity``);
- the request timeout: a worker slower than ``timeout_s`` is cut off and the caller gets
  504 ``upstream request timeout`` (cloud.google.com/run/docs/configuring/request-timeout:
  "If a response isn't returned within the time specified, the request ends and an error
  504 is returned");
- the sample worker (``sample_worker.py``): an echo on the service's ``paths``, 404
  elsewhere, with knobs to fail, retry and be slow.

``GET /_requests`` on a service's port, outside the door and with no token, answers the
requests the door let through, oldest first (at most the last 1,000)::

    [{"at": 1767225600.12, "method": "POST", "path": "/process", "query": "",
      "headers": [["Authorization", "Bearer ..."], ...], "body": {...} | null,
      "claims": {"aud": ..., "email": ..., ...} | null, "status": 200 | null}]

``claims`` are the verified token's (null for a public service, which checks none);
``status`` is what the worker answered (504 when cut off, 499 when the caller hung up before
its body arrived), null while it is still working.
Like the door's 401, 403 and 404, a 429 is not listed: the request never reached an
instance (Cloud Run logs it, with "The request was aborted because there was no available
instance."; the emulator logs it on its own stderr, with the reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

from aiohttp import web

from emulator.config import EmulatorConfig, ServiceConfig
from emulator.front_door import RATE_EXCEEDED, Capacity, FrontDoor, Verdict, error_page
from emulator.grpc_server import GrpcRouter
from emulator.iam import Authorizer
from emulator.oidc import Issuer
from emulator.run_admin import RunAdmin, ServiceRecord
from emulator.sample_worker import SampleWorker, parse_json

log = logging.getLogger("emulator.run")
MAX_LOGGED = 1000
MAX_REQUEST_BYTES = 32 * 1024 * 1024  # Cloud Run's limit for HTTP/1 requests
TIMEOUT_BODY = "upstream request timeout"
CLIENT_GONE = 499  # the status proxies log for a caller that closed the request


class HostedService:
    """One service: its port, its front door, its worker and what went through."""

    def __init__(self, config: ServiceConfig, record: ServiceRecord, door: FrontDoor) -> None:
        self.config = config
        self.record = record
        self.door = door
        self.capacity = Capacity(config)
        self.worker = SampleWorker(config.name, config.paths)
        self.requests: deque[dict[str, Any]] = deque(maxlen=MAX_LOGGED)
        self.runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_get("/_requests", self.list_requests)
        app.router.add_route("*", "/{tail:.*}", self.serve)
        return app

    async def list_requests(self, _: web.Request) -> web.Response:
        return web.json_response(list(self.requests))

    async def serve(self, request: web.Request) -> web.StreamResponse:
        verdict = self.door.check(request.headers)
        if not verdict.admitted:
            return self._refuse(request, verdict)
        full = self.capacity.admit()
        if full is not None:
            return self._refuse(request, full)
        try:
            return await self._serve(request, verdict)
        finally:
            # Every way out (answer, 504, a worker error, a caller gone) frees the slot.
            self.capacity.release()

    def _refuse(self, request: web.Request, verdict: Verdict) -> web.Response:
        log.info("%s: %d for %s %s: %s", self.config.name, verdict.status, request.method,
                 request.path, verdict.reason)
        # The reason may quote a token's claims: keep it one printable ASCII line.
        reason = " ".join(verdict.reason.split()).encode("ascii", "backslashreplace")
        headers = {"X-Emulator-Reason": reason.decode()}
        if verdict.status == 429:
            return web.Response(status=429, text=RATE_EXCEEDED, headers=headers)
        if verdict.status == 401 and request.headers.get("Authorization"):
            headers["WWW-Authenticate"] = (
                'Bearer error="invalid_token" '
                'error_description="The access token could not be verified"'
            )
        return web.Response(status=verdict.status, text=error_page(verdict.status,
                                                                   request.path),
                            content_type="text/html", headers=headers)

    async def _serve(self, request: web.Request, verdict: Verdict) -> web.StreamResponse:
        entry: dict[str, Any] = {
            "at": time.time(), "method": request.method, "path": request.path,
            "query": request.query_string,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body": None, "claims": verdict.claims, "status": None,
        }
        self.requests.append(entry)  # on arrival: a slow request is visible while it runs
        try:
            status, answer = await asyncio.wait_for(self._work(request, entry),
                                                    self.config.timeout_s)
        except TimeoutError:
            entry["status"] = 504
            log.info("%s: 504 for %s %s: the worker did not answer within %gs", self.config.name,
                     request.method, request.path, self.config.timeout_s)
            return web.Response(status=504, text=TIMEOUT_BODY)
        except ConnectionResetError:
            # The caller hung up before its body arrived: nothing to answer, nobody to tell.
            entry["status"] = CLIENT_GONE
            log.info("%s: %s %s: the caller closed the connection before sending its body",
                     self.config.name, request.method, request.path)
            return web.Response(status=CLIENT_GONE)
        entry["status"] = status
        return web.json_response(answer, status=status)

    async def _work(self, request: web.Request, entry: dict[str, Any]) -> tuple[int, Any]:
        received = parse_json(await request.read())
        entry["body"] = received
        return await self.worker.handle(request.path, request.headers, received)


class CloudRun:
    def __init__(self, config: EmulatorConfig, authorizer: Authorizer, issuer: Issuer,
                 host: str) -> None:
        self.config = config
        self.authorizer = authorizer
        self.issuer = issuer
        self.host = host
        self.records: dict[str, ServiceRecord] = {}
        self.hosted: dict[str, HostedService] = {}

    def register(self, router: GrpcRouter) -> None:
        """Serve google.cloud.run.v2.Services on the emulator's gRPC port."""
        RunAdmin(self.config, self.authorizer, self.records).register(router)

    async def start(self) -> None:
        """Listen on each configured service's port."""
        for svc in self.config.services:
            name = self.config.service_name(svc.name)
            record = ServiceRecord(svc, name)
            hosted = HostedService(svc, record,
                                   FrontDoor(svc, name, self.authorizer, self.issuer))
            self.hosted[svc.name] = hosted
            port = await self._listen(hosted)
            # A wildcard bind address is not somewhere a client can call.
            host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host
            host = f"[{host}]" if ":" in host else host
            record.uri = hosted.door.url = f"http://{host}:{port}"
            record.load_history(self.authorizer.policies.store)
            self.records[name] = record

    async def _listen(self, hosted: HostedService) -> int:
        # In-flight requests get a second at stop; the worker is a sample, nothing is lost.
        runner = web.AppRunner(hosted.app(), access_log=None, handle_signals=False,
                               shutdown_timeout=1.0)
        await runner.setup()
        hosted.runner = runner
        site = web.TCPSite(runner, self.host, hosted.config.port)
        try:
            await site.start()
        except OSError as e:
            raise OSError(
                f"cannot listen on {self.host}:{hosted.config.port} for Cloud Run service "
                f"{hosted.config.name!r}: {e.strerror}. Stop what uses it or change its port "
                "in the configuration (0: any free port)."
            ) from None
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        return server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        """Stop listening."""
        for hosted in self.hosted.values():
            if hosted.runner:
                with contextlib.suppress(Exception):
                    await hosted.runner.cleanup()
                hosted.runner = None

    def urls(self) -> dict[str, str]:
        """Each service's base URL, by service name."""
        return {name: h.record.uri for name, h in self.hosted.items() if h.record.uri}

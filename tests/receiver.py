"""A real HTTP server that stands in for a worker: it records what it receives.

Each path can be told what to answer (a sequence of status codes, a delay), so tests drive
retries and deadlines; tests wait on what arrives with timeouts, never with sleeps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    method: str
    path: str
    headers: list[tuple[str, str]]  # as sent, casing kept
    body: bytes
    at: float = field(default_factory=time.time)

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 drops bursts of connections (the client retries a second
    # later), which would look like slow dispatch.
    request_queue_size = 1024


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._cond = threading.Condition()
        self._script: dict[str, list[int]] = {}
        self._delay: dict[str, float] = {}
        self._active = 0
        self.max_concurrent = 0  # the most requests it was handling at once
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path
                # Recorded on arrival, so a test sees a request its handler is still holding.
                with receiver._cond:
                    receiver._active += 1
                    receiver.max_concurrent = max(receiver.max_concurrent, receiver._active)
                    script = receiver._script.get(path)
                    status = script.pop(0) if script else 200
                    receiver.requests.append(
                        Received(self.command, path, list(self.headers.items()), body)
                    )
                    receiver._cond.notify_all()
                delay = receiver._delay.get(path, 0.0)
                if delay:
                    time.sleep(delay)
                with receiver._cond:
                    receiver._active -= 1
                payload = b'{"ok": true}'
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the caller gave up (dispatch deadline)

            do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = _handle

            def log_message(self, *args: object) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        daemon=True)
        self._thread.start()

    @property
    def active(self) -> int:
        """Requests it is holding now (received, not yet answered)."""
        with self._cond:
            return self._active

    def respond(self, path: str, statuses: list[int]) -> None:
        """Answer the next requests to ``path`` with these codes, then 200."""
        with self._cond:
            self._script[path] = list(statuses)

    def delay(self, path: str, seconds: float) -> None:
        self._delay[path] = seconds

    def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0
    ) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.requests):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"receiver: condition not met in {timeout}s; got {len(self.requests)} "
                        f"request(s): {[(r.method, r.path) for r in self.requests]}"
                    )
                self._cond.wait(left)
            return list(self.requests)

    def at(self, path: str, n: int = 1, timeout: float = 10.0) -> list[Received]:
        """Wait until ``path`` got ``n`` requests; return those."""
        got = self.wait_for(lambda rs: sum(r.path == path for r in rs) >= n, timeout)
        return [r for r in got if r.path == path]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

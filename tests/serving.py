"""The API served for real in tests: uvicorn on an ephemeral port, in a thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from tests.emulator.harness import wait_until


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` in a real uvicorn server on an ephemeral port, in a thread; its base URL."""
    # log_config=None: the test process's logging stays as pytest set it up.
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), timeout=10,
                   what="uvicorn started")
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)

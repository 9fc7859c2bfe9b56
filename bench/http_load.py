"""The cheapest load generator for an HTTP/1.1 JSON API: a pool of keep-alive connections that
write each request as one buffer and read the answer by its Content-Length.

On a benchmark machine whose cores the server under test shares, the client's CPU per request
is taken from the server: aiohttp's client costs about 160 µs per request on the 2-core
machine bench/api.py runs on, as much as a third of the API's own, and httpx's several times
that. This one reads and writes bytes with asyncio's streams and little else. It speaks only
what a benchmark needs: POST with a body, answers with Content-Length (no chunked bodies), the
connection kept open (it fails loudly otherwise).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


class Connections:
    """``count`` keep-alive connections to ``host:port``, each used by one request at a time."""

    def __init__(self, host: str, port: int, count: int) -> None:
        self.host, self.port, self.count = host, port, count
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue())
        self._all: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Connections:
        for _ in range(self.count):
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self._all.append(writer)
            self._idle.put_nowait((reader, writer))
        return self

    async def __aexit__(self, *_: object) -> None:
        for writer in self._all:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in self._all), return_exceptions=True)

    async def post_json(self, path: str, headers: dict[str, str], body: Any,
                        ) -> tuple[int, bytes]:
        """``POST path`` with ``body`` as JSON; the status and the body of the answer."""
        data = json.dumps(body).encode()
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{head}"
                   f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                   ).encode("latin-1") + data
        reader, writer = await self._idle.get()
        try:
            writer.write(request)
            status_line, _, rest = (await reader.readuntil(b"\r\n\r\n")).partition(b"\r\n")
            length = None
            for line in rest.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
                elif name.lower() == b"connection" and value.strip().lower() == b"close":
                    raise RuntimeError("the server closed a keep-alive connection")
            if length is None:
                raise RuntimeError(f"an answer without Content-Length: {status_line!r}")
            answer = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        self._idle.put_nowait((reader, writer))
        return int(status_line.split(b" ", 2)[1]), answer

"""A stand-in for Identity-Aware Proxy in front of the dashboard: a reverse proxy that adds
headers to every request it forwards, the websocket's handshake included.

IAP sits in front of the service and adds ``x-goog-iap-jwt-assertion`` to each request it
lets through. Streamlit reads a session's headers from its websocket's handshake, and a
browser's own extra headers (Playwright's ``extra_http_headers``) do not reach that
handshake in every Chromium; a proxy adds them where IAP does, whatever the browser.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import aiohttp
from aiohttp import web

# Hop-by-hop headers (RFC 9110 §7.6.1) and the length, which aiohttp sets itself. Bodies
# pass as they are (not decompressed), so their Content-Encoding goes with them.
_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "transfer-encoding", "upgrade", "content-length"}
_WS_OWN = _HOP | {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
                  "sec-websocket-protocol"}


def _forwarded(request: web.Request, added: dict[str, str], skip: set[str]) -> dict[str, str]:
    # The browser's Host is kept, so that the upstream's origin check sees what it expects.
    headers = {k: v for k, v in request.headers.items() if k.lower() not in skip}
    return headers | added


def _app(upstream: str, added: dict[str, str]) -> web.Application:
    session: aiohttp.ClientSession | None = None
    # Open websockets: closed at shutdown, or it would wait for the browser to leave.
    sockets: set[web.WebSocketResponse] = set()

    async def open_session(_: web.Application) -> None:
        nonlocal session
        session = aiohttp.ClientSession(auto_decompress=False,
                                        cookie_jar=aiohttp.DummyCookieJar())

    async def close_session(_: web.Application) -> None:
        if session:
            await session.close()

    async def close_sockets(_: web.Application) -> None:
        for ws in list(sockets):
            await ws.close()

    async def websocket(request: web.Request) -> web.StreamResponse:
        assert session is not None
        protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "")
                     .split(",") if p.strip()]
        async with session.ws_connect(upstream + request.path_qs, protocols=protocols,
                                      headers=_forwarded(request, added, _WS_OWN),
                                      max_msg_size=0) as up:
            down = web.WebSocketResponse(protocols=(up.protocol,) if up.protocol else (),
                                         max_msg_size=0)
            await down.prepare(request)
            sockets.add(down)

            async def pump(src: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
                           dst: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
                           ) -> None:
                async for msg in src:
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        await dst.send_bytes(msg.data)
                    elif msg.type == aiohttp.WSMsgType.TEXT:
                        await dst.send_str(msg.data)
                    else:
                        break
                await dst.close()

            try:
                await asyncio.gather(pump(down, up), pump(up, down), return_exceptions=True)
            finally:
                sockets.discard(down)
            return down

    async def forward(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await websocket(request)
        assert session is not None
        async with session.request(request.method, upstream + request.path_qs,
                                   headers=_forwarded(request, added, _HOP),
                                   data=await request.read(), allow_redirects=False) as up:
            body = await up.read()
            headers = [(k, v) for k, v in up.headers.items() if k.lower() not in _HOP]
            response = web.Response(status=up.status, body=body)
            for k, v in headers:
                response.headers.add(k, v)
            return response

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.on_startup.append(open_session)
    app.on_shutdown.append(close_sockets)
    app.on_cleanup.append(close_session)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


@contextmanager
def iap_front(upstream: str, headers: dict[str, str]) -> Iterator[str]:
    """``upstream`` behind a proxy that adds ``headers`` to every request; the proxy's URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(_app(upstream.rstrip("/"), headers), access_log=None,
                           shutdown_timeout=2)
    ready = threading.Event()
    url: list[str] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url.append(f"http://127.0.0.1:{port}")
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert ready.wait(10), "the IAP stand-in did not start"
        yield url[0]
    finally:
        with suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

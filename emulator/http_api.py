"""The emulator's HTTP port: Google's OIDC discovery and certificate endpoints."""

from __future__ import annotations

from aiohttp import web

from emulator.oidc import Issuer


def oidc_routes(app: web.Application, issuer: Issuer) -> None:
    async def discovery(request: web.Request) -> web.Response:
        return web.json_response(Issuer.discovery(f"{request.scheme}://{request.host}"))

    async def certs_v1(_: web.Request) -> web.Response:
        return web.json_response(issuer.certs_v1())

    async def certs_v3(_: web.Request) -> web.Response:
        return web.json_response(issuer.certs_v3())

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app.router.add_get("/.well-known/openid-configuration", discovery)
    app.router.add_get("/oauth2/v1/certs", certs_v1)
    app.router.add_get("/oauth2/v3/certs", certs_v3)
    app.router.add_get("/healthz", healthz)

"""Helpers for tests: route dicts for the sandbox, URLs, waiting on conditions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from proxy.app import ProxyServer
from proxy.sandbox import Sandbox

ROUTE_KEYS = ("headers", "upstream", "allowed_hosts")


def _split(extra: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    route = {k: extra.pop(k) for k in ROUTE_KEYS if k in extra}
    return extra, route


def iics_route(
    sandbox: Sandbox, *, name: str = "iics", prefix: str = "/iics", **extra: Any
) -> dict[str, Any]:
    """An iics-password route to the sandbox; route-level keys go to the route, the rest to auth."""
    auth, route = _split(extra)
    auth = {
        "type": "iics-password",
        "login_url": sandbox.urls.login,
        "username": "demo",
        "password": "demo-password",
        **auth,
    }
    return {"name": name, "match": {"prefix": prefix}, "auth": auth, **route}


def ivanti_key_route(
    sandbox: Sandbox, *, name: str = "ivanti", prefix: str = "/ivanti", **extra: Any
) -> dict[str, Any]:
    auth, route = _split(extra)
    auth = {"type": "ivanti-api-key", "url": sandbox.urls.ivanti, "api_key": "demo-api-key", **auth}
    return {"name": name, "match": {"prefix": prefix}, "auth": auth, **route}


def base(server: ProxyServer, prefix: str = "") -> str:
    return f"http://127.0.0.1:{server.port}{prefix}"


async def wait_for(
    condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition"
) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _echo(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body": body.decode("latin-1"),
        }
    )


class Upstream:
    """A programmable upstream for forwarding tests (no vendor semantics)."""

    def __init__(self) -> None:
        self.port = 0
        self.handler: Handler = _echo
        self.seen: list[web.Request] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        async def dispatch(request: web.Request) -> web.StreamResponse:
            self.seen.append(request)
            return await self.handler(request)

        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", dispatch)
        return app

    def route(self, *, name: str = "up", prefix: str = "/up", **extra: Any) -> dict[str, Any]:
        """An ivanti-api-key route to this upstream: no login, a fixed injected header."""
        auth = {"type": "ivanti-api-key", "url": self.url, "api_key": "upstream-key"}
        return {"name": name, "match": {"prefix": prefix}, "auth": auth, **extra}

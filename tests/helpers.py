"""Helpers for tests: route dicts for the sandbox, URLs, waiting on conditions."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from proxy.sandbox import Sandbox
from proxy.server.app import ProxyServer

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


ROOT = Path(__file__).resolve().parent.parent


def write_config(path: Path, routes: list[dict[str, Any]], **top: Any) -> None:
    """A config file; its sessions are per process (``session_store: memory``) unless
    ``top`` says otherwise."""
    data = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "session_store": {"type": "memory"},
        **top,
        "routes": routes,
    }
    path.write_text(yaml.safe_dump(data))


class Served:
    """``auth-proxy serve`` running as a real process; its stdout goes to a file."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, out: Path, err: Path) -> None:
        self.proc = proc
        self.port = port
        self.out = out
        self.err = err

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def events(self) -> list[dict[str, Any]]:
        """Every stdout line so far, each of which must be one JSON object."""
        return [json.loads(line) for line in self.out.read_text().splitlines() if line]

    async def finish(self) -> list[dict[str, Any]]:
        """Wait for the process to exit (after a signal) and require exit code 0."""
        code = await asyncio.to_thread(self.proc.wait, 20)
        assert code == 0, self.err.read_text()
        return self.events()


async def spawn_served(config: Path, port: int, workdir: Path) -> Served:
    out, err = workdir / f"proxy-{port}.out", workdir / f"proxy-{port}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; probed over HTTP below
            [sys.executable, "-m", "proxy", "serve", "-c", str(config)],
            stdout=stdout,
            stderr=stderr,
            cwd=ROOT,
        )
    served = Served(proc, port, out, err)
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(served.url("/-/healthz")) as resp:
                    if resp.status == 200:
                        return served
            except aiohttp.ClientConnectionError:
                pass
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, "the proxy did not start"
            await asyncio.sleep(0.05)

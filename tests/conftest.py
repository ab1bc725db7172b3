"""Shared fixtures: the sandbox on loopback, a proxy factory, a shared movable clock.

The sandbox and the proxy read the same ``ManualClock``, so a test that advances it
moves both vendor-side and proxy-side expiry, without sleeping.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from helpers import Served, Upstream, spawn_served
from store_support import backend, redis_server, shared_backend, workers  # noqa: F401 - fixtures

from proxy.config import parse_config
from proxy.core.clock import ManualClock
from proxy.ops.logs import setup_logging
from proxy.sandbox import Sandbox, SandboxState, run_sandbox
from proxy.server.app import ProxyServer

PROXY_ENV = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "AUTH_PROXY_CONFIG",
    "NETRC",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outbound calls must not wander through a proxy or CA set by the machine."""
    for name in PROXY_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def state_home(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A default session store opens in a directory of the test's own, never the user's
    ~/.local/state (processes the test starts inherit it)."""
    path = tmp_path_factory.mktemp("xdg-state")
    monkeypatch.setenv("XDG_STATE_HOME", str(path))
    return path


class LogCapture:
    def __init__(self) -> None:
        self.buffer = io.StringIO()

    @property
    def text(self) -> str:
        return self.buffer.getvalue()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = [json.loads(line) for line in self.text.splitlines() if line.strip()]
        return [e for e in out if name is None or e.get("event") == name]


@pytest.fixture(autouse=True)
def logs() -> Iterator[LogCapture]:
    """Every test logs JSON at debug level into a buffer it can inspect."""
    capture = LogCapture()
    setup_logging("debug", "json", stream=capture.buffer)
    yield capture


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def sandbox(clock: ManualClock) -> AsyncIterator[Sandbox]:
    async with run_sandbox(SandboxState(clock=clock)) as sb:
        yield sb


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


ProxyFactory = Callable[..., Awaitable[ProxyServer]]


@pytest.fixture
async def make_proxy(clock: ManualClock) -> AsyncIterator[ProxyFactory]:
    """``await make_proxy(routes=[...], **top_level)`` → a started ``ProxyServer``; its
    sessions are per process (``session_store: memory``) unless the test asks otherwise."""
    servers: list[ProxyServer] = []

    async def factory(*, routes: list[dict[str, Any]], **top: Any) -> ProxyServer:
        data: dict[str, Any] = {
            "listen": {"host": "127.0.0.1", "port": 0},
            "session_store": {"type": "memory"},
            **top,
        }
        data["routes"] = routes
        server = ProxyServer(parse_config(data), clock=clock)
        await server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        await server.stop(drain_timeout=1)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """A bare HTTP upstream whose handler each test sets; it records what it received."""
    up = Upstream()
    runner = web.AppRunner(up.app(), access_log=None, auto_decompress=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    up.port = runner.addresses[0][1]
    yield up
    await runner.cleanup()


@pytest.fixture
async def serve_process(tmp_path: Path) -> AsyncIterator[Callable[[Path, int], Awaitable[Served]]]:
    """``await serve_process(config_path, port)`` → a running ``auth-proxy serve`` process."""
    started: list[Served] = []

    async def spawn(config: Path, port: int) -> Served:
        served = await spawn_served(config, port, tmp_path)
        started.append(served)
        return served

    yield spawn
    for served in started:
        if served.proc.poll() is None:
            served.proc.terminate()  # lets a supervisor stop its workers
            try:
                await asyncio.to_thread(served.proc.wait, 10)
            except subprocess.TimeoutExpired:
                served.proc.kill()
                served.proc.wait()

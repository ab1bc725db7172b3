"""Shared fixtures: the sandbox on loopback, proxies in-process and as processes, the
throwaway TLS CA, a shared movable clock. Plain helpers are in helpers.py.

The sandbox and the proxy read the same ``ManualClock``, so a test that advances it
moves both vendor-side and proxy-side expiry, without sleeping.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from helpers import (
    LOGIN_HOST,
    MACHINE_ENV,
    POD,
    FileProxy,
    LogCapture,
    ProxyFactory,
    RunProxy,
    Served,
    ServeProcess,
    ServeRoutes,
    StartSandbox,
    Upstream,
    forward_config,
    server_tls,
    spawn_served,
    wait_for,
    write_config,
)
from store_support import backend, redis_server, shared_backend, workers  # noqa: F401 - fixtures

from proxy.config import parse_config
from proxy.config.load import load_config
from proxy.core.clock import ManualClock
from proxy.ops.logs import setup_logging
from proxy.sandbox import Sandbox, SandboxState, run_sandbox
from proxy.server.app import ProxyServer


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outbound calls must not wander through a proxy or CA set by the machine."""
    for name in MACHINE_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def state_home(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A default session store opens in a directory of the test's own, never the user's
    ~/.local/state (processes the test starts inherit it)."""
    path = tmp_path_factory.mktemp("xdg-state")
    monkeypatch.setenv("XDG_STATE_HOME", str(path))
    return path


@pytest.fixture(autouse=True)
def logs() -> Iterator[LogCapture]:
    """Every test logs JSON at debug level into a buffer it can inspect."""
    capture = LogCapture()
    setup_logging("debug", "json", stream=capture.buffer)
    yield capture


@pytest.fixture
def clock(request: pytest.FixtureRequest) -> ManualClock:
    """The clock of sandbox and proxy; a module's ``CLOCK_START`` fixes where it starts."""
    return ManualClock(start=getattr(request.module, "CLOCK_START", None))


@pytest.fixture
async def sandbox(clock: ManualClock) -> AsyncIterator[Sandbox]:
    """The vendor fakes, over plain HTTP on loopback."""
    async with run_sandbox(SandboxState(clock=clock)) as sb:
        yield sb


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that leaves bodies as they came (no decompression)."""
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


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


# --------------------------------------------------------------------------- the proxy, in-process


@pytest.fixture
async def run_proxy() -> AsyncIterator[RunProxy]:
    """``await run_proxy(server)`` starts a ``ProxyServer``; each is stopped after the test."""
    servers: list[ProxyServer] = []

    async def start(server: ProxyServer) -> ProxyServer:
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop(drain_timeout=1)


@pytest.fixture
def make_proxy(clock: ManualClock, run_proxy: RunProxy) -> ProxyFactory:
    """``await make_proxy(routes=[...], **top_level)`` → a started ``ProxyServer``; its
    sessions are per process (``session_store: memory``) unless the test asks otherwise."""

    async def factory(*, routes: list[dict[str, Any]], **top: Any) -> ProxyServer:
        data: dict[str, Any] = {
            "listen": {"host": "127.0.0.1", "port": 0},
            "session_store": {"type": "memory"},
            **top,
        }
        data["routes"] = routes
        return await run_proxy(ProxyServer(parse_config(data), clock=clock))

    return factory


@pytest.fixture
def file_proxy(clock: ManualClock, run_proxy: RunProxy) -> FileProxy:
    """``await file_proxy(path)`` → a started proxy that knows its config file, as ``serve``."""

    async def factory(path: Path) -> ProxyServer:
        return await run_proxy(ProxyServer(load_config(path), clock=clock, config_path=path))

    return factory


# --------------------------------------------------------------------------- the proxy, a process


@pytest.fixture
async def serve_process(tmp_path: Path) -> AsyncIterator[ServeProcess]:
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


@pytest.fixture
def serve_routes(serve_process: ServeProcess, tmp_path: Path, unused_tcp_port: int) -> ServeRoutes:
    """``await serve_routes(routes, **top)`` → ``serve`` of tmp_path/config.yaml, all listening."""

    async def start(routes: list[dict[str, Any]], **top: Any) -> Served:
        config = tmp_path / "config.yaml"
        listen = {"host": "127.0.0.1", "port": unused_tcp_port}
        write_config(config, routes, listen=listen, **top)
        served = await serve_process(config, unused_tcp_port)
        processes = top.get("workers", 1)
        await wait_for(
            lambda: served.count("listening") == processes, what="every worker listening"
        )
        return served

    return start


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """The throwaway CA that issues every certificate a test server presents."""
    return trustme.CA()


@pytest.fixture(scope="session")
def other_ca() -> trustme.CA:
    """A second throwaway CA, which issued none of the certificates tests serve."""
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_bundle(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The throwaway CA's certificate in a PEM file, for ``upstream.ca_bundle``."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
async def tls_sandbox(clock: ManualClock, ca: trustme.CA) -> AsyncIterator[StartSandbox]:
    """``await tls_sandbox(*names, **state)`` → the sandbox on HTTPS, its cert for ``names``."""
    async with AsyncExitStack() as stack:

        async def start(*names: str, **state: Any) -> Sandbox:
            context = server_tls(ca, *(names or ("127.0.0.1",)))
            running = run_sandbox(SandboxState(clock=clock, **state), ssl_context=context)
            return await stack.enter_async_context(running)

        yield start


# --------------------------------------------------------------------------- forward-proxy mode


@pytest.fixture
async def vendor(tls_sandbox: StartSandbox) -> Sandbox:
    """The sandbox on HTTPS under the vendor's own names; its serverUrl names the POD."""
    return await tls_sandbox(LOGIN_HOST, f"*.{LOGIN_HOST}", server_url_override=f"{POD}/saas")


@pytest.fixture
def ca_files(tmp_path: Path) -> tuple[Path, Path]:
    """Where the proxy keeps its own local CA (certificate, key); created on first start."""
    return tmp_path / "proxy-ca" / "ca.pem", tmp_path / "proxy-ca" / "ca-key.pem"


@pytest.fixture
def start_forward_proxy(
    make_proxy: ProxyFactory, vendor: Sandbox, ca_bundle: str, ca_files: tuple[Path, Path]
) -> ProxyFactory:
    """``await start_forward_proxy(**top)`` → a proxy in forward-proxy mode before ``vendor``."""

    async def start(**top: Any) -> ProxyServer:
        config = forward_config(vendor, ca_bundle, ca_files, **top)
        return await make_proxy(routes=config.pop("routes"), **config)

    return start

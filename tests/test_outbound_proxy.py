"""Outbound proxies: ``HTTPS_PROXY``/``NO_PROXY`` from the environment steer the proxy's
calls to the vendor through a CONNECT proxy (unless ``trust_env: false``); nothing else
from the environment (a netrc) reaches the vendor.

The vendor is the sandbox on HTTPS with a certificate from the throwaway CA; the CONNECT
proxy is a minimal one on loopback that records each target.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

import aiohttp
import pytest
from helpers import StartSandbox, base, fetch, iics_route, ivanti_key_route, port_of

from proxy.sandbox import Sandbox

AGENT = "/iics/saas/api/v2/agent"


class ConnectProxy:
    """A minimal HTTPS forward proxy on loopback: CONNECT only; records each target."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tunnels: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tunnels:
            task.cancel()
        await asyncio.gather(*self._tunnels, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tunnels.add(task)
        remote: asyncio.StreamWriter | None = None
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            if method != "CONNECT":
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            self.targets.append(target)
            host, _, port = target.rpartition(":")
            remote_reader, remote = await asyncio.open_connection(host.strip("[]"), int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            pumps = [
                asyncio.create_task(_pump(reader, remote)),
                asyncio.create_task(_pump(remote_reader, writer)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            # Close both before waiting on either: a cancelled wait must not leave one open.
            streams = [s for s in (remote, writer) if s is not None]
            for stream in streams:
                stream.close()
            self._tunnels.discard(task)
            await asyncio.gather(*(s.wait_closed() for s in streams), return_exceptions=True)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


@pytest.fixture
async def connect_proxy() -> AsyncIterator[ConnectProxy]:
    proxy = ConnectProxy()
    await proxy.start()
    yield proxy
    await proxy.close()


def sandbox_targets(sb: Sandbox) -> set[str]:
    return {f"127.0.0.1:{port_of(sb.urls.login)}", f"127.0.0.1:{port_of(sb.urls.pod)}"}


async def test_https_proxy_from_the_environment_carries_login_and_api_calls(
    tls_sandbox: StartSandbox,
    connect_proxy: ConnectProxy,
    make_proxy,
    http: aiohttp.ClientSession,
    ca_bundle: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", connect_proxy.url)
    sb = await tls_sandbox("127.0.0.1")
    server = await make_proxy(routes=[iics_route(sb, upstream={"ca_bundle": ca_bundle})])
    status, _, _ = await fetch(http, "GET", base(server, AGENT))
    assert status == 200
    assert set(connect_proxy.targets) == sandbox_targets(sb)
    assert len(sb.state.requests_for("iics-pod")) == 1


async def test_no_proxy_bypasses_the_environment_proxy(
    tls_sandbox: StartSandbox,
    connect_proxy: ConnectProxy,
    make_proxy,
    http: aiohttp.ClientSession,
    ca_bundle: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", connect_proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    sb = await tls_sandbox("127.0.0.1")
    server = await make_proxy(routes=[iics_route(sb, upstream={"ca_bundle": ca_bundle})])
    status, _, _ = await fetch(http, "GET", base(server, AGENT))
    assert status == 200
    assert connect_proxy.targets == []
    assert len(sb.state.requests_for("iics-pod")) == 1


async def test_trust_env_false_ignores_the_environment_proxy(
    tls_sandbox: StartSandbox,
    connect_proxy: ConnectProxy,
    make_proxy,
    http: aiohttp.ClientSession,
    ca_bundle: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", connect_proxy.url)
    sb = await tls_sandbox("127.0.0.1")
    route = iics_route(sb, upstream={"ca_bundle": ca_bundle, "trust_env": False})
    server = await make_proxy(routes=[route])
    status, _, _ = await fetch(http, "GET", base(server, AGENT))
    assert status == 200
    assert connect_proxy.targets == []
    assert len(sb.state.requests_for("iics-pod")) == 1


async def test_netrc_credentials_never_reach_the_vendor(
    sandbox: Sandbox,
    make_proxy,
    http: aiohttp.ClientSession,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # trust_env is meant for HTTPS_PROXY/NO_PROXY; a catch-all netrc entry must not leak.
    netrc = tmp_path / "netrc"
    netrc.write_text("default login someone password not-for-the-vendor\n")
    monkeypatch.setenv("NETRC", str(netrc))
    server = await make_proxy(routes=[iics_route(sandbox), ivanti_key_route(sandbox)])
    status, _, _ = await fetch(http, "GET", base(server, AGENT))
    assert status == 200
    seen = [*sandbox.state.logins, *sandbox.state.requests_for("iics-pod")]
    assert [r.headers.get("Authorization") for r in seen] == [None, None]
    async with http.get(base(server, "/ivanti/api/odata/businessobject/incidents")) as resp:
        assert resp.status == 200

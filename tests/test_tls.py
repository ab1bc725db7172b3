"""Outbound TLS and proxies (SPEC §3 upstream settings, §5 outbound).

Every test talks to a sandbox serving HTTPS with a certificate from a throwaway trustme
CA, over real sockets: certificates are verified (system trust plus ``ca_bundle``),
``verify_tls: false`` is loud, ``resolve`` keeps the original name for verification, and
``HTTPS_PROXY``/``NO_PROXY`` steer outbound calls through a CONNECT proxy.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, suppress
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import trustme
import truststore
from helpers import base, iics_route, ivanti_key_route

from proxy.core.clock import ManualClock
from proxy.sandbox import Sandbox, SandboxState, run_sandbox
from proxy.server.app import ProxyServer

AGENT = "/iics/saas/api/v2/agent"

StartSandbox = Callable[..., Awaitable[Sandbox]]


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_bundle(ca: trustme.CA, tmp_path: Any) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
async def tls_sandbox(clock: ManualClock, ca: trustme.CA) -> AsyncIterator[StartSandbox]:
    """``await tls_sandbox("name", ...)`` → a sandbox whose hosts present a cert for those names."""
    async with AsyncExitStack() as stack:

        async def start(*names: str) -> Sandbox:
            server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert(*(names or ("127.0.0.1",))).configure_cert(server_ctx)
            state = SandboxState(clock=clock)
            return await stack.enter_async_context(run_sandbox(state, ssl_context=server_ctx))

        yield start


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


async def get(
    http: aiohttp.ClientSession, server: ProxyServer, path: str = AGENT
) -> tuple[int, dict[str, Any]]:
    async with http.get(base(server, path)) as resp:
        return resp.status, await resp.json()


def assert_tls_login_failure(status: int, body: dict[str, Any], sandbox: Sandbox) -> None:
    assert status == 502
    assert body["error"]["code"] == "login_failed"
    assert "failed TLS verification" in body["error"]["message"]
    # The handshake failed: no login was received and nothing reached the POD.
    assert sandbox.state.logins == []
    assert sandbox.state.requests_for("iics-pod") == []


# --------------------------------------------------------------------------- verification


async def test_untrusted_certificate_fails_the_login_and_never_reaches_the_pod(
    tls_sandbox: StartSandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    sb = await tls_sandbox("127.0.0.1")
    server = await make_proxy(routes=[iics_route(sb)])
    status, body = await get(http, server)
    assert_tls_login_failure(status, body, sb)


async def test_ca_bundle_makes_the_certificate_trusted(
    tls_sandbox: StartSandbox, make_proxy, http: aiohttp.ClientSession, ca_bundle: str
) -> None:
    sb = await tls_sandbox("127.0.0.1")
    server = await make_proxy(routes=[iics_route(sb, upstream={"ca_bundle": ca_bundle})])
    status, _ = await get(http, server)
    assert status == 200
    assert len(sb.state.logins_for("iics-v2-login")) == 1
    assert [r.url for r in sb.state.requests_for("iics-pod")] == [
        f"{sb.urls.pod}/saas/api/v2/agent"
    ]


async def test_certificate_for_another_name_fails_even_with_the_ca(
    tls_sandbox: StartSandbox, make_proxy, http: aiohttp.ClientSession, ca_bundle: str
) -> None:
    sb = await tls_sandbox("other.example")
    server = await make_proxy(routes=[iics_route(sb, upstream={"ca_bundle": ca_bundle})])
    status, body = await get(http, server)
    assert_tls_login_failure(status, body, sb)


async def test_ca_bundle_is_added_to_the_system_trust_store_not_substituted(
    tls_sandbox: StartSandbox,
    make_proxy,
    http: aiohttp.ClientSession,
    clock: ManualClock,
    ca_bundle: str,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The machine's store, simulated: another throwaway CA where OpenSSL (and so
    # truststore, on Linux) looks for the system bundle. Nothing but the system store
    # trusts it, so a login through it proves the system store is still consulted.
    system_ca = trustme.CA()
    system_file = tmp_path / "system.pem"
    system_ca.cert_pem.write_to_path(str(system_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(system_file))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    system_ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    async with run_sandbox(SandboxState(clock=clock), ssl_context=server_ctx) as by_system:
        by_bundle = await tls_sandbox("127.0.0.1")
        bundle = {"ca_bundle": ca_bundle}
        server = await make_proxy(
            routes=[
                iics_route(by_system, name="sys", prefix="/sys", upstream=bundle),
                iics_route(by_bundle, name="bun", prefix="/bun", upstream=bundle),
            ]
        )
        for prefix in ("/sys", "/bun"):
            status, body = await get(http, server, f"{prefix}/saas/api/v2/agent")
            assert status == 200, body
    assert len(by_system.state.logins_for("iics-v2-login")) == 1
    assert len(by_bundle.state.logins_for("iics-v2-login")) == 1


async def test_upstreams_are_verified_by_the_operating_system_trust_store(
    tls_sandbox: StartSandbox, make_proxy, ca_bundle: str
) -> None:
    # truststore hands verification to the OS (Keychain, CryptoAPI; OpenSSL's system
    # store on Linux), so a corporate CA installed on a Mac or a Windows machine counts.
    sb = await tls_sandbox("127.0.0.1")
    server = await make_proxy(routes=[iics_route(sb, upstream={"ca_bundle": ca_bundle})])
    ctx = server.runtime.routes["iics"].client.ssl
    assert isinstance(ctx, truststore.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


async def test_verify_tls_false_accepts_any_certificate_and_warns_once(
    tls_sandbox: StartSandbox, make_proxy, http: aiohttp.ClientSession, logs
) -> None:
    sb = await tls_sandbox("127.0.0.1")
    # A name no other test uses: the warning is remembered per route name.
    name = f"insecure-{uuid.uuid4().hex[:8]}"
    route = iics_route(sb, name=name, upstream={"verify_tls": False})
    server = await make_proxy(routes=[route])
    for _ in range(3):
        status, _ = await get(http, server)
        assert status == 200
        sb.state.expire_all_sessions()  # the next request re-logs in after a 401
    assert len(sb.state.logins_for("iics-v2-login")) == 3
    assert len(sb.state.requests_for("iics-pod")) == 5  # 3 answered, 2 refused with 401
    warnings = logs.events("tls_verification_disabled")
    assert [(w["route"], w["level"]) for w in warnings] == [(name, "warning")]


# --------------------------------------------------------------------------- resolve


def vendor_like_route(sb: Sandbox) -> dict[str, Any]:
    """A route to dm-us.sandbox.test whose serverUrl names na1.dm-us.sandbox.test, both
    mapped by ``resolve`` to the sandbox on loopback, as in production behind a DNS gap."""
    login, pod = port_of(sb.urls.login), port_of(sb.urls.pod)
    sb.state.server_url_override = f"https://na1.dm-us.sandbox.test:{pod}/saas"
    return iics_route(
        sb,
        login_url=f"https://dm-us.sandbox.test:{login}",
        upstream={
            "resolve": {
                f"dm-us.sandbox.test:{login}": f"127.0.0.1:{login}",
                f"na1.dm-us.sandbox.test:{pod}": f"127.0.0.1:{pod}",
            }
        },
    )


async def test_resolve_connects_to_the_mapped_address_and_verifies_the_original_name(
    tls_sandbox: StartSandbox, make_proxy, http: aiohttp.ClientSession, ca_bundle: str
) -> None:
    sb = await tls_sandbox("dm-us.sandbox.test", "na1.dm-us.sandbox.test")
    route = vendor_like_route(sb)
    route["upstream"]["ca_bundle"] = ca_bundle
    server = await make_proxy(routes=[route])
    status, _ = await get(http, server)
    assert status == 200
    login, pod = port_of(sb.urls.login), port_of(sb.urls.pod)
    assert [r.url for r in sb.state.logins] == [
        f"https://dm-us.sandbox.test:{login}/ma/api/v2/user/login"
    ]
    assert [r.url for r in sb.state.requests_for("iics-pod")] == [
        f"https://na1.dm-us.sandbox.test:{pod}/saas/api/v2/agent"
    ]


async def test_resolve_does_not_verify_against_the_mapped_address(
    tls_sandbox: StartSandbox, make_proxy, http: aiohttp.ClientSession, ca_bundle: str
) -> None:
    sb = await tls_sandbox("127.0.0.1")
    route = vendor_like_route(sb)
    route["upstream"]["ca_bundle"] = ca_bundle
    server = await make_proxy(routes=[route])
    status, body = await get(http, server)
    assert_tls_login_failure(status, body, sb)
    assert "dm-us.sandbox.test" in body["error"]["message"]


# --------------------------------------------------------------------------- HTTPS_PROXY


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
    status, _ = await get(http, server)
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
    status, _ = await get(http, server)
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
    status, _ = await get(http, server)
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
    status, _ = await get(http, server)
    assert status == 200
    seen = [*sandbox.state.logins, *sandbox.state.requests_for("iics-pod")]
    assert [r.headers.get("Authorization") for r in seen] == [None, None]
    async with http.get(base(server, "/ivanti/api/odata/businessobject/incidents")) as resp:
        assert resp.status == 200

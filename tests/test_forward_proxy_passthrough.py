"""Forward-proxy mode, passthrough hosts: a CONNECT to a host listed in
``forward_proxy.passthrough`` is tunnelled as it is, never terminated by the proxy."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trustme
from helpers import ProxyFactory, open_tunnel, raw_exchange, server_tls


@pytest.fixture
async def echo_server() -> AsyncIterator[int]:
    """A TCP echo server; it closes after the client's EOF."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_passthrough_hosts_are_tunnelled_byte_for_byte(
    start_forward_proxy: ProxyFactory, echo_server: int, logs: Any
) -> None:
    server = await start_forward_proxy(
        upstream={"resolve": {"echo.passthrough.test:443": f"127.0.0.1:{echo_server}"}},
        forward_proxy={"passthrough": ["*.passthrough.test"]},
    )
    reader, writer = await open_tunnel(server.port, "echo.passthrough.test:443")
    payload = bytes(range(256)) * 1024 + b"GET / HTTP/1.1\r\n\r\n"  # not parsed as HTTP
    writer.write(payload)
    writer.write_eof()  # a half-close passes through; the echo server then closes
    assert await asyncio.wait_for(reader.read(), timeout=10) == payload
    writer.close()
    [event] = logs.events("connect")
    assert (event["host"], event["decision"]) == ("echo.passthrough.test", "passthrough")


async def test_passthrough_tls_is_the_servers_own(
    start_forward_proxy: ProxyFactory, ca: trustme.CA
) -> None:
    """The proxy's CA is not involved: the client sees the real server's certificate."""
    server_ctx = server_tls(ca, "secure.example")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello " + await reader.readline())
        await writer.drain()
        writer.close()

    tls_server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    try:
        port = tls_server.sockets[0].getsockname()[1]
        server = await start_forward_proxy(
            upstream={"resolve": {"secure.example:443": f"127.0.0.1:{port}"}},
            forward_proxy={"passthrough": ["secure.example"]},
        )
        reader, writer = await open_tunnel(server.port, "secure.example:443")
        client_tls = ssl.create_default_context()
        ca.configure_trust(client_tls)  # only the server's CA, not the proxy's
        await writer.start_tls(client_tls, server_hostname="secure.example")
        writer.write(b"world\n")
        assert await asyncio.wait_for(reader.read(), timeout=10) == b"hello world\n"
        writer.close()
    finally:
        tls_server.close()
        await tls_server.wait_closed()


async def test_unreachable_passthrough_host_is_a_502(
    start_forward_proxy: ProxyFactory, unused_tcp_port: int
) -> None:
    server = await start_forward_proxy(
        upstream={"resolve": {"down.example:443": f"127.0.0.1:{unused_tcp_port}"}},
        forward_proxy={"passthrough": ["down.example"]},
    )
    status, headers, _ = await raw_exchange(
        server.port, b"CONNECT down.example:443 HTTP/1.1\r\nHost: down.example\r\n\r\n"
    )
    assert status == 502 and headers["x-auth-proxy-error"] == "upstream_unreachable"

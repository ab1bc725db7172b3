"""Slow clients cannot hold connections: a request head must arrive within a bound.

Each connection costs a file descriptor; a client that sends its request line a byte at
a time (slowloris) would otherwise keep one for as long as it likes. The bound is
``HEADER_TIMEOUT`` (10 s); these tests lower it on the server object to 1 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import RunProxy, Upstream, base

from proxy.config import parse_config
from proxy.core.clock import ManualClock
from proxy.server.app import ProxyServer

HEADER_TIMEOUT = 1.0
PACE = 0.2  # seconds between two bytes of a slow client
SLOW_HEAD = b"GET /up/" + b"a" * 48  # never completes; 56 bytes take ~11 s at PACE


async def trickle(port: int, data: bytes) -> bool:
    """On a new connection: True when the proxy closed it before ``data`` was sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await trickle_on(reader, writer, data)
    finally:
        writer.close()


async def trickle_on(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> bool:
    """Send ``data`` a byte at a time; True when the proxy closed the connection first."""
    for byte in data:
        writer.write(bytes([byte]))
        try:
            await writer.drain()
            if await asyncio.wait_for(reader.read(1), PACE) == b"":
                return True
        except TimeoutError:
            continue  # still open: the next byte
        except ConnectionError:
            return True
    return False


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> bytes:
    """One keep-alive request on an open connection; the status line of its answer."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return head.split(b"\r\n")[0]


Start = Callable[..., Awaitable[ProxyServer]]


@pytest.fixture
def start(clock: ManualClock, run_proxy: RunProxy) -> Start:
    """``await start(**top_level)`` → a started proxy holding request heads to 1 s."""

    async def factory(**top: Any) -> ProxyServer:
        data = {"listen": {"host": "127.0.0.1", "port": 0}, **top}
        server = ProxyServer(parse_config(data), clock=clock)
        server.header_timeout = HEADER_TIMEOUT  # read when it starts
        return await run_proxy(server)

    return factory


async def test_slow_request_heads_are_cut_off_while_others_are_served(
    start: Start, upstream: Upstream, http: aiohttp.ClientSession
) -> None:
    server = await start(routes=[upstream.route()])
    # A keep-alive client that has been answered and now waits: idle, not slow.
    idle = await asyncio.open_connection("127.0.0.1", server.port)
    assert await exchange(*idle, "/up/first") == b"HTTP/1.1 200 OK"

    slow = [asyncio.create_task(trickle(server.port, SLOW_HEAD)) for _ in range(50)]
    async with http.get(base(server, "/up/meanwhile")) as resp:
        assert resp.status == 200
    cut_off = await asyncio.gather(*slow)
    assert all(cut_off), f"{cut_off.count(False)} of 50 slow clients kept their connection"

    # The idle connection outlived the slow ones, and serves its next request...
    assert await exchange(*idle, "/up/second") == b"HTTP/1.1 200 OK"
    # ...but its next head, once begun, is held to the same bound.
    assert await trickle_on(*idle, SLOW_HEAD)
    idle[1].close()
    assert [r.path for r in upstream.seen] == ["/first", "/meanwhile", "/second"]


async def test_a_connection_that_sends_nothing_is_closed(start: Start, upstream: Upstream) -> None:
    server = await start(routes=[upstream.route()])
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()


async def test_a_slow_connect_head_is_cut_off_on_a_forward_proxy_listener(
    start: Start, upstream: Upstream, tmp_path: Path
) -> None:
    ca = {"cert": str(tmp_path / "ca.pem"), "key": str(tmp_path / "ca-key.pem")}
    server = await start(routes=[upstream.route()], forward_proxy={"enabled": True, "ca": ca})
    assert await trickle(server.port, b"CONNECT vendor.example:443 HTTP/1.1\r\nHost: vendor")
    assert await trickle(server.port, SLOW_HEAD)  # an ordinary request, after the sniffer

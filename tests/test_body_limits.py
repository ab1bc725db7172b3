"""Request bodies and ``retry_body_limit``: any size the config allows is kept and replayed.

Bodies up to the limit are kept for a replay after a re-login, whether sent with a
Content-Length or chunked; larger ones stream through once. No other size limit applies.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from helpers import Upstream, base, iics_route

from proxy.sandbox import Sandbox

MIB = 1024 * 1024
LIMIT = 5 * MIB


def payload(size: int) -> bytes:
    block = bytes(range(256)) * 64  # 16 KiB that is not all one byte
    return (block * (size // len(block) + 1))[:size]


async def chunked(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 100_000):
        yield data[start : start + 100_000]


class Received:
    """What the upstream saw: the size and digest of every body that reached it."""

    def __init__(self) -> None:
        self.bodies: list[tuple[int, str]] = []

    async def read(self, request: web.Request) -> tuple[int, str]:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_chunked(1 << 16):
            digest.update(chunk)
            size += len(chunk)
        self.bodies.append((size, digest.hexdigest()))
        return size, digest.hexdigest()


@pytest.mark.parametrize("size", [MIB + 1, 3 * MIB, 5 * MIB])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_bodies_up_to_the_limit_arrive_intact(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession, size: int, framing: str
) -> None:
    received = Received()

    async def handler(request: web.Request) -> web.StreamResponse:
        got, digest = await received.read(request)
        return web.json_response({"size": got, "sha256": digest})

    upstream.handler = handler
    server = await make_proxy(routes=[upstream.route(upstream={"retry_body_limit": LIMIT})])
    data = payload(size)
    body = data if framing == "content-length" else chunked(data)
    async with http.post(base(server, "/up/upload"), data=body) as resp:
        assert resp.status == 200, await resp.text()
        answer = await resp.json()
    expected = hashlib.sha256(data).hexdigest()
    assert answer == {"size": size, "sha256": expected}
    assert received.bodies == [(size, expected)]
    framed = upstream.seen[-1].headers
    if framing == "content-length":
        assert framed["Content-Length"] == str(size)


async def vendor_refusing_once(sandbox: Sandbox, upstream: Upstream, received: Received) -> None:
    """Logins at the sandbox; its ``serverUrl`` points at ``upstream``, which answers
    the first call 401 (a session the vendor forgot) and every later one 200."""
    sandbox.state.server_url_override = f"{upstream.url}/saas"

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/validSessionId"):  # the session probe after a login
            return web.json_response({"error": {"code": "NOT_HERE"}}, status=404)
        size, digest = await received.read(request)
        if len(received.bodies) == 1:
            return web.json_response({"error": {"code": "AUTH_01"}}, status=401)
        return web.json_response({"size": size, "sha256": digest})

    upstream.handler = handler


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_at_the_limit_is_replayed_intact_after_a_relogin(
    sandbox: Sandbox,
    upstream: Upstream,
    make_proxy,
    http: aiohttp.ClientSession,
    logs,
    framing: str,
) -> None:
    received = Received()
    await vendor_refusing_once(sandbox, upstream, received)
    route = iics_route(sandbox, upstream={"retry_body_limit": LIMIT})
    server = await make_proxy(routes=[route])
    data = payload(LIMIT)
    body = data if framing == "content-length" else chunked(data)
    async with http.post(base(server, "/iics/saas/api/v2/import"), data=body) as resp:
        assert resp.status == 200, await resp.text()
        answer = await resp.json()
    expected = (LIMIT, hashlib.sha256(data).hexdigest())
    assert (answer["size"], answer["sha256"]) == expected
    assert received.bodies == [expected, expected]
    assert len(sandbox.state.logins) == 2
    assert logs.events("request")[-1]["replayed"] is True


async def test_a_body_over_the_limit_streams_once_and_the_401_reaches_the_client(
    sandbox: Sandbox, upstream: Upstream, make_proxy, http: aiohttp.ClientSession, logs
) -> None:
    received = Received()
    await vendor_refusing_once(sandbox, upstream, received)
    route = iics_route(sandbox, upstream={"retry_body_limit": LIMIT})
    server = await make_proxy(routes=[route])
    data = payload(6 * MIB)
    async with http.post(base(server, "/iics/saas/api/v2/import"), data=data) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "AUTH_01"  # the vendor's own answer
    assert received.bodies == [(len(data), hashlib.sha256(data).hexdigest())]
    assert logs.events("request")[-1]["replayed"] is False

"""A client that goes away mid-request is a client abort (499), not an upstream failure.

The misbehaving client is a raw socket that closes mid-upload, mid-download, while the
upstream thinks, or while a login runs. Each gives one access line with status 499, a
``client_aborted`` event naming the phase, a ``499`` sample in the requests metric and
nothing that looks like an upstream error; the upstream exchange is given up, not leaked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from helpers import DEMO, FileProxy, Upstream, base, prefix_route, scrape, wait_for, write_config

from proxy.server.app import ProxyServer

MIB = 1024 * 1024
UPSTREAM_ERRORS = ("upstream_unreachable", "upstream_timeout", "upstream_failed_mid_body")


async def requests_metric(http: aiohttp.ClientSession, server: ProxyServer) -> dict[str, float]:
    """``auth_proxy_requests_total`` of route ``up``, by status label (whatever the code)."""
    samples = await scrape(http, base(server, "/-/metrics"))
    counts: dict[str, float] = {}
    for (name, frozen), value in samples.items():
        if name == "auth_proxy_requests_total" and (labels := dict(frozen))["route"] == "up":
            counts[labels["status"]] = counts.get(labels["status"], 0) + value
    return counts


async def connect(server: ProxyServer, head: str, body: bytes = b"") -> asyncio.StreamWriter:
    """A raw client: send ``head`` (the request line and headers) and ``body``."""
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
    await writer.drain()
    return writer


async def hang_up(writer: asyncio.StreamWriter) -> None:
    writer.close()
    await writer.wait_closed()


async def assert_client_aborted(
    logs: Any, http: aiohttp.ClientSession, server: ProxyServer, phase: str
) -> None:
    await wait_for(lambda: logs.events("request"), what="the access line")
    [access] = logs.events("request")
    assert (access["route"], access["status"], access["code"]) == ("up", 499, "client_aborted")
    [aborted] = logs.events("client_aborted")
    assert (aborted["route"], aborted["phase"], aborted["level"]) == ("up", phase, "info")
    assert aborted["request_id"] == access["request_id"]
    for event in logs.events():
        assert event["event"] not in ("request_failed", "internal_error", *UPSTREAM_ERRORS)
        assert not set(json.dumps(event).split('"')) & set(UPSTREAM_ERRORS), event
    counts = await requests_metric(http, server)
    assert counts["499"] == 1
    assert (counts["2xx"], counts["4xx"], counts["5xx"]) == (0, 0, 0)


async def test_client_gone_during_a_streamed_upload(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession, logs
) -> None:
    received = 0
    cut = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal received
        try:
            async for chunk in request.content.iter_any():
                received += len(chunk)
        except ConnectionError:
            cut.set()  # the proxy gave up the upstream request
        return web.Response()

    upstream.handler = handler
    server = await make_proxy(routes=[upstream.route()])
    # 8 MiB is over the 1 MiB retry_body_limit: the body streams as it arrives.
    head = "POST /up/upload HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 8388608\n"
    client = await connect(server, head, b"x" * (2 * MIB))
    await wait_for(lambda: received >= 256 * 1024, what="the upload to reach the upstream")
    await hang_up(client)
    await assert_client_aborted(logs, http, server, "upload")
    await asyncio.wait_for(cut.wait(), 5)


async def test_client_gone_during_an_upload_kept_for_replay(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession, logs
) -> None:
    server = await make_proxy(routes=[upstream.route()])
    # 512 KiB is within retry_body_limit: the proxy reads it all before going upstream.
    head = "POST /up/upload HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 524288\n"
    client = await connect(server, head, b"x" * 1000)
    await wait_for(lambda: server.state.inflight == 1, what="the proxy to take the request")
    await hang_up(client)
    await assert_client_aborted(logs, http, server, "upload")
    assert upstream.seen == []


async def test_client_gone_during_a_large_download(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession, logs
) -> None:
    size = 256 * MIB
    cut = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(size)})
        await response.prepare(request)
        block = b"y" * MIB
        try:
            for _ in range(size // MIB):
                await response.write(block)
        except ConnectionError:
            cut.set()  # the proxy stopped reading and closed the connection
        return response

    upstream.handler = handler
    server = await make_proxy(routes=[upstream.route()])
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /up/export HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    received = 0
    while received < 2 * MIB:
        chunk = await asyncio.wait_for(reader.read(1 << 16), 5)
        assert chunk, "the proxy closed the connection"
        received += len(chunk)
    await hang_up(writer)
    await assert_client_aborted(logs, http, server, "download")
    await asyncio.wait_for(cut.wait(), 5)


async def test_client_gone_while_the_upstream_thinks(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession, logs
) -> None:
    arrived = asyncio.Event()
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        arrived.set()
        await release.wait()
        return web.Response(text="too late")

    upstream.handler = handler
    server = await make_proxy(routes=[upstream.route()])
    try:
        client = await connect(server, "GET /up/slow HTTP/1.1\nHost: 127.0.0.1\n")
        await asyncio.wait_for(arrived.wait(), 5)
        await hang_up(client)
        await assert_client_aborted(logs, http, server, "waiting")
        # The proxy hung up on the upstream too rather than waiting for its answer.
        await wait_for(
            lambda: upstream.seen[0].transport is None, what="the upstream connection to close"
        )
    finally:
        release.set()


async def test_client_gone_while_a_login_runs_leaves_the_login_to_the_others(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession, logs
) -> None:
    logins = 0
    gate = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal logins
        if request.path == "/ma/api/v2/user/login":
            logins += 1
            await gate.wait()
            session = {"icSessionId": "sid-0123456789", "serverUrl": f"{upstream.url}/saas"}
            return web.json_response({"name": "demo", **session})
        return web.json_response({"path": request.path})

    upstream.handler = handler
    auth = {"type": "iics-password", "login_url": upstream.url, **DEMO}
    server = await make_proxy(routes=[prefix_route("up", auth)])
    try:
        client = await connect(server, "GET /up/saas/api/v2/agent HTTP/1.1\nHost: 127.0.0.1\n")
        await wait_for(lambda: logins == 1, what="the login to start")
        other = asyncio.create_task(http.get(base(server, "/up/saas/api/v2/agent")))
        await wait_for(lambda: server.state.inflight == 2, what="a second request to wait")
        await hang_up(client)
        await wait_for(lambda: logs.events("client_aborted"), what="the abort")
    finally:
        gate.set()
    async with await other as resp:
        assert resp.status == 200
        assert await resp.json() == {"path": "/saas/api/v2/agent"}
    assert logins == 1
    [aborted] = logs.events("client_aborted")
    assert (aborted["route"], aborted["phase"]) == ("up", "waiting")
    assert [e["status"] for e in logs.events("request")] == [499, 200]
    counts = await requests_metric(http, server)
    assert (counts["499"], counts["2xx"], counts["5xx"]) == (1, 1, 0)


async def test_an_upstream_that_breaks_mid_body_is_still_an_upstream_failure(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession, logs
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(4 * MIB)})
        await response.prepare(request)
        await response.write(b"z" * MIB)
        assert request.transport is not None
        request.transport.abort()  # the upstream dies with 3 MiB still owed
        return response

    upstream.handler = handler
    server = await make_proxy(routes=[upstream.route()])
    async with http.get(base(server, "/up/export")) as resp:
        assert resp.status == 200
        try:
            await resp.read()
        except aiohttp.ClientPayloadError:
            pass
        else:
            raise AssertionError("a truncated body must not look complete")
    await wait_for(lambda: logs.events("request"), what="the access line")
    assert logs.events("upstream_failed_mid_body")
    assert logs.events("client_aborted") == []
    assert "499" not in {str(e["status"]) for e in logs.events("request")}


async def test_a_client_hanging_up_on_a_reload_does_not_stop_it(
    upstream: Upstream, file_proxy: FileProxy, tmp_path: Path, logs
) -> None:
    path = tmp_path / "config.yaml"
    write_config(path, [upstream.route()], client_auth={"tokens": ["old-token"]})
    server = await file_proxy(path)
    # The new token comes from a command that blocks until the test feeds it.
    fifo = tmp_path / "token"
    os.mkfifo(fifo)
    tokens = [{"command": f"cat {fifo}"}]
    write_config(path, [upstream.route()], client_auth={"tokens": tokens})
    try:
        head = (
            "POST /-/reload HTTP/1.1\nHost: 127.0.0.1\n"
            "Proxy-Authorization: Bearer old-token\nX-Auth-Proxy: 1\n"
        )
        client = await connect(server, head + "Content-Length: 0\n")
        # Opening the pipe returns once the reload's command has opened the other end.
        feed = await asyncio.wait_for(asyncio.to_thread(open, fifo, "w"), 5)
        await hang_up(client)
        await wait_for(lambda: logs.events("client_aborted"), what="the abort")
        with feed:
            feed.write("new-token\n")
        await wait_for(lambda: logs.events("config_reloaded"), what="the reload to finish")
        async with aiohttp.ClientSession() as http:
            new = {"Proxy-Authorization": "Bearer new-token"}
            async with http.get(base(server, "/up/x"), headers=new) as resp:
                assert resp.status == 200
    finally:
        unblock(fifo)


def unblock(fifo: Path) -> None:
    """Release whichever end of ``fifo`` still waits for its peer, so nothing hangs."""
    for flags in (os.O_RDONLY, os.O_WRONLY):
        with contextlib.suppress(OSError):  # no peer waiting on that side
            os.close(os.open(fifo, flags | os.O_NONBLOCK))

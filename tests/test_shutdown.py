"""Shutting down (``stop``, SIGTERM): in-flight requests drain within a bound, new ones
are refused with 503, and the sessions are logged out at the vendor."""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import pytest
from aiohttp import web
from helpers import (
    ServeRoutes,
    Upstream,
    base,
    iics_route,
    last_session_id,
    logged_out,
    status_of,
    wait_for,
    wait_for_status,
)

from proxy.sandbox import Sandbox

AGENT = "/saas/api/v2/agent"


async def test_stop_drains_in_flight_refuses_new_and_logs_out(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    assert await status_of(http, base(server, "/iics" + AGENT)) == 200
    session_id = last_session_id(sandbox)
    slow = asyncio.create_task(status_of(http, base(server, "/iics/saas/api/v2/slow?seconds=1")))
    await wait_for(lambda: bool(sandbox.state.requests_to("/saas/api/v2/slow")), what="slow call")

    stopping = asyncio.create_task(server.stop(drain_timeout=10))
    await wait_for(lambda: server.draining, what="draining")
    async with aiohttp.ClientSession() as fresh:
        async with fresh.get(base(server, "/iics" + AGENT)) as resp:
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == "draining"
        assert await status_of(fresh, base(server, "/-/readyz")) == 503
        assert await status_of(fresh, base(server, "/-/healthz")) == 200
    assert len(sandbox.state.requests_to(AGENT)) == 1  # nothing new was forwarded
    assert not stopping.done()  # still draining the slow call

    assert await slow == 200
    await asyncio.wait_for(stopping, 10)
    assert logged_out(sandbox) == {session_id}
    with pytest.raises(aiohttp.ClientConnectionError):
        await status_of(http, base(server, "/-/healthz"))


async def test_drain_is_bounded_by_the_timeout(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession, logs
) -> None:
    release = asyncio.Event()

    async def never_answers(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response()

    upstream.handler = never_answers
    server = await make_proxy(routes=[upstream.route()])
    stuck = asyncio.create_task(status_of(http, base(server, "/up/stuck")))
    await wait_for(lambda: bool(upstream.seen), what="the request upstream")
    started = time.monotonic()
    await server.stop(drain_timeout=0.2)
    assert time.monotonic() - started < 5
    assert logs.events("drain_timeout")[0]["inflight"] == 1
    with pytest.raises(aiohttp.ClientError):
        await stuck
    release.set()


# ---------------------------------------------------------------- a real process


async def test_sigterm_drains_then_logs_out_and_exits_0(
    sandbox: Sandbox, serve_routes: ServeRoutes
) -> None:
    served = await serve_routes([iics_route(sandbox)])
    async with aiohttp.ClientSession() as http, aiohttp.ClientSession() as other:
        assert await status_of(http, served.url("/iics" + AGENT)) == 200
        session_id = last_session_id(sandbox)
        slow = asyncio.create_task(status_of(http, served.url("/iics/saas/api/v2/slow?seconds=1")))
        await wait_for(lambda: bool(sandbox.state.requests_to("/saas/api/v2/slow")), what="slow")
        served.proc.send_signal(signal.SIGTERM)
        await wait_for_status(other, served.url("/-/readyz"), 503)
        assert await status_of(other, served.url("/iics" + AGENT)) == 503
        assert await slow == 200
    events = await served.finish()
    assert len(sandbox.state.requests_to(AGENT)) == 1
    assert logged_out(sandbox) == {session_id}
    names = [e["event"] for e in events]
    assert names.index("shutting_down") < names.index("logout") < names.index("stopped")
    statuses = [e["status"] for e in events if e["event"] == "request" and e["path"] != "/-/readyz"]
    assert sorted(statuses) == [200, 200, 503]

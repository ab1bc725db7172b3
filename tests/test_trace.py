"""TRACE and TRACK are refused: an upstream would echo the request, injected session and all."""

from __future__ import annotations

import aiohttp
from helpers import Upstream, base


async def test_trace_is_refused_before_routing(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[upstream.route()])
    for path in ("/up/x", "/nowhere"):
        async with http.request("TRACE", base(server, path)) as resp:
            assert resp.status == 405
            assert resp.headers["X-Auth-Proxy-Error"] == "method_not_allowed"
            error = (await resp.json())["error"]
            assert error["code"] == "method_not_allowed"
            assert "TRACE" in error["message"]
    assert upstream.seen == []


async def test_track_never_reaches_upstream(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession
) -> None:
    """aiohttp's C parser rejects TRACK as unknown (400); its pure-Python one lets it by."""
    server = await make_proxy(routes=[upstream.route()])
    async with http.request("TRACK", base(server, "/up/x")) as resp:
        assert resp.status in (400, 405)
        assert resp.headers["X-Auth-Proxy-Error"] in ("bad_request", "method_not_allowed")
    assert upstream.seen == []

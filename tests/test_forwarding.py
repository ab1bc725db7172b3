"""Forwarding (SPEC §5): path mapping, raw queries, headers, redirects, upstream errors."""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp
import pytest
from aiohttp import web
from helpers import Upstream, base, dead_route, iics_route

from proxy.sandbox import Sandbox, expected_sha256


async def test_prefix_is_swapped_for_the_pod_and_query_kept_byte_for_byte(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    raw_query = "q=type=='DTEMPLATE'%20and%20x%3Dy&limit=2&empty=&plus=a+b&pct=%7e%7E"
    url = base(server, "/iics/saas/public/core/v3/objects?") + raw_query
    async with http.get(aiohttp.client.URL(url, encoded=True)) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["rawQuery"] == raw_query
    seen = sandbox.state.requests_for("iics-pod")[-1]
    assert seen.url == f"{sandbox.urls.pod}/saas/public/core/v3/objects?{raw_query}"


async def test_ma_paths_go_to_the_login_host(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    async with http.get(base(server, "/iics/ma/api/v2/user")) as resp:
        assert resp.status == 200
    assert [r.path for r in sandbox.state.requests_for("iics-login-host")] == ["/ma/api/v2/user"]
    assert sandbox.state.requests_for("iics-pod") == []


async def test_prefix_matches_on_segment_boundary_only(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    async with http.get(base(server, "/iicsx/saas/api/v2/agent")) as resp:
        assert resp.status == 404
        assert resp.headers["X-Auth-Proxy-Error"] == "no_route"
        assert (await resp.json())["error"] == {
            "code": "no_route",
            "message": "no route matches /iicsx/saas/api/v2/agent",
            "route": None,
        }
    assert sandbox.state.logins == []


async def test_host_and_listen_port_routes_strip_nothing(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession, unused_tcp_port: int
) -> None:
    server = await make_proxy(
        routes=[
            {**upstream.route(name="by-host"), "match": {"host": ["api.localhost", "*.api.test"]}},
            {**upstream.route(name="by-port"), "match": {"listen": {"port": unused_tcp_port}}},
        ]
    )
    async with http.get(base(server, "/x/y?z=1"), headers={"Host": "a.b.api.test:1234"}) as resp:
        assert resp.status == 200
        assert (await resp.json())["path"] == "/x/y?z=1"
    async with http.get(f"http://127.0.0.1:{unused_tcp_port}/p/q") as resp:
        assert resp.status == 200
        assert (await resp.json())["path"] == "/p/q"
    async with http.get(base(server, "/p/q"), headers={"Host": "localhost:1"}) as resp:
        assert resp.status == 404  # a loopback name, but no route for this path


async def test_hop_by_hop_and_client_auth_headers_are_not_forwarded(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox, headers={"X-INFA-PRODUCT-ID": "CDGC"})])
    headers = {
        "Connection": "keep-alive, X-Private-Hop",
        "X-Private-Hop": "1",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "icSessionId": "client-supplied",
        "INFA-SESSION-ID": "client-supplied",
        "Authorization": "Bearer client-supplied",
        "X-INFA-PRODUCT-ID": "client-value",
        "X-Keep-Me": "yes",
        "Content-Type": "text/plain",
    }
    async with http.post(base(server, "/iics/saas/api/v2/echo"), data=b"x", headers=headers) as r:
        assert r.status == 200
        echoed = (await r.json())["headers"]
    lower = {k.lower(): v for k, v in echoed.items()}
    for gone in ("x-private-hop", "keep-alive", "te", "proxy-authorization", "authorization"):
        assert gone not in lower
    session_id = next(iter(sandbox.state.iics_sessions))
    assert lower["icsessionid"] == session_id
    assert lower["infa-session-id"] == session_id
    assert lower["ids-session-id"] == session_id
    assert lower["x-infa-product-id"] == "CDGC"
    assert lower["x-keep-me"] == "yes"
    assert lower["content-type"] == "text/plain"
    assert lower["host"] == sandbox.urls.pod.removeprefix("http://")
    assert not any(k.startswith("x-forwarded") for k in lower)


async def test_accept_defaults_to_json_only_when_absent(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    url = base(server, "/iics/saas/api/v2/echo")
    async with (
        aiohttp.ClientSession(skip_auto_headers=("Accept",)) as bare,
        bare.get(url) as r,
    ):
        assert (await r.json())["headers"]["Accept"] == "application/json"
    async with http.get(
        base(server, "/iics/saas/api/v2/echo"), headers={"Accept": "application/xml"}
    ) as r:
        assert (await r.json())["headers"]["Accept"] == "application/xml"


async def test_response_hop_by_hop_dropped_and_location_rewritten(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=302,
            headers={
                "Location": f"{upstream.url}/next/page?a=1",
                "Content-Location": "/relative/doc",
                "Connection": "X-Up-Hop",
                "X-Up-Hop": "secret",
                "X-Other": "kept",
            },
        )

    upstream.handler = handler
    server = await make_proxy(routes=[upstream.route(prefix="/up")])
    async with http.get(base(server, "/up/start"), allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == base(server, "/up/next/page?a=1")
        assert resp.headers["Content-Location"] == base(server, "/up/relative/doc")
        assert "X-Up-Hop" not in resp.headers
        assert resp.headers["X-Other"] == "kept"


async def test_foreign_location_is_left_alone(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, upstream: Upstream
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=303, headers={"Location": "https://elsewhere.example/x"})

    upstream.handler = handler
    server = await make_proxy(routes=[upstream.route()])
    async with http.get(base(server, "/up/a"), allow_redirects=False) as resp:
        assert resp.headers["Location"] == "https://elsewhere.example/x"


async def test_sandbox_redirect_points_back_at_the_proxy(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    async with http.get(base(server, "/iics/saas/api/v2/redirect")) as resp:
        # Followed by the client through the proxy, so it lands on the agent list.
        assert resp.status == 200
        assert str(resp.url) == base(server, "/iics/saas/api/v2/agent")


async def test_compressed_bodies_pass_through_untouched(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession
) -> None:
    import gzip

    payload = gzip.compress(b'{"hello": "world"}' * 100)

    async def handler(request: web.Request) -> web.StreamResponse:
        received = await request.read()
        return web.Response(
            body=received,
            headers={"Content-Encoding": request.headers.get("Content-Encoding", "identity")},
        )

    upstream.handler = handler
    server = await make_proxy(routes=[upstream.route()])
    async with http.post(
        base(server, "/up/z"), data=payload, headers={"Content-Encoding": "gzip"}
    ) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        assert await resp.read() == payload


async def test_large_download_streams_intact(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    size = 20 * 1024 * 1024 + 13
    server = await make_proxy(routes=[iics_route(sandbox)])
    digest = hashlib.sha256()
    received = 0
    async with http.get(base(server, f"/iics/saas/public/core/v3/export/size-{size}/package")) as r:
        assert r.status == 200
        assert r.headers["Content-Length"] == str(size)
        async for chunk in r.content.iter_chunked(1 << 16):
            digest.update(chunk)
            received += len(chunk)
    assert received == size
    assert digest.hexdigest() == expected_sha256(size)


async def test_chunked_upload_streams_intact(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    block = bytes(range(256)) * 256
    count = 200  # 12.5 MiB, beyond retry_body_limit, so it is streamed
    digest = hashlib.sha256()

    async def body():
        for _ in range(count):
            digest.update(block)
            yield block

    async with http.post(
        base(server, "/iics/saas/public/core/v3/import/package"), data=body()
    ) as r:
        assert r.status == 200
        answer = await r.json()
    assert answer["size"] == len(block) * count
    assert answer["sha256"] == digest.hexdigest()


async def test_unreachable_upstream_is_502(
    make_proxy, http: aiohttp.ClientSession, unused_tcp_port: int
) -> None:
    route = dead_route(unused_tcp_port)
    server = await make_proxy(routes=[route])
    async with http.get(base(server, "/dead/api/odata/x")) as resp:
        assert resp.status == 502
        assert resp.headers["X-Auth-Proxy-Error"] == "upstream_unreachable"
        error = (await resp.json())["error"]
        assert error["route"] == "dead"
        assert "127.0.0.1" in error["message"]


async def test_read_timeout_is_504(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    route = iics_route(sandbox, upstream={"read_timeout": 0.3})
    server = await make_proxy(routes=[route])
    async with http.get(base(server, "/iics/saas/api/v2/slow?seconds=5")) as resp:
        assert resp.status == 504
        assert resp.headers["X-Auth-Proxy-Error"] == "upstream_timeout"
    async with http.get(base(server, "/iics/saas/api/v2/agent")) as resp:
        assert resp.status == 200  # the server is healthy afterwards


async def test_resolve_map_connects_elsewhere_but_keeps_the_name(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession
) -> None:
    name = f"vendor.example:{upstream.port}"
    route = {
        "name": "mapped",
        "match": {"prefix": "/m"},
        "auth": {"type": "ivanti-api-key", "url": f"http://{name}", "api_key": "k"},
        "upstream": {"resolve": {name: f"127.0.0.1:{upstream.port}"}},
    }
    server = await make_proxy(routes=[route])
    async with http.get(base(server, "/m/hello")) as resp:
        assert resp.status == 200
    assert upstream.seen[-1].headers["Host"] == name


def truncating_handler(declared: int, sent: int):
    """An upstream that promises ``declared`` bytes, sends ``sent`` and hangs up."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(declared)})
        await response.prepare(request)
        await response.write(b"x" * sent)
        assert request.transport is not None
        request.transport.close()
        return response

    return handler


async def test_a_large_body_cut_off_upstream_is_cut_off_for_the_client(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession, logs
) -> None:
    upstream.handler = truncating_handler(4 * 1024 * 1024, 300 * 1024)
    server = await make_proxy(routes=[upstream.route()])
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.get(base(server, "/up/big")) as resp:
            assert resp.status == 200
            await resp.read()
    assert logs.events("upstream_failed_mid_body")
    async with http.get(base(server, "/-/healthz")) as resp:
        assert resp.status == 200


async def test_a_small_body_cut_off_upstream_is_a_502(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession
) -> None:
    upstream.handler = truncating_handler(10_000, 100)
    server = await make_proxy(routes=[upstream.route()])
    async with http.get(base(server, "/up/small")) as resp:
        assert resp.status == 502
        assert resp.headers["X-Auth-Proxy-Error"] == "upstream_unreachable"


async def test_a_body_that_stalls_midway_is_cut_after_read_timeout(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession, logs
) -> None:
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(2 * 1024 * 1024)})
        await response.prepare(request)
        await response.write(b"x" * (512 * 1024))
        await release.wait()  # then nothing more: a stalled upstream
        return response

    upstream.handler = handler
    server = await make_proxy(routes=[upstream.route(upstream={"read_timeout": 0.3})])
    try:
        with pytest.raises(aiohttp.ClientPayloadError):
            async with http.get(base(server, "/up/stall")) as resp:
                assert resp.status == 200
                await resp.read()
        assert logs.events("upstream_failed_mid_body")[0]["error"] == "TimeoutError"
    finally:
        release.set()

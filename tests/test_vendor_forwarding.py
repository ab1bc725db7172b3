"""Forwarding that knows the vendors: throttling, the per-route concurrency cap, OData
links that would lead around the proxy, and v3 products by name — through the proxy,
over real sockets, against the sandbox (and a bare upstream where timing matters).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import web
from helpers import base, iics_route, ivanti_key_route, metric, scrape, wait_for

from proxy.core.clock import ManualClock
from proxy.sandbox import RateLimit, Sandbox

AGENT = "/iics/saas/api/v2/agent"


def throttled_route(sandbox: Sandbox, **upstream: Any) -> dict[str, Any]:
    return iics_route(sandbox, upstream=upstream) if upstream else iics_route(sandbox)


def pod_requests(sandbox: Sandbox, path: str = "/saas/api/v2/agent") -> int:
    return len(sandbox.state.requests_to(path))


async def logged_in(server: Any, http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    """One request first: the login (and its session probe) happen before any limit."""
    async with http.get(base(server, AGENT)) as resp:
        assert resp.status == 200
    sandbox.state.requests.clear()


async def test_a_throttled_get_waits_as_told_and_succeeds(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    server = await make_proxy(routes=[throttled_route(sandbox)])
    await logged_in(server, http, sandbox)
    sandbox.state.rate_limits["iics-pod"] = RateLimit(refuse_next=2, retry_after=3)
    before = clock.now()
    async with http.get(base(server, AGENT)) as resp:
        assert resp.status == 200
    assert pod_requests(sandbox) == 3  # two refusals, then the answer
    assert clock.now() - before == 6  # Retry-After: 3, twice, and not a second more
    assert len(sandbox.state.logins_for("iics-v2-login")) == 1  # a 429 is no session failure
    metrics = await (await http.get(base(server, "/-/metrics"))).text()
    assert 'auth_proxy_throttled_responses_total{action="retried",route="iics"} 2.0' in metrics


async def test_a_retry_after_beyond_the_budget_passes_the_answer_on_at_once(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    route = throttled_route(sandbox, throttle={"max_wait": 10})
    server = await make_proxy(routes=[route])
    await logged_in(server, http, sandbox)
    sandbox.state.rate_limits["iics-pod"] = RateLimit(refuse_next=5, retry_after=60)
    before = clock.now()
    async with http.get(base(server, AGENT)) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "60"  # the vendor's answer, unchanged
        assert (await resp.json())["error"]["code"] == "RATE_LIMITED"
    assert pod_requests(sandbox) == 1 and clock.now() == before


async def test_the_budget_bounds_the_total_wait(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    server = await make_proxy(routes=[throttled_route(sandbox, throttle={"max_wait": 5})])
    await logged_in(server, http, sandbox)
    sandbox.state.rate_limits["iics-pod"] = RateLimit(refuse_next=10, retry_after=2)
    before = clock.now()
    async with http.get(base(server, AGENT)) as resp:
        assert resp.status == 429
    assert clock.now() - before == 4  # 2 + 2; a third wait would pass 5 s
    assert pod_requests(sandbox) == 3


async def test_non_idempotent_requests_and_a_zero_budget_are_never_retried(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    on = await make_proxy(routes=[throttled_route(sandbox)])
    off = await make_proxy(routes=[throttled_route(sandbox, throttle={"max_wait": 0})])
    for proxy in (on, off):
        await logged_in(proxy, http, sandbox)
    sandbox.state.rate_limits["iics-pod"] = RateLimit(refuse_next=2, retry_after=1)
    async with http.post(base(on, AGENT), json={"name": "x"}) as resp:
        assert resp.status == 429
    async with http.get(base(off, AGENT)) as resp:
        assert resp.status == 429
    assert pod_requests(sandbox) == 2


async def test_a_503_without_retry_after_is_an_outage_not_throttling(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[throttled_route(sandbox)])
    await logged_in(server, http, sandbox)
    sandbox.state.rate_limits["iics-pod"] = RateLimit(refuse_next=1, retry_after=None, status=503)
    async with http.get(base(server, AGENT)) as resp:
        assert resp.status == 503
    assert pod_requests(sandbox) == 1


async def test_an_http_date_retry_after_is_honoured(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    server = await make_proxy(routes=[throttled_route(sandbox)])
    await logged_in(server, http, sandbox)
    sandbox.state.rate_limits["iics-pod"] = RateLimit(
        refuse_next=1, retry_after=4, status=503, http_date=True
    )
    before = clock.now()
    async with http.get(base(server, AGENT)) as resp:
        assert resp.status == 200
    assert 3 <= clock.now() - before <= 5  # an HTTP-date has whole seconds
    assert pod_requests(sandbox) == 2


# --------------------------------------------------------------------------- the cap


class Gate:
    """A bare upstream that holds every request until the test opens it, in order."""

    def __init__(self) -> None:
        self.arrived: list[str] = []
        self.open = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.arrived.append(request.query.get("n", "?"))
        await self.open.wait()
        return web.json_response({"n": request.query.get("n")})


UP = "/up/thing"


async def gated_proxy(make_proxy, upstream, **cap: Any) -> tuple[Any, Gate]:
    gate = Gate()
    upstream.handler = gate.handle
    return await make_proxy(routes=[upstream.route(upstream=cap)]), gate


async def test_beyond_max_concurrent_requests_queue_in_order(
    make_proxy, upstream, http: aiohttp.ClientSession
) -> None:
    server, gate = await gated_proxy(make_proxy, upstream, max_concurrent=1)

    async def get(n: int) -> Any:
        async with http.get(base(server, UP) + f"?n={n}") as resp:
            return resp.status, await resp.json()

    first = asyncio.create_task(get(0))
    await wait_for(lambda: gate.arrived == ["0"], what="the first request upstream")
    rest = []
    for n in (1, 2, 3):
        rest.append(asyncio.create_task(get(n)))
        await wait_for(lambda n=n: _queued(server) == n, what=f"request {n} queued")
    assert gate.arrived == ["0"]  # the others wait at the proxy, not at the vendor
    samples = await scrape(http, base(server, "/-/metrics"))
    assert metric(samples, "auth_proxy_route_queue_length", route="up") == 3
    assert metric(samples, "auth_proxy_requests_in_flight") == 4  # the scrape not counted
    gate.open.set()
    answers = [await task for task in (first, *rest)]
    assert [a[1]["n"] for a in answers] == ["0", "1", "2", "3"]
    assert gate.arrived == ["0", "1", "2", "3"]  # first come, first served


def _queued(server: Any) -> int:
    limiter = server.runtime.routes["up"].limiter
    return 0 if limiter is None else limiter.queued


async def test_a_request_that_waits_too_long_gets_route_busy(
    make_proxy, upstream, http: aiohttp.ClientSession
) -> None:
    server, gate = await gated_proxy(make_proxy, upstream, max_concurrent=1, queue_timeout=0.2)
    holder = asyncio.create_task(http.get(base(server, UP) + "?n=0"))
    await wait_for(lambda: gate.arrived == ["0"], what="the slot taken")
    async with http.get(base(server, UP) + "?n=1") as resp:
        assert resp.status == 503
        assert resp.headers["X-Auth-Proxy-Error"] == "route_busy"
        assert int(resp.headers["Retry-After"]) >= 1
        assert (await resp.json())["error"]["route"] == "up"
    gate.open.set()
    (await holder).release()
    assert gate.arrived == ["0"]


async def test_a_client_that_leaves_the_queue_frees_its_place(
    make_proxy, upstream, http: aiohttp.ClientSession
) -> None:
    server, gate = await gated_proxy(make_proxy, upstream, max_concurrent=1)
    holder = asyncio.create_task(http.get(base(server, UP) + "?n=0"))
    await wait_for(lambda: gate.arrived == ["0"], what="the slot taken")
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(f"GET {UP}?n=gone HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    await wait_for(lambda: _queued(server) == 1, what="the raw client queued")
    writer.close()
    await wait_for(lambda: _queued(server) == 0, what="the client gone from the queue")
    later = asyncio.create_task(http.get(base(server, UP) + "?n=2"))
    await wait_for(lambda: _queued(server) == 1, what="the next request queued")
    gate.open.set()
    (await holder).release()
    (await later).release()
    assert gate.arrived == ["0", "2"]  # the one that left never reached the vendor


# --------------------------------------------------------------------------- OData


async def test_odata_links_point_back_at_the_proxy(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[ivanti_key_route(sandbox)])
    route_base = base(server, "/ivanti")
    url = f"{route_base}/api/odata/businessobject/incidents?$top=1"
    async with http.get(url) as resp:
        assert resp.status == 200
        raw = await resp.read()
        assert int(resp.headers["Content-Length"]) == len(raw)
    body = json.loads(raw)
    assert body["@odata.context"].startswith(route_base + "/api/odata/$metadata#")
    assert body["@odata.nextLink"].startswith(route_base + "/api/odata/businessobject/")
    assert body["value"][0]["@odata.id"].startswith(route_base + "/api/odata/")
    assert sandbox.urls.ivanti not in raw.decode()
    # A client that follows the links stays on the proxy, with the session.
    async with http.get(body["@odata.nextLink"]) as resp:
        assert resp.status == 200
    metadata = body["@odata.context"].split("#")[0]
    async with http.get(metadata) as resp:
        assert resp.status == 200 and "edmx" in (await resp.text()).lower()


async def test_only_link_values_change(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[ivanti_key_route(sandbox)])
    url = base(server, "/ivanti/api/odata/businessobject/incidents")
    async with http.get(url) as resp:
        through = await resp.read()
    headers = {"Authorization": "rest_api_key=demo-api-key"}
    direct_url = sandbox.urls.ivanti + "/api/odata/businessobject/incidents"
    async with http.get(direct_url, headers=headers) as resp:
        direct = await resp.read()
    public = base(server, "/ivanti").encode()
    assert through == direct.replace(sandbox.urls.ivanti.encode(), public)


# --------------------------------------------------------------------------- products


async def test_a_v3_route_picks_its_product_by_name(
    sandbox: Sandbox, make_proxy, upstream, http: aiohttp.ClientSession
) -> None:
    upstream.handler = lambda request: _json({"via": "data-integration"})
    other = f"http://127.0.0.1:{upstream.port}/di"
    sandbox.state.iics_products = {"Integration Cloud": None, "Data Integration": other}
    routes = [
        iics_route(
            sandbox,
            type="iics-password-v3",
            product="data integration",
            allowed_hosts=["127.0.0.1"],
        ),
        iics_route(sandbox, name="bad", prefix="/bad", type="iics-password-v3", product="Nope"),
    ]
    server = await make_proxy(routes=routes)
    async with http.get(base(server, "/iics/api/thing")) as resp:
        assert resp.status == 200 and (await resp.json()) == {"via": "data-integration"}
    async with http.get(base(server, "/bad/api/thing")) as resp:
        error = (await resp.json())["error"]
        assert (resp.status, error["code"]) == (502, "login_failed")
        assert "'Integration Cloud', 'Data Integration'" in error["message"]


async def _json(data: Any) -> web.Response:
    return web.json_response(data)

"""The vendor-aware pieces on their own against the sandbox over real sockets: the
throttle budget reads the sandbox's refusals, the probe reads its validSessionId, the
OData rewrite handles its pages, and v3 products select by name. Through the proxy they
are tested in test_vendor_forwarding.py."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from helpers import DEMO, Responder, run_flow, sandbox_v2_login

from proxy.core.errors import LoginFailed
from proxy.flows.base import LoginRequest, LoginResponse
from proxy.flows.iics import select_product, valid_session_probe
from proxy.sandbox import ManualClock, RateLimit
from proxy.upstream.limiter import ConcurrencyLimiter
from proxy.upstream.odata import rewrite_links
from proxy.upstream.throttle import ThrottlePolicy

API_KEY = {"Authorization": "rest_api_key=demo-api-key"}
PUBLIC = "http://127.0.0.1:8080/ivanti"
# A quarter past a whole second: Retry-After dates round up, the rest stays exact.
CLOCK_START = 1_750_000_000.25


async def get_with_retries(
    http: aiohttp.ClientSession, url: str, policy: ThrottlePolicy, clock: ManualClock
) -> tuple[int, list[float]]:
    """What the relay will do: ask, and ask again as long as the budget says so."""
    budget = policy.budget("GET", now=clock.now, random=lambda: 0.5)
    waits: list[float] = []
    for _ in range(20):
        async with http.get(url, headers=API_KEY) as response:
            await response.read()
            wait = budget.next_wait(response.status, response.headers)
        if wait is None:
            return response.status, waits
        waits.append(wait)
        clock.advance(wait)  # the relay would sleep; the sandbox's bucket runs on this clock
    raise AssertionError("the budget never gave up")


async def test_the_budget_rides_out_the_sandbox_token_bucket(sandbox, http, clock):
    limit = RateLimit(requests=1, per=10)
    sandbox.state.rate_limits["ivanti"] = limit
    url = sandbox.urls.ivanti + "/api/odata/businessobject/incidents"
    policy = ThrottlePolicy(max_wait=30)
    assert await get_with_retries(http, url, policy, clock) == (200, [])
    assert await get_with_retries(http, url, policy, clock) == (200, [10.0])
    assert limit.refused == 1
    assert len(sandbox.state.requests_for("ivanti")) == 3


async def test_the_budget_gives_up_when_the_vendor_asks_for_too_long(sandbox, http, clock):
    limit = RateLimit(refuse_next=5, retry_after=20)
    sandbox.state.rate_limits["ivanti"] = limit
    url = sandbox.urls.ivanti + "/api/odata/businessobject/incidents"
    status, waits = await get_with_retries(http, url, ThrottlePolicy(max_wait=30), clock)
    assert (status, waits) == (429, [20.0])  # a second 20 s would pass the 30 s budget
    assert limit.refused == 2


async def test_the_budget_reads_the_sandbox_http_date(sandbox, http, clock):
    sandbox.state.rate_limits["ivanti"] = RateLimit(
        refuse_next=1, status=503, retry_after=120, http_date=True
    )
    url = sandbox.urls.ivanti + "/api/odata/businessobject/incidents"
    status, waits = await get_with_retries(http, url, ThrottlePolicy(max_wait=300), clock)
    # The date is rounded up to a whole second; the clock started at .25 past one.
    assert (status, waits) == (200, [120.75])


async def test_a_route_cap_in_front_of_the_sandbox(sandbox, http):
    """Six clients through a cap of two: at most two requests reach the vendor at once."""
    waits: list[float] = []
    limiter = ConcurrencyLimiter(
        2, lambda message, after: RuntimeError(message), on_wait=waits.append
    )
    url = sandbox.urls.pod + "/saas/api/v2/slow?seconds=0.05"
    session = await sandbox_v2_login(http, sandbox)
    inside = most = 0

    async def client() -> int:
        nonlocal inside, most
        async with limiter.slot(10):
            inside += 1
            most = max(most, inside)
            async with http.get(url, headers={"icSessionId": session}) as response:
                await response.read()
            inside -= 1
            return response.status

    async with asyncio.timeout(20):
        statuses = await asyncio.gather(*(client() for _ in range(6)))
    assert statuses == [200] * 6 and most == 2 and len(waits) == 6
    assert len(sandbox.state.requests_to("/saas/api/v2/slow")) == 6


def over_http(http: aiohttp.ClientSession) -> Responder:
    """Answer a flow's call by making it; a transport error is a ``LoginFailed``."""

    async def call(request: LoginRequest) -> LoginResponse:
        try:
            async with http.request(
                request.method, request.url, headers=dict(request.headers), data=request.body
            ) as response:
                body = await response.read()
                return LoginResponse(response.status, response.headers, body, str(response.url))
        except aiohttp.ClientError:
            raise LoginFailed(f"the {request.purpose} call failed") from None

    return call


async def test_the_probe_learns_the_sandbox_org_timeout(sandbox, http):
    sandbox.state.iics_idle_timeout = 300
    session_id = await sandbox_v2_login(http, sandbox)
    server_url = sandbox.urls.pod + "/saas"
    probe = valid_session_probe(server_url, "demo", session_id)
    assert await run_flow(probe, over_http(http)) == 300
    probe = valid_session_probe(server_url, "demo", "expired")
    assert await run_flow(probe, over_http(http)) is None


async def test_the_probe_survives_a_throttled_or_unreachable_vendor(sandbox, http):
    session_id = await sandbox_v2_login(http, sandbox)
    sandbox.state.rate_limits["iics-pod"] = RateLimit(refuse_next=1)
    server_url = sandbox.urls.pod + "/saas"
    probe = valid_session_probe(server_url, "demo", session_id)
    assert await run_flow(probe, over_http(http)) is None
    # drive() lets a failed call out of the loop instead of throwing it into the flow,
    # so the one call is made here and its failure thrown into the probe.
    probe = valid_session_probe("http://127.0.0.1:9/saas", "demo", session_id)  # refused
    with pytest.raises(LoginFailed) as failed:
        await over_http(http)(next(probe))
    with pytest.raises(StopIteration) as stop:
        probe.throw(failed.value)
    assert stop.value.value is None


async def test_v3_products_from_the_sandbox_select_by_name(sandbox, http):
    sandbox.state.iics_products = {"Integration Cloud": None, "CDGC": "https://cdgc.example"}
    url = sandbox.urls.login + "/saas/public/core/v3/login"
    async with http.post(url, json=DEMO) as response:
        products = (await response.json())["products"]
    assert select_product(products, "cdgc") == "https://cdgc.example"
    assert select_product(products, None) == sandbox.urls.pod + "/saas"
    with pytest.raises(LoginFailed, match="it lists 'Integration Cloud', 'CDGC'"):
        select_product(products, "Data Integration")


@pytest.mark.parametrize("prefix", ["", "/HEAT"])
async def test_sandbox_odata_pages_point_at_the_proxy_after_rewriting(sandbox, http, prefix):
    tenant = sandbox.urls.ivanti + prefix
    url = tenant + "/api/odata/businessobject/incidents?$top=2"
    async with http.get(url, headers=API_KEY) as response:
        body = await response.read()
    rewritten = rewrite_links(body, tenant, PUBLIC)
    assert rewritten is not None
    page, original = json.loads(rewritten), json.loads(body)
    assert page["@odata.context"] == PUBLIC + "/api/odata/$metadata#incidents"
    assert page["@odata.nextLink"] == (
        PUBLIC + "/api/odata/businessobject/incidents?$top=2&$skip=2"
    )
    assert [row["@odata.id"] for row in page["value"]] == [
        PUBLIC + f"/api/odata/businessobject/incidents('{row['RecId']}')"
        for row in original["value"]
    ]
    assert tenant not in rewritten.decode()
    # Everything else as the vendor sent it.
    assert rewritten.replace(PUBLIC.encode(), tenant.encode()) == body

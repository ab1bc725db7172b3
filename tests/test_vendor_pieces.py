"""The vendor-aware pieces on their own against the sandbox over real sockets: the
throttle budget reads the sandbox's refusals, the probe reads its validSessionId, the
OData rewrite handles its pages, and v3 products select by name. Through the proxy they
are tested in test_vendor_forwarding.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Generator
from typing import Any

import aiohttp
import pytest

from proxy.core.errors import LoginFailed
from proxy.flows.base import LoginRequest, LoginResponse
from proxy.flows.iics import select_product, valid_session_probe
from proxy.sandbox import ManualClock, RateLimit, Sandbox, SandboxState, run_sandbox
from proxy.upstream.limiter import ConcurrencyLimiter
from proxy.upstream.odata import rewrite_links
from proxy.upstream.throttle import ThrottlePolicy

API_KEY = {"Authorization": "rest_api_key=demo-api-key"}
PUBLIC = "http://127.0.0.1:8080/ivanti"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1_750_000_000.25)


@pytest.fixture
async def sandbox(clock: ManualClock) -> AsyncIterator[Sandbox]:
    async with run_sandbox(SandboxState(clock=clock)) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


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
    session = await v2_login(http, sandbox)
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


async def v2_login(http: aiohttp.ClientSession, sandbox: Sandbox) -> str:
    body = {"username": "demo", "password": "demo-password"}
    async with http.post(sandbox.urls.login + "/ma/api/v2/user/login", json=body) as response:
        session_id: str = (await response.json())["icSessionId"]
    return session_id


async def drive(http: aiohttp.ClientSession, gen: Generator[Any, Any, Any]) -> Any:
    """Perform a flow step's calls over HTTP; a transport error is thrown into it."""
    step = next(gen)
    while True:
        assert isinstance(step, LoginRequest)
        try:
            async with http.request(
                step.method, step.url, headers=dict(step.headers), data=step.body
            ) as response:
                reply = LoginResponse(
                    response.status, response.headers, await response.read(), str(response.url)
                )
        except aiohttp.ClientError:
            failure = LoginFailed(f"the {step.purpose} call failed")
            try:
                step = gen.throw(failure)
            except StopIteration as stop:
                return stop.value
            continue
        try:
            step = gen.send(reply)
        except StopIteration as stop:
            return stop.value


async def test_the_probe_learns_the_sandbox_org_timeout(sandbox, http):
    sandbox.state.iics_idle_timeout = 300
    session_id = await v2_login(http, sandbox)
    server_url = sandbox.urls.pod + "/saas"
    assert await drive(http, valid_session_probe(server_url, "demo", session_id)) == 300
    assert await drive(http, valid_session_probe(server_url, "demo", "expired")) is None


async def test_the_probe_survives_a_throttled_or_unreachable_vendor(sandbox, http):
    session_id = await v2_login(http, sandbox)
    sandbox.state.rate_limits["iics-pod"] = RateLimit(refuse_next=1)
    server_url = sandbox.urls.pod + "/saas"
    assert await drive(http, valid_session_probe(server_url, "demo", session_id)) is None
    unreachable = "http://127.0.0.1:9/saas"  # discard port: connection refused
    assert await drive(http, valid_session_probe(unreachable, "demo", session_id)) is None


async def test_v3_products_from_the_sandbox_select_by_name(sandbox, http):
    sandbox.state.iics_products = {"Integration Cloud": None, "CDGC": "https://cdgc.example"}
    url = sandbox.urls.login + "/saas/public/core/v3/login"
    body = {"username": "demo", "password": "demo-password"}
    async with http.post(url, json=body) as response:
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

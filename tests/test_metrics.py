"""Prometheus metrics at ``/-/metrics``: requests, logins, replays and sessions by route,
present from the start, one registry per proxy."""

from __future__ import annotations

import aiohttp
from helpers import base, iics_route, metric, scrape, status_of

from proxy.core.clock import ManualClock
from proxy.sandbox import Sandbox

AGENT = "/saas/api/v2/agent"


async def test_metrics_count_requests_logins_replays_and_sessions(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    bad = iics_route(sandbox, name="bad", prefix="/bad", password="wrong")
    server = await make_proxy(routes=[iics_route(sandbox), bad])

    before = await scrape(http, base(server, "/-/metrics"))
    # Series exist before the first request, so dashboards and rate() start at zero.
    assert metric(before, "auth_proxy_requests_total", route="iics", status="2xx") == 0
    assert metric(before, "auth_proxy_logins_total", route="iics", result="ok") == 0
    assert metric(before, "auth_proxy_sessions_active", route="iics") == 0
    assert metric(before, "auth_proxy_config_last_reload_success") == 1

    for _ in range(3):
        assert await status_of(http, base(server, "/iics" + AGENT)) == 200
    assert await status_of(http, base(server, "/iics/saas/api/v2/status/404")) == 404
    assert await status_of(http, base(server, "/nowhere")) == 404
    sandbox.state.expire_all_sessions()  # the next call gets a 401, re-logs in, replays
    assert await status_of(http, base(server, "/iics" + AGENT)) == 200
    assert await status_of(http, base(server, "/bad" + AGENT)) == 502
    clock.advance(100)

    after = await scrape(http, base(server, "/-/metrics"))
    assert metric(after, "auth_proxy_requests_total", route="iics", status="2xx") == 4
    assert metric(after, "auth_proxy_requests_total", route="iics", status="4xx") == 1
    assert metric(after, "auth_proxy_requests_total", route="bad", status="5xx") == 1
    assert metric(after, "auth_proxy_requests_total", route="", status="4xx") == 1
    assert metric(after, "auth_proxy_requests_total", route="", status="2xx") == 0  # scrapes
    assert metric(after, "auth_proxy_request_duration_seconds_count", route="iics") == 5
    assert metric(after, "auth_proxy_request_duration_seconds_bucket", route="iics", le="+Inf") == 5
    assert metric(after, "auth_proxy_reauth_replays_total", route="iics") == 1
    assert metric(after, "auth_proxy_logins_total", route="iics", result="ok") == 2
    assert metric(after, "auth_proxy_logins_total", route="bad", result="rejected") == 1
    assert metric(after, "auth_proxy_login_duration_seconds_count", route="iics") == 2
    assert metric(after, "auth_proxy_sessions_active", route="iics") == 1
    assert metric(after, "auth_proxy_sessions_active", route="bad") == 0
    # The idle clock restarted at the last call; 100 s have passed since.
    assert metric(after, "auth_proxy_session_expiry_seconds", route="iics") == 1800 - 100
    assert metric(after, "auth_proxy_session_expiry_seconds", route="bad") is None


async def test_each_proxy_has_its_own_registry(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    one = await make_proxy(routes=[iics_route(sandbox)])
    two = await make_proxy(routes=[iics_route(sandbox)])
    assert await status_of(http, base(one, "/iics" + AGENT)) == 200
    counted = metric(
        await scrape(http, base(two, "/-/metrics")),
        "auth_proxy_requests_total",
        route="iics",
        status="2xx",
    )
    assert counted == 0

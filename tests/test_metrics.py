"""Prometheus metrics at ``/-/metrics``: requests, logins, replays and sessions by route,
present from the start, one registry per proxy; scrapes with ``Authorization: Bearer``.
(With workers: tests/test_workers_metrics.py.)"""

from __future__ import annotations

import platform

import aiohttp
from helpers import Samples, base, fetch, iics_route, metric, scrape, status_of

from proxy import __version__
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
    assert metric(before, "auth_proxy_requests_total", route="iics", status="2xx", code="") == 0
    assert (
        metric(
            before, "auth_proxy_requests_total", route="iics", status="5xx", code="login_rejected"
        )
        == 0
    )
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
    assert requests(after, route="iics", status="2xx", code="") == 4
    assert requests(after, route="iics", status="4xx", code="") == 1  # the upstream's 404
    # The proxy's own 502 (a rejected login) is told apart from an upstream's.
    assert requests(after, route="bad", status="5xx", code="login_rejected") == 1
    assert requests(after, route="bad", status="5xx", code="") == 0
    assert requests(after, route="", status="4xx", code="no_route") == 1
    assert requests(after, route="", status="2xx", code="") == 0  # scrapes
    assert metric(after, "auth_proxy_request_duration_seconds_count", route="iics") == 5
    assert metric(after, "auth_proxy_request_duration_seconds_bucket", route="iics", le="+Inf") == 5
    assert metric(after, "auth_proxy_reauth_replays_total", route="iics") == 1
    assert metric(after, "auth_proxy_logins_total", route="iics", result="ok") == 2
    assert metric(after, "auth_proxy_logins_total", route="bad", result="rejected") == 1
    assert metric(after, "auth_proxy_login_duration_seconds_count", route="iics") == 2
    assert metric(after, "auth_proxy_sessions_active", route="iics") == 1
    assert metric(after, "auth_proxy_sessions_active", route="bad") == 0
    # The idle clock restarted at the last call; 100 s have passed since.
    expiry = "auth_proxy_session_expiry_timestamp_seconds"
    assert metric(after, expiry, route="iics") == clock.now() - 100 + 1800
    assert metric(after, expiry, route="bad") is None


def requests(samples: Samples, **labels: str) -> float | None:
    return metric(samples, "auth_proxy_requests_total", **labels)


async def test_metrics_describe_the_build_the_process_and_requests_in_flight(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    samples = await scrape(http, base(server, "/-/metrics"))
    build = {"version": __version__, "python": platform.python_version()}
    assert metric(samples, "auth_proxy_build_info", **build) == 1
    assert metric(samples, "auth_proxy_requests_in_flight") == 0  # the scrape is not counted
    assert metric(samples, "process_resident_memory_bytes") > 0
    assert metric(samples, "process_cpu_seconds_total") > 0
    assert not [name for name, _ in samples if name.endswith("_created")]


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
        code="",
    )
    assert counted == 0


async def test_a_scrape_may_send_the_client_token_as_authorization_bearer(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)], client_auth={"tokens": ["tok"]})
    scrape_url, api = base(server, "/-/metrics"), base(server, "/iics" + AGENT)
    # What Prometheus sends for `authorization: {credentials: tok}`.
    assert await status_of(http, scrape_url, headers={"Authorization": "Bearer tok"}) == 200
    assert await status_of(http, scrape_url, headers={"Proxy-Authorization": "Bearer tok"}) == 200
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic dG9r"}):
        refused = await fetch(http, "GET", scrape_url, headers=headers)
        assert refused.status == 401
        assert refused.headers["X-Auth-Proxy-Error"] == "client_unauthorized"
    # Elsewhere Authorization is the vendor's header: it never stands for the client token.
    assert await status_of(http, api, headers={"Authorization": "Bearer tok"}) == 401
    assert (
        await status_of(http, base(server, "/-/sessions"), headers={"Authorization": "Bearer tok"})
        == 401
    )
    assert sandbox.state.logins == []

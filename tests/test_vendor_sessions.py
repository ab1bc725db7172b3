"""Sessions that follow the vendor: the org's real idle timeout (asked once after a login),
a fresh session before a body that cannot be replayed, and how often a route logs in.
Through the proxy, over real sockets, against the sandbox on a shared manual clock.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from helpers import base, iics_route

from proxy.core.clock import ManualClock
from proxy.sandbox import Sandbox

AGENT = "/iics/saas/api/v2/agent"
IMPORT = "/iics/saas/public/core/v3/import/package"


async def get(http: aiohttp.ClientSession, server: Any, path: str = AGENT) -> int:
    async with http.get(base(server, path)) as resp:
        await resp.read()
        return resp.status


async def session_entry(http: aiohttp.ClientSession, server: Any) -> dict[str, Any]:
    async with http.get(base(server, "/-/sessions")) as resp:
        entry: dict[str, Any] = (await resp.json())["iics"]
        return entry


def logins(sandbox: Sandbox) -> int:
    return len(sandbox.state.logins_for("iics-v2-login"))


async def test_an_org_with_a_five_minute_timeout_is_renewed_on_that_clock(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, clock: ManualClock, logs
) -> None:
    sandbox.state.iics_idle_timeout = 300  # the org admin's setting
    server = await make_proxy(routes=[iics_route(sandbox)])
    assert await get(http, server) == 200
    entry = await session_entry(http, server)
    assert (entry["idle_timeout"], entry["idle_timeout_source"]) == (300, "vendor")
    assert len(sandbox.state.requests_for("iics-probe")) == 1  # asked once, after the login
    # Idle for longer than the org allows, far less than the 30-minute default: the proxy
    # knows the session is gone and logs in first, instead of sending it and taking a 401.
    clock.advance(301)
    assert await get(http, server) == 200
    assert logins(sandbox) == 2
    assert logs.events("request")[-1]["replayed"] is False
    assert not logs.events("replaying_after_reauth")


async def test_a_configured_idle_timeout_is_not_asked_about(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    sandbox.state.iics_idle_timeout = 300
    server = await make_proxy(routes=[iics_route(sandbox, idle_timeout=600)])
    assert await get(http, server) == 200
    entry = await session_entry(http, server)
    assert (entry["idle_timeout"], entry["idle_timeout_source"]) == (600, "config")
    assert sandbox.state.requests_for("iics-probe") == []


async def test_a_failed_probe_falls_back_to_the_default_and_the_login_stands(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, upstream, logs
) -> None:
    # serverUrl names a host that knows nothing of validSessionId: the probe gets a 404.
    sandbox.state.server_url_override = f"{upstream.url}/saas"
    route = iics_route(sandbox, allowed_hosts=["127.0.0.1"])
    server = await make_proxy(routes=[route])
    assert await get(http, server) == 200
    entry = await session_entry(http, server)
    assert (entry["idle_timeout"], entry["idle_timeout_source"]) == (1800, "default")
    assert [e["route"] for e in logs.events("login_ok")] == ["iics"]


async def test_a_large_upload_near_expiry_gets_a_fresh_session_first(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, clock: ManualClock, logs
) -> None:
    route = iics_route(sandbox, upstream={"retry_body_limit": 1024})
    server = await make_proxy(routes=[route])
    assert await get(http, server) == 200
    first = sandbox.state.requests_to("/saas/api/v2/agent")[-1].headers["icSessionId"]
    # The vendor forgot the session (an admin, another tool's logout), and the proxy has
    # not heard: unused for over half the idle timeout, its validity is in doubt.
    sandbox.state.expire_all_sessions()
    clock.advance(1000)
    async with http.post(base(server, IMPORT), data=b"x" * 65536) as resp:
        assert resp.status == 200, await resp.text()
    assert logins(sandbox) == 2
    sent = sandbox.state.requests_to("/saas/public/core/v3/import/package")[-1].headers[
        "icSessionId"
    ]
    assert sent != first  # the upload went with the fresh session, and was accepted
    assert logs.events("preflight_renewal")
    metrics = await (await http.get(base(server, "/-/metrics"))).text()
    assert 'auth_proxy_preflight_renewals_total{route="iics"} 1.0' in metrics


async def test_a_small_body_is_not_held_back_for_a_renewal(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, clock: ManualClock, logs
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    assert await get(http, server) == 200
    clock.advance(1000)  # in doubt, but a small body can be replayed after a 401
    async with http.post(base(server, IMPORT), data=b"x" * 100) as resp:
        assert resp.status == 200
    assert logins(sandbox) == 1
    assert not logs.events("preflight_renewal")


async def test_logins_are_counted_and_too_many_are_a_warning(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, logs
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    for _ in range(5):  # something keeps killing the vendor session
        assert await get(http, server) == 200
        sandbox.state.expire_all_sessions()
    entry = await session_entry(http, server)
    assert (entry["logins_last_hour"], entry["logins_last_day"]) == (5, 5)
    warnings = logs.events("frequent_logins")
    assert len(warnings) == 1  # said once, not at every login
    assert warnings[0]["logins_last_hour"] == 4 and warnings[0]["expected_at_most"] == 3
    metrics = await (await http.get(base(server, "/-/metrics"))).text()
    assert 'auth_proxy_logins_last_hour{route="iics"} 5.0' in metrics

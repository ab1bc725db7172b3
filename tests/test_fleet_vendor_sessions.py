"""Sessions that follow the vendor, in a fleet sharing one session store: the org's idle
timeout, learned by the process that logged in, travels with the stored session; a
session taken from the store is in doubt before a body that cannot be replayed; each
process counts only the logins it made.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fleet_support import AGENT, local_store, logins, redis_store
from helpers import base, iics_route, write_config
from store_support import RedisServer

from proxy.core.clock import ManualClock
from proxy.sandbox import Sandbox

IMPORT = "/iics/saas/public/core/v3/import/package"


async def get(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url) as resp:
        await resp.read()
        return resp.status


async def entry(http: aiohttp.ClientSession, server_url: str) -> dict[str, Any]:
    async with http.get(f"{server_url}/-/sessions") as resp:
        found: dict[str, Any] = (await resp.json())["iics"]
        return found


def pod_session(sandbox: Sandbox, path: str) -> str:
    return sandbox.state.requests_to(path)[-1].headers["icSessionId"]


@pytest.mark.parametrize("kind", ["local", "redis"])
async def test_the_orgs_idle_timeout_travels_with_the_stored_session(
    sandbox: Sandbox,
    make_proxy,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    redis_server: RedisServer,
    clock: ManualClock,
    logs,
    kind: str,
) -> None:
    sandbox.state.iics_idle_timeout = 300  # the org admin's setting
    store = local_store(tmp_path) if kind == "local" else redis_store(redis_server)
    first = await make_proxy(routes=[iics_route(sandbox)], session_store=store)
    second = await make_proxy(routes=[iics_route(sandbox)], session_store=store)
    assert await get(http, base(first, AGENT)) == 200
    assert await get(http, base(second, AGENT)) == 200  # the stored session, no login
    here, there = await entry(http, base(first)), await entry(http, base(second))
    for seen in (here, there):
        assert (seen["idle_timeout"], seen["idle_timeout_source"]) == (300, "vendor")
    assert len(sandbox.state.requests_for("iics-probe")) == 1  # asked by the one that logged in
    # Each process counts the logins it made: the second took the session, it made none.
    assert (here["logins_last_hour"], there["logins_last_hour"]) == (1, 0)
    # Idle past the org's five minutes, far less than the 30-minute default: the second
    # process knows the session is gone and logs in first, instead of taking a 401.
    clock.advance(301)
    assert await get(http, base(second, AGENT)) == 200
    assert logins(sandbox) == 2
    assert logs.events("request")[-1]["replayed"] is False
    assert not logs.events("replaying_after_reauth")


async def stored_by_a_stopped_process(
    serve_process, sandbox: Sandbox, tmp_path: Path, port: int, route: dict[str, Any]
) -> str:
    """A ``serve`` process logs in with the local store in ``tmp_path`` and stops (its
    stored session stays for the next process); the session id it used."""
    config = tmp_path / "config.yaml"
    listen = {"host": "127.0.0.1", "port": port}
    write_config(config, [route], listen=listen, session_store=local_store(tmp_path))
    before = await serve_process(config, port)
    async with aiohttp.ClientSession() as http:
        assert await get(http, before.url(AGENT)) == 200
    before.proc.send_signal(signal.SIGTERM)
    await before.finish()
    return pod_session(sandbox, "/saas/api/v2/agent")


async def test_a_large_upload_after_a_restart_gets_a_fresh_session_first(
    sandbox: Sandbox,
    serve_process,
    make_proxy,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    unused_tcp_port: int,
    clock: ManualClock,
    logs,
) -> None:
    route = iics_route(sandbox, upstream={"retry_body_limit": 1024})
    stored = await stored_by_a_stopped_process(
        serve_process, sandbox, tmp_path, unused_tcp_port, route
    )
    # The vendor forgot it meanwhile (an admin, another tool's logout); the process that
    # used it is gone, so nobody has said so to the store.
    sandbox.state.expire_all_sessions()
    clock.advance(60)
    after = await make_proxy(routes=[route], session_store=local_store(tmp_path))
    async with http.post(base(after, IMPORT), data=b"x" * 65536) as resp:
        assert resp.status == 200, await resp.text()
    assert logins(sandbox) == 2
    sent = pod_session(sandbox, "/saas/public/core/v3/import/package")
    assert sent != stored  # the upload went with the fresh session, and was accepted
    assert logs.events("preflight_renewal")
    assert (await entry(http, base(after)))["source"] == "login"
    metrics = await (await http.get(base(after, "/-/metrics"))).text()
    assert 'auth_proxy_preflight_renewals_total{route="iics"} 1.0' in metrics


async def test_a_small_first_request_after_a_restart_takes_the_stored_session(
    sandbox: Sandbox,
    serve_process,
    make_proxy,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    unused_tcp_port: int,
    clock: ManualClock,
    logs,
) -> None:
    route = iics_route(sandbox, upstream={"retry_body_limit": 1024})
    await stored_by_a_stopped_process(serve_process, sandbox, tmp_path, unused_tcp_port, route)
    clock.advance(60)
    after = await make_proxy(routes=[route], session_store=local_store(tmp_path))
    # A body small enough to replay after a 401 is not held back for a renewal.
    async with http.post(base(after, IMPORT), data=b"x" * 100) as resp:
        assert resp.status == 200
    assert logins(sandbox) == 1
    assert (await entry(http, base(after)))["source"] == "restart"
    assert not logs.events("preflight_renewal")

"""Sessions (SPEC §4): one login per route, expiry, re-login on 401, lockout safety."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web
from helpers import Upstream, base, fetch, iics_route, status_of, v2_logins, wait_for

from proxy.core.clock import ManualClock
from proxy.core.errors import LoginBackoff, LoginFailed
from proxy.flows.base import (
    Flow,
    FlowGen,
    LoginRequest,
    LoginResponse,
    Session,
    call,
    check_login,
)
from proxy.sandbox import Sandbox
from proxy.sessions.manager import RouteSessions

# ---------------------------------------------------------------- single flight


async def test_fifty_concurrent_cold_requests_make_exactly_one_login(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    sandbox.state.login_delay = 0.2  # keep the login in flight while all requests arrive
    server = await make_proxy(routes=[iics_route(sandbox)])
    url = base(server, "/iics/saas/api/v2/agent")
    results = await asyncio.gather(*(fetch(http, "GET", url) for _ in range(50)))
    assert [r.status for r in results] == [200] * 50
    assert v2_logins(sandbox) == 1
    session_ids = {r.headers["icSessionId"] for r in sandbox.state.requests_for("iics-pod")}
    assert len(session_ids) == 1


async def test_concurrent_waiters_share_a_failed_login(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    sandbox.state.login_delay = 0.2
    sandbox.state.login_status_override = 503
    server = await make_proxy(routes=[iics_route(sandbox)])
    url = base(server, "/iics/saas/api/v2/agent")
    results = await asyncio.gather(*(fetch(http, "GET", url) for _ in range(20)))
    assert {r.status for r in results} == {502}
    assert {r.body["error"]["code"] for r in results} == {"login_failed"}
    assert v2_logins(sandbox) == 1


class SlowFlow(Flow):
    """A minimal flow for driving ``RouteSessions`` without sockets."""

    type_name = "test-slow"

    def __init__(self) -> None:
        super().__init__(None)
        self.started = 0

    def login(self) -> FlowGen:
        self.started += 1
        response = yield from call(LoginRequest("POST", "http://login.test/"))
        check_login(response, "test login")
        return Session(headers=(("X-Token", "t"),), upstream="http://up.test")


async def test_a_cancelled_waiter_does_not_cancel_the_login_for_others() -> None:
    release = asyncio.Event()

    async def execute(request: LoginRequest) -> LoginResponse:
        await release.wait()
        return LoginResponse(200, {}, b"{}", request.url)

    flow = SlowFlow()
    sessions = RouteSessions(
        "r",
        flow,
        execute,
        clock=ManualClock(),
        idle_timeout=1800,
        refresh_margin=120,
        login_retry_after=300,
    )
    first = asyncio.create_task(sessions.acquire())
    others = [asyncio.create_task(sessions.acquire()) for _ in range(5)]
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    release.set()
    leases = await asyncio.gather(*others)
    assert first.cancelled()
    assert flow.started == 1
    assert len({id(lease) for lease in leases}) == 1
    assert sessions.status().state == "active"


# ---------------------------------------------------------------- expiry


async def test_idle_expiry_slides_with_use_and_relogs_in_after_it(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    url = base(server, "/iics/saas/api/v2/agent")
    for _ in range(3):  # each use restarts the 30-minute idle clock on both sides
        assert await status_of(http, url) == 200
        clock.advance(1500)
    assert v2_logins(sandbox) == 1
    clock.advance(400)  # now 1900 s idle: the proxy knows the session is gone
    assert await status_of(http, url) == 200
    assert v2_logins(sandbox) == 2
    async with http.get(base(server, "/-/sessions")) as resp:
        assert (await resp.json())["iics"]["state"] == "active"


async def test_session_is_renewed_proactively_within_the_refresh_margin(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox, refresh_margin=120)])
    url = base(server, "/iics/saas/api/v2/agent")
    assert await status_of(http, url) == 200
    clock.advance(1800 - 60)  # 60 s left, inside the margin
    status = await status_of(http, url)
    assert status == 200  # served at once with the old session
    await wait_for(lambda: v2_logins(sandbox) == 2, what="background renewal")
    assert await status_of(http, url) == 200
    assert v2_logins(sandbox) == 2


# ---------------------------------------------------------------- reactive re-login


async def test_a_401_storm_makes_exactly_one_relogin(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    url = base(server, "/iics/saas/api/v2/agent")
    assert await status_of(http, url) == 200
    sandbox.state.expire_all_sessions()  # the vendor forgets the session behind our back
    sandbox.state.login_delay = 0.1
    results = await asyncio.gather(*(fetch(http, "GET", url) for _ in range(40)))
    assert [r.status for r in results] == [200] * 40
    assert v2_logins(sandbox) == 2


async def test_post_is_replayed_after_relogin_with_the_same_body(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, logs
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    assert await status_of(http, base(server, "/iics/saas/api/v2/agent")) == 200
    sandbox.state.expire_all_sessions()
    payload = b'{"name": "job-1", "params": [1, 2, 3]}'
    async with http.post(
        base(server, "/iics/saas/api/v2/echo"),
        data=payload,
        headers={"Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 200
        echoed = await resp.json()
    assert echoed["body"] == payload.decode()
    assert echoed["headers"]["Content-Type"] == "application/json"
    posts = [r for r in sandbox.state.requests_for("iics-pod") if r.path == "/saas/api/v2/echo"]
    assert [p.body for p in posts] == [payload, payload]
    assert v2_logins(sandbox) == 2
    access = [e for e in logs.events("request") if e["path"] == "/iics/saas/api/v2/echo"]
    assert access[-1]["replayed"] is True


async def test_chunked_body_within_the_limit_is_replayed(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    assert await status_of(http, base(server, "/iics/saas/api/v2/agent")) == 200
    sandbox.state.expire_all_sessions()

    async def chunks():
        yield b"part-one;"
        yield b"part-two"

    async with http.post(base(server, "/iics/saas/api/v2/echo"), data=chunks()) as resp:
        assert resp.status == 200
        assert (await resp.json())["body"] == "part-one;part-two"


async def test_body_over_the_limit_is_not_replayed_and_the_401_reaches_the_client(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox, upstream={"retry_body_limit": 16})])
    assert await status_of(http, base(server, "/iics/saas/api/v2/agent")) == 200
    sandbox.state.expire_all_sessions()
    async with http.post(base(server, "/iics/saas/api/v2/echo"), data=b"x" * 100) as resp:
        assert resp.status == 401
        assert (await resp.json())["code"] == "AUTH_01"  # the vendor's own answer
    posts = [r for r in sandbox.state.requests_for("iics-pod") if r.path == "/saas/api/v2/echo"]
    assert len(posts) == 1
    # The stale session was dropped: the next request logs in once and succeeds.
    assert await status_of(http, base(server, "/iics/saas/api/v2/agent")) == 200
    assert v2_logins(sandbox) == 2


async def test_a_401_after_a_fresh_relogin_is_not_replayed_again(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    async with http.get(base(server, "/iics/saas/api/v2/status/401")) as resp:
        assert resp.status == 401
    calls = [r for r in sandbox.state.requests_for("iics-pod") if r.path.endswith("/status/401")]
    assert len(calls) == 2  # the original and one replay, never more
    assert v2_logins(sandbox) == 2


# ---------------------------------------------------------------- lockout safety


async def test_rejected_login_is_not_retried_until_login_retry_after(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox, password="wrong", login_retry_after=300)])
    url = base(server, "/iics/saas/api/v2/agent")
    for _ in range(5):
        async with http.get(url) as resp:
            assert resp.status == 502
            assert resp.headers["X-Auth-Proxy-Error"] == "login_rejected"
            error = (await resp.json())["error"]
            assert "UI_10000" in error["message"]
            assert "User name or password is not valid" in error["message"]
            assert "wrong" not in error["message"]
    assert v2_logins(sandbox) == 1
    async with http.get(base(server, "/-/sessions")) as resp:
        status = (await resp.json())["iics"]
        assert status["state"] == "rejected"
        assert "UI_10000" in status["last_error"]
    clock.advance(301)
    async with http.get(url) as resp:
        assert resp.status == 502
    assert v2_logins(sandbox) == 2


async def test_failed_logins_back_off_exponentially_with_retry_after(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    sandbox.state.login_status_override = 500
    server = await make_proxy(routes=[iics_route(sandbox)])
    url = base(server, "/iics/saas/api/v2/agent")

    async def attempt() -> tuple[int, str, str | None]:
        async with http.get(url) as resp:
            error = resp.headers.get("X-Auth-Proxy-Error", "")
            return resp.status, error, resp.headers.get("Retry-After")

    assert await attempt() == (502, "login_failed", None)
    assert await attempt() == (503, "login_backoff", "1")
    clock.advance(1.1)
    assert await attempt() == (502, "login_failed", None)
    assert await attempt() == (503, "login_backoff", "2")
    clock.advance(2.1)
    assert await attempt() == (502, "login_failed", None)
    assert await attempt() == (503, "login_backoff", "4")
    assert v2_logins(sandbox) == 3
    sandbox.state.login_status_override = None
    clock.advance(4.1)
    status, _, _ = await attempt()
    assert status == 200


async def test_backoff_is_capped_at_sixty_seconds() -> None:
    async def execute(request: LoginRequest) -> LoginResponse:
        return LoginResponse(500, {}, b"", request.url)

    clock = ManualClock()
    sessions = RouteSessions(
        "r",
        SlowFlow(),
        execute,
        clock=clock,
        idle_timeout=None,
        refresh_margin=0,
        login_retry_after=300,
    )
    waits = []
    for _ in range(9):
        with pytest.raises(LoginFailed):
            await sessions.acquire()
        with pytest.raises(LoginBackoff) as backoff:
            await sessions.acquire()
        assert backoff.value.retry_after is not None
        waits.append(round(backoff.value.retry_after))
        clock.advance(backoff.value.retry_after + 0.01)
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60]


async def test_non_json_login_answer_is_login_failed(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    sandbox.state.login_non_json = True
    server = await make_proxy(routes=[iics_route(sandbox)])
    async with http.get(base(server, "/iics/saas/api/v2/agent")) as resp:
        assert resp.status == 502
        error = (await resp.json())["error"]
        assert error["code"] == "login_failed"
        assert "not JSON" in error["message"]


# ---------------------------------------------------------------- SSRF guard


@pytest.fixture
def trap(upstream: Upstream) -> Iterator[Upstream]:
    """A host that must never be contacted unless the route trusts it."""
    yield upstream


async def test_untrusted_server_url_is_refused_without_contacting_it(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, trap: Upstream, logs
) -> None:
    # "localhost" is neither the login host (127.0.0.1) nor a subdomain of it.
    sandbox.state.server_url_override = f"http://localhost:{trap.port}/saas"
    server = await make_proxy(routes=[iics_route(sandbox)])
    async with http.get(base(server, "/iics/saas/api/v2/agent")) as resp:
        assert resp.status == 502
        assert resp.headers["X-Auth-Proxy-Error"] == "untrusted_upstream"
        assert "localhost" in (await resp.json())["error"]["message"]
    assert trap.seen == []
    assert any(e.get("code") == "untrusted_upstream" for e in logs.events("login_failed"))


async def test_allowed_hosts_lets_the_route_follow_server_url(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, trap: Upstream
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response({"session": request.headers.get("icSessionId")})

    trap.handler = handler
    sandbox.state.server_url_override = f"http://localhost:{trap.port}/saas"
    server = await make_proxy(routes=[iics_route(sandbox, allowed_hosts=["localhost"])])
    status, body, _ = await fetch(http, "GET", base(server, "/iics/saas/api/v2/agent"))
    assert status == 200
    assert isinstance(body, dict) and body["session"] in sandbox.state.iics_sessions

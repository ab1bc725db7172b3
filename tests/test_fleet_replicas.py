"""One login for the whole fleet: two replicas (``auth-proxy serve`` processes on ports of
their own), each with ``workers: 2``, sharing a real redis-server.

Whatever the load, the vendor (the sandbox, whose journal counts every login call) sees
one login per set of credentials; a rejection stops every process; a 401 storm ends in
one re-login; a dead lease holder delays the next login by the lease TTL only; and with
Redis down the fleet keeps serving with the sessions it holds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from fleet_support import (
    AGENT,
    Fleet,
    admin_json,
    answered_by,
    burst,
    logins,
    redis_store,
    session_ids,
    stopped,
)
from helpers import wait_for
from store_support import RedisServer

from proxy.sandbox import Sandbox

pytestmark = pytest.mark.timeout(180)

OK = (200, "")
REJECTED = (502, "login_rejected")


@pytest.fixture
async def fleet(
    sandbox: Sandbox,
    serve_process,
    tmp_path: Path,
    unused_tcp_port_factory: Callable[[], int],
) -> AsyncIterator[Fleet]:
    yield Fleet(sandbox, serve_process, tmp_path, unused_tcp_port_factory)


async def test_a_cold_stampede_over_two_replicas_of_two_workers_logs_in_once(
    fleet: Fleet, sandbox: Sandbox, redis_server: RedisServer
) -> None:
    sandbox.state.login_delay = 0.5  # the login is still in flight when all requests arrive
    await fleet.start(redis_store(redis_server))
    assert await burst(fleet.urls(AGENT), 200) == [OK] * 200
    assert logins(sandbox) == 1
    assert len(session_ids(sandbox)) == 1
    assert answered_by(fleet) == {(0, 0), (0, 1), (1, 0), (1, 1)}  # all four processes served


async def test_a_wrong_password_is_sent_once_by_the_whole_fleet(
    fleet: Fleet, sandbox: Sandbox, redis_server: RedisServer
) -> None:
    sandbox.state.login_delay = 0.2
    await fleet.start(redis_store(redis_server), password="wrong")
    assert await burst(fleet.urls(AGENT), 200) == [REJECTED] * 200
    # Then ten seconds of traffic: nobody tries again (login_retry_after is 300 s).
    deadline = time.monotonic() + 10
    for _ in range(100):
        if time.monotonic() > deadline:
            break
        assert await burst(fleet.urls(AGENT), 20) == [REJECTED] * 20
    assert logins(sandbox) == 1

    # The account's password becomes "wrong"; an operator clears the rejection on one
    # replica, and the whole fleet logs in, once.
    sandbox.state.iics_users["demo"].password = "wrong"
    status, body = await admin_json(fleet.replicas[0].url("/-/sessions/iics/clear"), "POST")
    assert (status, body["lockout"]) == (200, True)
    assert await burst(fleet.urls(AGENT), 100) == [OK] * 100
    assert logins(sandbox) == 2


async def test_a_failed_login_backs_the_whole_fleet_off(
    fleet: Fleet, sandbox: Sandbox, redis_server: RedisServer
) -> None:
    sandbox.state.login_status_override = 503
    sandbox.state.login_delay = 0.2
    await fleet.start(redis_store(redis_server))
    results = await burst(fleet.urls(AGENT), 100)
    assert set(results) <= {(502, "login_failed"), (503, "login_backoff")}
    assert logins(sandbox) == 1  # the backoff (1 s, then 2, 4...) is shared


async def test_a_401_storm_across_replicas_ends_in_one_relogin(
    fleet: Fleet, sandbox: Sandbox, redis_server: RedisServer
) -> None:
    await fleet.start(redis_store(redis_server))
    assert await burst(fleet.urls(AGENT), 40) == [OK] * 40
    assert logins(sandbox) == 1
    sandbox.state.expire_all_sessions()  # every process now holds a dead session
    sandbox.state.login_delay = 0.3
    assert await burst(fleet.urls(AGENT), 200) == [OK] * 200  # replayed after the re-login
    assert logins(sandbox) == 2


async def test_a_login_slower_than_the_lease_ttl_is_still_one_login(
    fleet: Fleet, sandbox: Sandbox, redis_server: RedisServer
) -> None:
    sandbox.state.login_delay = 3.0  # three lease TTLs: the holder must keep renewing
    await fleet.start(redis_store(redis_server, lease_ttl=1))
    assert await burst(fleet.urls(AGENT), 200) == [OK] * 200
    assert logins(sandbox) == 1


async def test_killing_the_lease_holder_mid_login_lets_exactly_one_other_log_in_after_the_ttl(
    fleet: Fleet, sandbox: Sandbox, redis_server: RedisServer
) -> None:
    ttl = 3.0
    # The first login hangs at the vendor, long enough for the test to kill its process
    # (and short enough that the sandbox's hung handler does not delay the teardown).
    sandbox.state.login_delay = 2 * ttl
    await fleet.start(redis_store(redis_server, lease_ttl=ttl))
    waiting = asyncio.create_task(burst(fleet.urls(AGENT), 40))
    await wait_for(lambda: logins(sandbox) == 1, timeout=20, what="the first login")
    holder = None
    for _ in range(100):
        _, sessions = await admin_json(fleet.replicas[1].url("/-/sessions"))
        holder = sessions["iics"]["login_lease"]
        if holder is not None:
            break
        await asyncio.sleep(0.05)
    assert holder is not None, "nobody holds the login lease"
    sandbox.state.login_delay = 0
    os.kill(holder["pid"], signal.SIGKILL)
    killed = time.monotonic()
    await wait_for(lambda: logins(sandbox) == 2, timeout=20, what="the next login")
    # The holder renewed its lease every ttl/3 until it died: the lease outlived it by at
    # least two thirds of the TTL, and nobody logged in before that.
    assert time.monotonic() - killed >= ttl * 2 / 3 - 0.1
    results = await waiting  # those on the killed process broke off; none logged in again
    assert OK in results
    assert await burst(fleet.urls(AGENT), 40) == [OK] * 40
    assert logins(sandbox) == 2


async def test_with_redis_down_the_fleet_serves_its_sessions_and_logs_in_alone(
    fleet: Fleet, sandbox: Sandbox, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "redis-outage")
    server.directory.mkdir()
    server.start()
    try:
        await fleet.start(redis_store(server))
        assert await burst(fleet.urls(AGENT), 40) == [OK] * 40
        async with stopped(server):
            deadline = time.monotonic() + 3
            for _ in range(30):  # live sessions keep serving, store or no store
                if time.monotonic() > deadline:
                    break
                assert await burst(fleet.urls(AGENT), 20) == [OK] * 20
            # A login is needed now: each process logs in by itself, and says so.
            sandbox.state.expire_all_sessions()
            assert await burst(fleet.urls(AGENT), 40) == [OK] * 40
            assert fleet.events("session_store_unavailable")
            assert logins(sandbox) <= 1 + 4  # at most one per process
        # Redis is back: the processes reconnect by themselves.
        deadline = time.monotonic() + 30
        for _ in range(300):
            if fleet.events("session_store_recovered") or time.monotonic() > deadline:
                break
            assert await burst(fleet.urls(AGENT), 10) == [OK] * 10
            await asyncio.sleep(0.2)
        assert fleet.events("session_store_recovered")
        assert await burst(fleet.urls(AGENT), 40) == [OK] * 40
    finally:
        server.stop()

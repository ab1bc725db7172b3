"""Sessions kept in a persistent store (``local`` SQLite, ``redis``): keyed by credentials,
not by route; surviving restarts and renames; never reused after the credentials
change; logged out only on purpose; and never written in clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fleet_support import (
    AGENT,
    NON_SIMPLE,
    local_store,
    logins,
    logouts,
    redis_store,
    session_ids,
)
from helpers import base, iics_route, run_cli, wait_for, write_config
from store_support import RedisServer

from proxy.config import parse_config
from proxy.sandbox import Sandbox
from proxy.server.app import ProxyServer


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as resp:
        await resp.read()
        return resp.status, resp.headers.get("X-Auth-Proxy-Error", "")


async def post(http: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any]:
    async with http.post(url, **kw) as resp:
        return resp.status, await resp.json()


async def sessions_of(http: aiohttp.ClientSession, server_url: str) -> dict[str, Any]:
    async with http.get(f"{server_url}/-/sessions") as resp:
        data: dict[str, Any] = await resp.json()
        return data


def calls(sandbox: Sandbox) -> list[Any]:
    """The proxied calls the vendor saw (not logins, not logouts)."""
    return sandbox.state.requests_to(AGENT.removeprefix("/iics"))


def reconfigured(server: ProxyServer, routes: list[dict[str, Any]], **top: Any) -> Any:
    data = {"listen": {"host": "127.0.0.1", "port": 0}, **top, "routes": routes}
    return parse_config(data)


# ---------------------------------------------------------------- keyed by credentials


async def test_two_routes_with_one_account_share_one_session_and_a_rename_keeps_it(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, tmp_path: Path, logs: Any
) -> None:
    store = local_store(tmp_path)
    routes = [iics_route(sandbox), iics_route(sandbox, name="second", prefix="/second")]
    server = await make_proxy(routes=routes, session_store=store)
    assert await get(http, base(server, AGENT)) == (200, "")
    assert await get(http, base(server, "/second/saas/api/v2/agent")) == (200, "")
    assert logins(sandbox) == 1
    assert len(session_ids(sandbox)) == 1

    # Renamed (and one of the two dropped): same account, same session, nobody logged out.
    renamed = [iics_route(sandbox, name="renamed", prefix="/renamed")]
    server.reload(reconfigured(server, renamed, session_store=store))
    assert await get(http, base(server, "/renamed/saas/api/v2/agent")) == (200, "")
    await wait_for(lambda: len(logs.events("session_released")) == 2, what="both released")
    assert {e["logout"] for e in logs.events("session_released")} == {False}
    assert (logins(sandbox), logouts(sandbox), len(session_ids(sandbox))) == (1, 0, 1)
    entry = (await sessions_of(http, base(server)))["renamed"]
    assert (entry["state"], entry["store"]) == ("active", "local")


async def test_a_reload_with_a_changed_password_logs_in_anew_and_never_uses_the_old_session(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    store = local_store(tmp_path)
    server = await make_proxy(routes=[iics_route(sandbox)], session_store=store)
    assert await get(http, base(server, AGENT)) == (200, "")
    (old,) = session_ids(sandbox)
    sandbox.state.iics_users["demo"].password = "new-password"  # the old session lives on
    seen = len(calls(sandbox))

    new_routes = [iics_route(sandbox, password="new-password")]
    server.reload(reconfigured(server, new_routes, session_store=store))
    for _ in range(3):
        assert await get(http, base(server, AGENT)) == (200, "")
    after = {r.headers["icSessionId"] for r in calls(sandbox)[seen:]}
    assert old not in after and len(after) == 1
    assert logins(sandbox) == 2
    # The old session was this route's alone: the reload logged it out.
    await wait_for(lambda: logouts(sandbox) == 1, what="the old session's logout")


async def test_a_rotated_secret_file_takes_effect_at_the_reload_without_the_old_session(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text("demo-password\n")
    store = local_store(tmp_path)
    routes = [iics_route(sandbox, password={"file": str(secret)})]
    server = await make_proxy(routes=routes, session_store=store)
    assert await get(http, base(server, AGENT)) == (200, "")
    (old,) = session_ids(sandbox)
    sandbox.state.iics_users["demo"].password = "rotated"
    secret.write_text("rotated\n")
    seen = len(calls(sandbox))
    server.reload(reconfigured(server, routes, session_store=store))  # same config text
    assert await get(http, base(server, AGENT)) == (200, "")
    after = {r.headers["icSessionId"] for r in calls(sandbox)[seen:]}
    assert old not in after
    assert logins(sandbox) == 2


async def test_a_rejection_is_tied_to_the_credentials_not_the_route(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    store = local_store(tmp_path)
    routes = [
        iics_route(sandbox, password="wrong"),
        iics_route(sandbox, name="same", prefix="/same", password="wrong"),
    ]
    server = await make_proxy(routes=routes, session_store=store)
    assert await get(http, base(server, AGENT)) == (502, "login_rejected")
    assert await get(http, base(server, "/same/saas/api/v2/agent")) == (502, "login_rejected")
    assert logins(sandbox) == 1  # the second route has the same account: not tried again
    fixed = [iics_route(sandbox), routes[1]]
    server.reload(reconfigured(server, fixed, session_store=store))
    assert await get(http, base(server, AGENT)) == (200, "")
    assert await get(http, base(server, "/same/saas/api/v2/agent")) == (502, "login_rejected")
    assert logins(sandbox) == 2


# ---------------------------------------------------------------- restarts and logout


async def wait_exit(proc: subprocess.Popen[bytes]) -> None:
    assert await asyncio.to_thread(proc.wait, 20) == 0


async def test_a_restart_with_the_local_store_logs_in_zero_times_and_logs_nothing_out(
    sandbox: Sandbox, serve_process, tmp_path: Path, unused_tcp_port: int
) -> None:
    config = tmp_path / "config.yaml"
    listen = {"host": "127.0.0.1", "port": unused_tcp_port}
    write_config(config, [iics_route(sandbox)], listen=listen, session_store=local_store(tmp_path))
    async with aiohttp.ClientSession() as http:
        first = await serve_process(config, unused_tcp_port)
        assert await get(http, first.url(AGENT)) == (200, "")
        assert (await sessions_of(http, first.url("")))["iics"]["source"] == "login"
        first.proc.send_signal(signal.SIGTERM)
        await first.finish()
        assert logouts(sandbox) == 0  # stopping never ends a stored session

        second = await serve_process(config, unused_tcp_port)
        assert await get(http, second.url(AGENT)) == (200, "")
        entry = (await sessions_of(http, second.url("")))["iics"]
        assert (entry["state"], entry["source"]) == ("active", "restart")
        second.proc.send_signal(signal.SIGTERM)
        await second.finish()
    assert (logins(sandbox), logouts(sandbox), len(session_ids(sandbox))) == (1, 0, 1)


async def test_with_the_memory_store_shutdown_still_logs_out(
    sandbox: Sandbox, serve_process, tmp_path: Path, unused_tcp_port: int
) -> None:
    config = tmp_path / "config.yaml"
    listen = {"host": "127.0.0.1", "port": unused_tcp_port}
    write_config(config, [iics_route(sandbox)], listen=listen, session_store={"type": "memory"})
    served = await serve_process(config, unused_tcp_port)
    async with aiohttp.ClientSession() as http:
        assert await get(http, served.url(AGENT)) == (200, "")
    served.proc.send_signal(signal.SIGTERM)
    await served.finish()
    assert logouts(sandbox) == 1


async def test_the_logout_endpoint_ends_the_stored_session_for_every_process(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    store = local_store(tmp_path)
    first = await make_proxy(routes=[iics_route(sandbox)], session_store=store)
    second = await make_proxy(routes=[iics_route(sandbox)], session_store=store)  # a worker
    assert await get(http, base(first, AGENT)) == (200, "")
    assert await get(http, base(second, AGENT)) == (200, "")
    assert logins(sandbox) == 1

    url = base(first, "/-/sessions/iics/logout")
    status, body = await post(http, url)  # a request any web page could send
    assert (status, body["error"]["code"]) == (403, "forbidden")
    async with http.get(url, headers=NON_SIMPLE) as resp:
        assert (resp.status, resp.headers["Allow"]) == (405, "POST")
    assert await post(http, url, headers=NON_SIMPLE) == (
        200,
        {"status": "logged_out", "route": "iics", "session": True},
    )
    assert logouts(sandbox) == 1
    assert sandbox.state.iics_sessions == {}
    # The other process's copy is dead at the vendor: one re-login, and the request passes.
    assert await get(http, base(second, AGENT)) == (200, "")
    assert await get(http, base(first, AGENT)) == (200, "")
    assert logins(sandbox) == 2
    status, body = await post(http, base(first, "/-/sessions/nope/logout"), headers=NON_SIMPLE)
    assert (status, body["error"]["code"]) == (404, "no_route")


async def test_the_logout_command_logs_out_in_the_running_proxy_or_from_the_store(
    sandbox: Sandbox, serve_process, tmp_path: Path, unused_tcp_port: int
) -> None:
    config = tmp_path / "config.yaml"
    listen = {"host": "127.0.0.1", "port": unused_tcp_port}
    routes = [iics_route(sandbox), iics_route(sandbox, name="other", prefix="/other")]
    write_config(config, routes, listen=listen, session_store=local_store(tmp_path))
    served = await serve_process(config, unused_tcp_port)
    async with aiohttp.ClientSession() as http:
        assert await get(http, served.url(AGENT)) == (200, "")
    result = await asyncio.to_thread(run_cli, "logout", "iics", "-c", str(config))
    assert (result.returncode, result.stdout) == (0, "iics: logged out\n"), result.stderr
    assert logouts(sandbox) == 1
    result = await asyncio.to_thread(run_cli, "logout", "nope", "-c", str(config))
    assert result.returncode == 2
    assert "unknown route nope (routes: iics, other)" in result.stderr

    async with aiohttp.ClientSession() as http:
        assert await get(http, served.url(AGENT)) == (200, "")
    served.proc.send_signal(signal.SIGTERM)
    await served.finish()
    assert (logins(sandbox), logouts(sandbox)) == (2, 1)

    # No proxy runs: the session waits in the store, and the command logs it out there.
    result = await asyncio.to_thread(run_cli, "logout", "-c", str(config))
    assert result.returncode == 0, result.stderr
    # One session, two routes: logged out once.
    assert result.stdout == "iics: logged out (stored session)\nother: no session to log out\n"
    assert logouts(sandbox) == 2
    result = await asyncio.to_thread(run_cli, "logout", "iics", "-c", str(config))
    assert (result.returncode, result.stdout) == (0, "iics: no session to log out\n")


# ---------------------------------------------------------------- encrypted at rest


async def test_no_session_id_reaches_the_local_stores_files(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    store = local_store(tmp_path)
    server = await make_proxy(routes=[iics_route(sandbox)], session_store=store)
    assert await get(http, base(server, AGENT)) == (200, "")
    (session_id,) = session_ids(sandbox)
    files = [p for p in (tmp_path / "state").iterdir() if p.is_file()]
    assert any(p.name.startswith("sessions.db") for p in files)
    for path in files:
        data = path.read_bytes()
        assert session_id.encode() not in data, path.name
        assert b"demo-password" not in data, path.name


async def test_no_session_id_reaches_redis(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    store = redis_store(redis_server)
    server = await make_proxy(routes=[iics_route(sandbox)], session_store=store)
    assert await get(http, base(server, AGENT)) == (200, "")
    (session_id,) = session_ids(sandbox)
    client = redis_server.client()
    with contextlib.closing(client):
        keys = list(client.scan_iter(match=f"{store['key_prefix']}*"))
        assert keys
        for key in keys:
            dumped = client.dump(key)
            assert isinstance(dumped, bytes)
            assert session_id.encode() not in dumped and b"demo-password" not in dumped


async def test_redis_unreachable_at_start_up_is_not_an_error(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, logs: Any
) -> None:
    closed = {"type": "redis", "url": "redis://127.0.0.1:1/0", "key": "k" * 32}
    server = await make_proxy(routes=[iics_route(sandbox)], session_store=closed)
    assert await get(http, base(server, AGENT)) == (200, "")  # logged in alone, and said so
    assert logs.events("session_store_unavailable")
    async with http.get(base(server, "/-/metrics")) as resp:
        text = await resp.text()
    assert 'auth_proxy_store_fallbacks_total{route="iics"} 1.0' in text


# ---------------------------------------------------------------- visibility


async def test_sessions_and_metrics_show_the_store_and_where_each_session_came_from(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    store = redis_store(redis_server)
    first = await make_proxy(routes=[iics_route(sandbox)], session_store=store)
    second = await make_proxy(routes=[iics_route(sandbox)], session_store=store)
    assert await get(http, base(first, AGENT)) == (200, "")
    assert await get(http, base(second, AGENT)) == (200, "")
    here = (await sessions_of(http, base(first)))["iics"]
    there = (await sessions_of(http, base(second)))["iics"]
    assert (here["store"], here["source"], here["login_lease"]) == ("redis", "login", None)
    # Both servers run in this test's process: the session came from "this process".
    assert there["source"] == "login"
    assert here["origin"] == there["origin"]
    async with http.get(base(second, "/-/metrics")) as resp:
        text = await resp.text()
    assert 'auth_proxy_session_sources_total{route="iics",source="login"} 1.0' in text
    assert 'auth_proxy_store_operations_total{op="get",result="ok"}' in text
    assert "auth_proxy_store_operation_seconds_bucket" in text
    assert json.dumps(here)  # nothing in it that is not JSON


def store_ops(server: ProxyServer, op: str) -> float:
    value = server.metrics.registry.get_sample_value(
        "auth_proxy_store_operations_total", {"op": op, "result": "ok"}
    )
    return value or 0.0


@pytest.mark.parametrize("kind", ["local", "redis"])
async def test_one_process_keeping_the_session_busy_keeps_it_alive_for_the_others(
    sandbox: Sandbox,
    make_proxy,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    redis_server: RedisServer,
    clock: Any,
    kind: str,
) -> None:
    store = local_store(tmp_path) if kind == "local" else redis_store(redis_server)
    busy = await make_proxy(routes=[iics_route(sandbox)], session_store=store)
    idle = await make_proxy(routes=[iics_route(sandbox)], session_store=store)
    assert await get(http, base(busy, AGENT)) == (200, "")
    assert await get(http, base(idle, AGENT)) == (200, "")
    # 40 minutes of use through one process only; the session's idle timeout is 30.
    for step in range(1, 5):
        clock.advance(600)
        assert await get(http, base(busy, AGENT)) == (200, "")
        await wait_for(lambda n=step: store_ops(busy, "touch") >= n, what="the write-back")
    # The other process's own copy looks idle for 40 minutes; the store says otherwise.
    assert await get(http, base(idle, AGENT)) == (200, "")
    assert logins(sandbox) == 1
    assert len(session_ids(sandbox)) == 1

"""Reloads and login lockouts: a reload never re-sends credentials the vendor rejected.

A reload lifts a route's ``login_rejected`` lockout only when its credentials changed
(the account settings, or what a ``{file}``/``{env}`` source yields); an operator lifts
it explicitly with ``POST /-/sessions/<route>/clear`` or ``auth-proxy clear ROUTE``.
Every vendor-side count here is the sandbox's own journal of login calls.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import (
    Served,
    ServeRoutes,
    base,
    fetch,
    iics_route,
    non_loopback_address,
    outcome,
    run_cli,
    v2_logins,
    wait_for,
)

from proxy.sandbox import Sandbox

AGENT = "/iics/saas/api/v2/agent"
CLEAR = "/-/sessions/iics/clear"
NON_SIMPLE = {"X-Auth-Proxy": "1"}
_request_ids = itertools.count()


async def sighup(served: Served, workers: int = 1) -> None:
    """Send SIGHUP and wait until every worker has logged the reload."""
    before = served.count("config_reloaded")
    served.proc.send_signal(signal.SIGHUP)
    await wait_for(
        lambda: served.count("config_reloaded") == before + workers, what="config_reloaded"
    )


async def post(http: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any]:
    status, body, _ = await fetch(http, "POST", url, **kw)
    return status, body


def password_file(tmp_path: Path, value: str) -> Path:
    path = tmp_path / "password"
    path.write_text(value + "\n")
    return path


# ---------------------------------------------------------------- reload (a real process)


async def test_reloads_never_resend_rejected_credentials(
    sandbox: Sandbox, serve_routes: ServeRoutes, tmp_path: Path
) -> None:
    secret = password_file(tmp_path, "wrong")
    served = await serve_routes([iics_route(sandbox, password={"file": str(secret)})])
    url = served.url(AGENT)
    assert await outcome(url) == (502, "login_rejected")
    for _ in range(20):  # a ConfigMap watcher that reloads every minute
        await sighup(served)
        assert await outcome(url) == (502, "login_rejected")
    assert v2_logins(sandbox) == 1

    # Other (still wrong) credentials are new: tried once, then locked out in turn.
    secret.write_text("also-wrong\n")
    await sighup(served)
    assert await outcome(url) == (502, "login_rejected")
    await sighup(served)
    assert await outcome(url) == (502, "login_rejected")
    assert v2_logins(sandbox) == 2

    # The right password lands in the file; the reload makes the proxy read it.
    secret.write_text("demo-password\n")
    assert await outcome(url) == (502, "login_rejected")  # not before the reload
    await sighup(served)
    assert await outcome(url) == (200, "")
    assert v2_logins(sandbox) == 3


async def test_a_tuning_change_keeps_the_lockout(
    sandbox: Sandbox, serve_routes: ServeRoutes
) -> None:
    served = await serve_routes([iics_route(sandbox, password="wrong")])
    assert await outcome(served.url(AGENT)) == (502, "login_rejected")

    tuned = iics_route(sandbox, password="wrong", idle_timeout=900, refresh_margin=60)
    served.rewrite([tuned])
    await sighup(served)
    assert await outcome(served.url(AGENT)) == (502, "login_rejected")
    assert v2_logins(sandbox) == 1

    served.rewrite([iics_route(sandbox, password="demo-password")])
    await sighup(served)
    assert await outcome(served.url(AGENT)) == (200, "")
    assert v2_logins(sandbox) == 2


async def test_a_command_secret_is_not_run_to_compare_and_only_its_text_counts(
    sandbox: Sandbox, serve_routes: ServeRoutes, tmp_path: Path
) -> None:
    # The command might print a single-use token: a reload must not run it.
    runs = tmp_path / "runs"

    def route(password: str) -> dict[str, Any]:
        return iics_route(sandbox, password={"command": f"echo x >> {runs}; echo {password}"})

    served = await serve_routes([route("wrong")])
    assert await outcome(served.url(AGENT)) == (502, "login_rejected")
    for _ in range(5):
        await sighup(served)
        assert await outcome(served.url(AGENT)) == (502, "login_rejected")
    assert (v2_logins(sandbox), runs.read_text().count("x")) == (1, 1)

    served.rewrite([route("demo-password")])
    await sighup(served)
    assert await outcome(served.url(AGENT)) == (200, "")
    assert (v2_logins(sandbox), runs.read_text().count("x")) == (2, 2)


# ---------------------------------------------------------------- the clear endpoint


async def test_clear_lifts_one_routes_lockout(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(
        routes=[
            iics_route(sandbox, password="wrong"),
            iics_route(sandbox, name="other", prefix="/other", password="wrong"),
        ]
    )
    assert await outcome(base(server, AGENT)) == (502, "login_rejected")
    assert await outcome(base(server, "/other/saas/api/v2/agent")) == (502, "login_rejected")
    assert v2_logins(sandbox) == 2

    assert await post(http, base(server, CLEAR), headers=NON_SIMPLE) == (
        200,
        {"status": "cleared", "route": "iics", "lockout": True},
    )
    async with http.get(base(server, "/-/sessions")) as resp:
        states = {name: entry["state"] for name, entry in (await resp.json()).items()}
    assert states == {"iics": "none", "other": "rejected"}
    assert await outcome(base(server, AGENT)) == (502, "login_rejected")  # asked once more
    assert await outcome(base(server, "/other/saas/api/v2/agent")) == (502, "login_rejected")
    assert v2_logins(sandbox) == 3

    status, body = await post(http, base(server, CLEAR), headers=NON_SIMPLE)
    assert (status, body["lockout"]) == (200, True)
    assert await post(http, base(server, CLEAR), headers=NON_SIMPLE) == (
        200,
        {"status": "cleared", "route": "iics", "lockout": False},  # nothing left to lift
    )


async def test_clear_needs_a_request_no_web_page_can_send(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox, password="wrong")])
    assert await outcome(base(server, AGENT)) == (502, "login_rejected")
    url = base(server, CLEAR)
    # What an HTML form on another site can send: a simple POST.
    form = {
        "data": "route=iics",
        "headers": {
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": "https://evil.example",
        },
    }
    status, body = await post(http, url, **form)
    assert (status, body["error"]["code"]) == (403, "forbidden")
    for simple in ({}, {"headers": {"Content-Type": "text/plain"}}):
        status, body = await post(http, url, **simple)
        assert (status, body["error"]["code"]) == (403, "forbidden")
        assert "X-Auth-Proxy: 1" in body["error"]["message"]
    async with http.get(url, headers=NON_SIMPLE) as resp:
        assert (resp.status, resp.headers["Allow"]) == (405, "POST")
    status, body = await post(http, base(server, "/-/sessions/nope/clear"), headers=NON_SIMPLE)
    assert (status, body["error"]["code"]) == (404, "no_route")
    assert await outcome(base(server, AGENT)) == (502, "login_rejected")
    assert v2_logins(sandbox) == 1  # none of the above lifted the lockout


async def test_clear_is_refused_to_non_loopback_clients(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    server = await make_proxy(
        routes=[iics_route(sandbox, password="wrong")],
        listen={"host": "0.0.0.0", "port": 0},
        allow_unauthenticated=True,
    )
    assert await outcome(base(server, AGENT)) == (502, "login_rejected")
    status, body = await post(http, f"http://{address}:{server.port}{CLEAR}", headers=NON_SIMPLE)
    assert (status, body["error"]["code"]) == (403, "forbidden")
    assert await outcome(base(server, AGENT)) == (502, "login_rejected")
    assert v2_logins(sandbox) == 1


# ---------------------------------------------------------------- auth-proxy clear


async def test_clear_command_lifts_the_lockout_of_the_running_proxy(
    sandbox: Sandbox, serve_routes: ServeRoutes, tmp_path: Path
) -> None:
    secret = password_file(tmp_path, "wrong")
    served = await serve_routes(
        [iics_route(sandbox, password={"file": str(secret)})],
        client_auth={"tokens": ["cli-token", "other-token"]},
    )
    config = str(served.config)
    token = {"Proxy-Authorization": "Bearer cli-token"}
    assert await outcome(served.url(AGENT), **token) == (502, "login_rejected")
    secret.write_text("demo-password\n")  # fixed, but neither reloaded nor cleared yet
    assert await outcome(served.url(AGENT), **token) == (502, "login_rejected")

    result = await asyncio.to_thread(run_cli, "clear", "iics", "-c", config)
    assert (result.returncode, result.stdout) == (0, "iics: login lockout lifted\n")
    assert await outcome(served.url(AGENT), **token) == (200, "")
    assert v2_logins(sandbox) == 2
    result = await asyncio.to_thread(run_cli, "clear", "iics", "-c", config)
    assert (result.returncode, result.stdout) == (0, "iics: no login lockout to lift\n")

    result = await asyncio.to_thread(run_cli, "clear", "nope", "-c", config)
    assert result.returncode == 2
    assert "unknown route nope (routes: iics)" in result.stderr

    served.proc.send_signal(signal.SIGTERM)
    await served.finish()
    result = await asyncio.to_thread(run_cli, "clear", "iics", "-c", config)
    assert result.returncode == 1
    assert f"no proxy answers on 127.0.0.1:{served.port}" in result.stderr


# ---------------------------------------------------------------- workers: 2


def access_lines(served: Served, request_id: str) -> list[dict[str, Any]]:
    return [e for e in served.events() if e.get("request_id") == request_id]


async def answer_by_worker(served: Served, url: str) -> dict[int, set[tuple[int, str]]]:
    """Requests on fresh connections until both workers answered (at most 100): by worker."""
    out: dict[int, set[tuple[int, str]]] = {}
    for _ in range(100):
        request_id = f"reload-safety-{next(_request_ids)}"
        answer = await outcome(url, **{"X-Request-ID": request_id})
        await wait_for(
            lambda rid=request_id: bool(access_lines(served, rid)), what="the access line"
        )
        out.setdefault(access_lines(served, request_id)[0]["worker"], set()).add(answer)
        if len(out) == 2:
            return out
    raise AssertionError(f"only workers {sorted(out)} answered 100 requests")


async def test_with_workers_reloads_keep_and_clear_lifts_the_lockout_everywhere(
    sandbox: Sandbox, serve_routes: ServeRoutes, tmp_path: Path
) -> None:
    secret = password_file(tmp_path, "wrong")
    served = await serve_routes([iics_route(sandbox, password={"file": str(secret)})], workers=2)
    url = served.url(AGENT)
    rejected = {0: {(502, "login_rejected")}, 1: {(502, "login_rejected")}}
    assert await answer_by_worker(served, url) == rejected
    for _ in range(5):
        await sighup(served, workers=2)
        assert await answer_by_worker(served, url) == rejected
    assert v2_logins(sandbox) == 1

    secret.write_text("demo-password\n")  # fixed, but not reloaded: both stay locked out
    assert await answer_by_worker(served, url) == rejected
    async with aiohttp.ClientSession() as http:
        status, body = await post(http, served.url(CLEAR), headers=NON_SIMPLE)
    assert (status, body["lockout"]) == (200, True)
    assert await answer_by_worker(served, url) == {0: {(200, "")}, 1: {(200, "")}}
    assert v2_logins(sandbox) == 3  # the rejected one, then one per worker

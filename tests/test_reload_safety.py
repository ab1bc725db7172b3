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
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import ROOT, Served, base, iics_route, wait_for, write_config

from proxy.sandbox import Sandbox

AGENT = "/iics/saas/api/v2/agent"
V2_LOGIN = "iics-v2-login"
CLEAR = "/-/sessions/iics/clear"
NON_SIMPLE = {"X-Auth-Proxy": "1"}
_request_ids = itertools.count()


def logins(sandbox: Sandbox) -> int:
    return len(sandbox.state.logins_for(V2_LOGIN))


def count(served: Served, event: str) -> int:
    return sum(1 for e in served.events() if e["event"] == event)


async def sighup(served: Served, workers: int = 1) -> None:
    """Send SIGHUP and wait until every worker has logged the reload."""
    before = count(served, "config_reloaded")
    served.proc.send_signal(signal.SIGHUP)
    await wait_for(
        lambda: count(served, "config_reloaded") == before + workers, what="config_reloaded"
    )


async def get(url: str, **headers: str) -> tuple[int, str]:
    """Status and error code of one request on a fresh connection."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get(url, headers=headers) as resp,
    ):
        await resp.read()
        return resp.status, resp.headers.get("X-Auth-Proxy-Error", "")


async def start(
    serve_process: Any,
    path: Path,
    port: int,
    routes: list[dict[str, Any]],
    **top: Any,
) -> Served:
    write_config(path, routes, listen={"host": "127.0.0.1", "port": port}, **top)
    served = await serve_process(path, port)
    workers = top.get("workers", 1)
    await wait_for(lambda: count(served, "listening") == workers, what="every worker listening")
    return served


def password_file(tmp_path: Path, value: str) -> Path:
    path = tmp_path / "password"
    path.write_text(value + "\n")
    return path


# ---------------------------------------------------------------- reload (a real process)


async def test_reloads_never_resend_rejected_credentials(
    sandbox: Sandbox, serve_process, tmp_path: Path, unused_tcp_port: int
) -> None:
    secret = password_file(tmp_path, "wrong")
    route = iics_route(sandbox, password={"file": str(secret)})
    served = await start(serve_process, tmp_path / "config.yaml", unused_tcp_port, [route])
    url = served.url(AGENT)
    assert await get(url) == (502, "login_rejected")
    for _ in range(20):  # a ConfigMap watcher that reloads every minute
        await sighup(served)
        assert await get(url) == (502, "login_rejected")
    assert logins(sandbox) == 1

    # Other (still wrong) credentials are new: tried once, then locked out in turn.
    secret.write_text("also-wrong\n")
    await sighup(served)
    assert await get(url) == (502, "login_rejected")
    await sighup(served)
    assert await get(url) == (502, "login_rejected")
    assert logins(sandbox) == 2

    # The right password lands in the file; the reload makes the proxy read it.
    secret.write_text("demo-password\n")
    assert await get(url) == (502, "login_rejected")  # not before the reload
    await sighup(served)
    assert await get(url) == (200, "")
    assert logins(sandbox) == 3


async def test_a_tuning_change_keeps_the_lockout(
    sandbox: Sandbox, serve_process, tmp_path: Path, unused_tcp_port: int
) -> None:
    config = tmp_path / "config.yaml"
    listen = {"host": "127.0.0.1", "port": unused_tcp_port}
    served = await start(
        serve_process, config, unused_tcp_port, [iics_route(sandbox, password="wrong")]
    )
    assert await get(served.url(AGENT)) == (502, "login_rejected")

    tuned = iics_route(sandbox, password="wrong", idle_timeout=900, refresh_margin=60)
    write_config(config, [tuned], listen=listen)
    await sighup(served)
    assert await get(served.url(AGENT)) == (502, "login_rejected")
    assert logins(sandbox) == 1

    write_config(config, [iics_route(sandbox, password="demo-password")], listen=listen)
    await sighup(served)
    assert await get(served.url(AGENT)) == (200, "")
    assert logins(sandbox) == 2


async def test_a_command_secret_is_not_run_to_compare_and_only_its_text_counts(
    sandbox: Sandbox, serve_process, tmp_path: Path, unused_tcp_port: int
) -> None:
    # The command might print a single-use token: a reload must not run it.
    runs = tmp_path / "runs"
    config = tmp_path / "config.yaml"
    listen = {"host": "127.0.0.1", "port": unused_tcp_port}

    def route(password: str) -> dict[str, Any]:
        return iics_route(sandbox, password={"command": f"echo x >> {runs}; echo {password}"})

    served = await start(serve_process, config, unused_tcp_port, [route("wrong")])
    assert await get(served.url(AGENT)) == (502, "login_rejected")
    for _ in range(5):
        await sighup(served)
        assert await get(served.url(AGENT)) == (502, "login_rejected")
    assert (logins(sandbox), runs.read_text().count("x")) == (1, 1)

    write_config(config, [route("demo-password")], listen=listen)
    await sighup(served)
    assert await get(served.url(AGENT)) == (200, "")
    assert (logins(sandbox), runs.read_text().count("x")) == (2, 2)


# ---------------------------------------------------------------- the clear endpoint


async def post(http: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any]:
    async with http.post(url, **kw) as resp:
        return resp.status, await resp.json()


async def test_clear_lifts_one_routes_lockout(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(
        routes=[
            iics_route(sandbox, password="wrong"),
            iics_route(sandbox, name="other", prefix="/other", password="wrong"),
        ]
    )
    assert await get(base(server, AGENT)) == (502, "login_rejected")
    assert await get(base(server, "/other/saas/api/v2/agent")) == (502, "login_rejected")
    assert logins(sandbox) == 2

    assert await post(http, base(server, CLEAR), headers=NON_SIMPLE) == (
        200,
        {"status": "cleared", "route": "iics", "lockout": True},
    )
    async with http.get(base(server, "/-/sessions")) as resp:
        states = {name: entry["state"] for name, entry in (await resp.json()).items()}
    assert states == {"iics": "none", "other": "rejected"}
    assert await get(base(server, AGENT)) == (502, "login_rejected")  # asked once more
    assert await get(base(server, "/other/saas/api/v2/agent")) == (502, "login_rejected")
    assert logins(sandbox) == 3

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
    assert await get(base(server, AGENT)) == (502, "login_rejected")
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
    assert await get(base(server, AGENT)) == (502, "login_rejected")
    assert logins(sandbox) == 1  # none of the above lifted the lockout


def non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent; this only picks a source
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


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
    assert await get(base(server, AGENT)) == (502, "login_rejected")
    status, body = await post(http, f"http://{address}:{server.port}{CLEAR}", headers=NON_SIMPLE)
    assert (status, body["error"]["code"]) == (403, "forbidden")
    assert await get(base(server, AGENT)) == (502, "login_rejected")
    assert logins(sandbox) == 1


# ---------------------------------------------------------------- auth-proxy clear


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


async def test_clear_command_lifts_the_lockout_of_the_running_proxy(
    sandbox: Sandbox, serve_process, tmp_path: Path, unused_tcp_port: int
) -> None:
    secret = password_file(tmp_path, "wrong")
    config = tmp_path / "config.yaml"
    served = await start(
        serve_process,
        config,
        unused_tcp_port,
        [iics_route(sandbox, password={"file": str(secret)})],
        client_auth={"tokens": ["cli-token", "other-token"]},
    )
    token = {"Proxy-Authorization": "Bearer cli-token"}
    assert await get(served.url(AGENT), **token) == (502, "login_rejected")
    secret.write_text("demo-password\n")  # fixed, but neither reloaded nor cleared yet
    assert await get(served.url(AGENT), **token) == (502, "login_rejected")

    result = await asyncio.to_thread(run_cli, "clear", "iics", "-c", str(config))
    assert (result.returncode, result.stdout) == (0, "iics: login lockout lifted\n")
    assert await get(served.url(AGENT), **token) == (200, "")
    assert logins(sandbox) == 2
    result = await asyncio.to_thread(run_cli, "clear", "iics", "-c", str(config))
    assert (result.returncode, result.stdout) == (0, "iics: no login lockout to lift\n")

    result = await asyncio.to_thread(run_cli, "clear", "nope", "-c", str(config))
    assert result.returncode == 2
    assert "unknown route nope (routes: iics)" in result.stderr

    served.proc.send_signal(signal.SIGTERM)
    await served.finish()
    result = await asyncio.to_thread(run_cli, "clear", "iics", "-c", str(config))
    assert result.returncode == 1
    assert f"no proxy answers on 127.0.0.1:{unused_tcp_port}" in result.stderr


# ---------------------------------------------------------------- workers: 2


def access_lines(served: Served, request_id: str) -> list[dict[str, Any]]:
    return [e for e in served.events() if e.get("request_id") == request_id]


async def answer_by_worker(served: Served, url: str) -> dict[int, set[tuple[int, str]]]:
    """Requests on fresh connections until both workers answered (at most 100): by worker."""
    out: dict[int, set[tuple[int, str]]] = {}
    for _ in range(100):
        request_id = f"reload-safety-{next(_request_ids)}"
        answer = await get(url, **{"X-Request-ID": request_id})
        await wait_for(
            lambda rid=request_id: bool(access_lines(served, rid)), what="the access line"
        )
        out.setdefault(access_lines(served, request_id)[0]["worker"], set()).add(answer)
        if len(out) == 2:
            return out
    raise AssertionError(f"only workers {sorted(out)} answered 100 requests")


async def test_with_workers_reloads_keep_and_clear_lifts_the_lockout_everywhere(
    sandbox: Sandbox, serve_process, tmp_path: Path, unused_tcp_port: int
) -> None:
    secret = password_file(tmp_path, "wrong")
    served = await start(
        serve_process,
        tmp_path / "config.yaml",
        unused_tcp_port,
        [iics_route(sandbox, password={"file": str(secret)})],
        workers=2,
    )
    url = served.url(AGENT)
    rejected = {0: {(502, "login_rejected")}, 1: {(502, "login_rejected")}}
    assert await answer_by_worker(served, url) == rejected
    for _ in range(5):
        await sighup(served, workers=2)
        assert await answer_by_worker(served, url) == rejected
    assert logins(sandbox) == 1

    secret.write_text("demo-password\n")  # fixed, but not reloaded: both stay locked out
    assert await answer_by_worker(served, url) == rejected
    async with aiohttp.ClientSession() as http:
        status, body = await post(http, served.url(CLEAR), headers=NON_SIMPLE)
    assert (status, body["lockout"]) == (200, True)
    assert await answer_by_worker(served, url) == {0: {(200, "")}, 1: {(200, "")}}
    assert logins(sandbox) == 3  # the rejected one, then one per worker

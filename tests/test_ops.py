"""Operating the proxy (SPEC §8): admin endpoints, metrics, logs, reload, shutdown, checks."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from helpers import Upstream, base, iics_route, ivanti_key_route, wait_for, write_config
from prometheus_client.parser import text_string_to_metric_families

from proxy.config.load import load_config
from proxy.core.clock import ManualClock
from proxy.ops.logs import setup_logging
from proxy.sandbox import Sandbox
from proxy.server.app import ProxyServer

ROOT = Path(__file__).resolve().parent.parent
AGENT = "/saas/api/v2/agent"
LOGOUT = "/saas/api/v2/user/logout"
V2_LOGIN = "iics-v2-login"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: aiohttp.ClientSession, server: ProxyServer) -> Samples:
    async with http.get(base(server, "/-/metrics")) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def status_of(http: aiohttp.ClientSession, url: str, **kw: Any) -> int:
    async with http.get(url, **kw) as resp:
        await resp.read()
        return resp.status


def last_session_id(sandbox: Sandbox) -> str:
    return sandbox.state.requests_to(AGENT)[-1].headers["icSessionId"]


def logged_out(sandbox: Sandbox) -> set[str]:
    return {r.headers["icSessionId"] for r in sandbox.state.requests_to(LOGOUT)}


def login_count(sandbox: Sandbox) -> int:
    return len(sandbox.state.logins_for(V2_LOGIN))


# ---------------------------------------------------------------- admin endpoints


async def test_healthz_readyz_and_sessions_without_secrets(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    async with http.get(base(server, "/-/healthz")) as resp:
        assert (resp.status, await resp.json()) == (200, {"status": "ok"})
    async with http.get(base(server, "/-/readyz")) as resp:
        assert (resp.status, await resp.json()) == (200, {"status": "ready"})
    async with http.get(base(server, "/-/sessions")) as resp:
        assert (await resp.json())["iics"]["state"] == "none"

    assert await status_of(http, base(server, "/iics" + AGENT)) == 200
    async with http.get(base(server, "/-/sessions")) as resp:
        text = await resp.text()
    entry = json.loads(text)["iics"]
    assert entry["state"] == "active"
    assert entry["logged_in_at"].endswith("Z") and entry["expires_at"].endswith("Z")
    assert entry["last_error"] is None
    assert last_session_id(sandbox) not in text
    assert "demo-password" not in text


async def test_metrics_count_requests_logins_replays_and_sessions(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    bad = iics_route(sandbox, name="bad", prefix="/bad", password="wrong")
    server = await make_proxy(routes=[iics_route(sandbox), bad])

    before = await scrape(http, server)
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

    after = await scrape(http, server)
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
        await scrape(http, two), "auth_proxy_requests_total", route="iics", status="2xx"
    )
    assert counted == 0


# ---------------------------------------------------------------- logs


async def test_one_access_line_per_request_and_request_id_sent_upstream(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, logs
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    assert await status_of(http, base(server, "/iics" + AGENT + "?x=1")) == 200
    assert (
        await status_of(
            http, base(server, "/iics" + AGENT), headers={"X-Request-ID": "client-chosen-id"}
        )
        == 200
    )

    access = [e for e in logs.events("request") if e["route"] == "iics"]
    assert len(access) == 2
    first, second = access
    assert {"route", "method", "path", "status", "duration_ms", "upstream_ms", "replayed"} <= set(
        first
    )
    assert (first["method"], first["path"], first["status"], first["replayed"]) == (
        "GET",
        "/iics" + AGENT,
        200,
        False,
    )
    assert first["duration_ms"] >= first["upstream_ms"] > 0
    seen = sandbox.state.requests_to(AGENT)
    # Generated ids go upstream so the vendor's logs can be matched with ours ...
    assert seen[0].headers["X-Request-ID"] == first["request_id"]
    # ... and a client's own id is kept, once.
    assert seen[1].headers.getall("X-Request-ID") == ["client-chosen-id"]
    assert second["request_id"] == "client-chosen-id"


def test_console_format_is_for_humans() -> None:
    import structlog

    out = io.StringIO()
    setup_logging("info", "console", stream=out)
    structlog.get_logger("auth_proxy").info("login_ok", route="iics", password="hunter2")
    line = out.getvalue().strip()
    assert "login_ok" in line and "route=iics" in line
    assert "hunter2" not in line
    with pytest.raises(ValueError):
        json.loads(line)


async def test_login_rejection_failure_and_renewal_are_logged_with_reasons(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, logs, clock: ManualClock
) -> None:
    cdgc = {
        "name": "cdgc",
        "match": {"prefix": "/cdgc"},
        "auth": {
            "type": "idmc-jwt",
            "login_url": sandbox.urls.login,
            "username": "demo",
            "password": "demo-password",
            "upstream": sandbox.urls.cdgc,
        },
    }
    bad = iics_route(sandbox, name="bad", prefix="/bad", password="s3cret-wrong")
    server = await make_proxy(routes=[iics_route(sandbox), bad, cdgc])

    assert await status_of(http, base(server, "/bad" + AGENT)) == 502
    (rejected,) = logs.events("login_rejected")
    assert rejected["route"] == "bad" and rejected["retry_after"] == 300
    assert rejected["reason"]  # the vendor's code/text, never the password
    assert "s3cret-wrong" not in logs.text

    sandbox.state.login_status_override = 503
    assert await status_of(http, base(server, "/iics" + AGENT)) == 502
    (failed,) = logs.events("login_failed")
    assert failed["route"] == "iics" and failed["code"] == "login_failed"
    assert "503" in failed["reason"] and failed["backoff"] == 1.0
    sandbox.state.login_status_override = None

    clock.advance(2)
    assert await status_of(http, base(server, "/iics" + AGENT)) == 200
    (ok,) = [e for e in logs.events("login_ok") if e["route"] == "iics"]
    assert ok["upstream"] == sandbox.urls.pod

    assert await status_of(http, base(server, "/cdgc/data360/search/v1/assets")) == 200
    clock.advance(1700)  # the JWT is within its refresh margin: renewed without a login
    assert await status_of(http, base(server, "/cdgc/data360/search/v1/assets")) == 200
    await wait_for(lambda: bool(logs.events("session_renewed")), what="session_renewed")
    assert logs.events("session_renewed")[0]["route"] == "cdgc"


# ---------------------------------------------------------------- reload


FileProxy = Callable[[Path], Awaitable[ProxyServer]]


@pytest.fixture
async def file_proxy(clock: ManualClock) -> AsyncIterator[FileProxy]:
    """A started proxy that knows its config file, as ``auth-proxy serve -c FILE`` runs it."""
    servers: list[ProxyServer] = []

    async def factory(path: Path) -> ProxyServer:
        server = ProxyServer(load_config(path), clock=clock, config_path=path)
        await server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        await server.stop(drain_timeout=1)


async def post_reload(http: aiohttp.ClientSession, server: ProxyServer) -> tuple[int, Any]:
    async with http.post(base(server, "/-/reload"), headers={"X-Auth-Proxy": "1"}) as resp:
        return resp.status, await resp.json()


async def test_reload_keeps_unchanged_sessions_relogs_changed_and_logs_out_removed(
    sandbox: Sandbox, file_proxy: FileProxy, http: aiohttp.ClientSession, tmp_path: Path, logs
) -> None:
    path = tmp_path / "config.yaml"
    keep = iics_route(sandbox, name="keep", prefix="/keep")
    change = iics_route(sandbox, name="change", prefix="/change")
    gone = iics_route(sandbox, name="gone", prefix="/gone")
    write_config(path, [keep, change, gone])
    server = await file_proxy(path)
    sid: dict[str, str] = {}
    for name in ("keep", "change", "gone"):
        assert await status_of(http, base(server, f"/{name}{AGENT}")) == 200
        sid[name] = last_session_id(sandbox)
    assert login_count(sandbox) == 3

    changed = iics_route(sandbox, name="change", prefix="/change", idle_timeout=900)
    added = ivanti_key_route(sandbox, name="added", prefix="/added")
    # An editor's save: write a temporary file, rename it over the config.
    tmp = tmp_path / ".config.yaml.swp"
    write_config(tmp, [keep, changed, added])
    os.replace(tmp, path)

    status, body = await post_reload(http, server)
    assert status == 200
    assert body["status"] == "reloaded"
    assert (body["kept"], body["relogin"], body["added"], body["removed"]) == (
        ["keep"],
        ["change"],
        ["added"],
        ["gone"],
    )
    # The vendor saw the changed and the removed route's sessions logged out, not the kept one.
    await wait_for(lambda: logged_out(sandbox) == {sid["change"], sid["gone"]}, what="logouts")

    assert await status_of(http, base(server, f"/keep{AGENT}")) == 200
    assert last_session_id(sandbox) == sid["keep"]
    assert login_count(sandbox) == 3  # the kept route did not log in again
    assert await status_of(http, base(server, f"/change{AGENT}")) == 200
    assert login_count(sandbox) == 4
    assert await status_of(http, base(server, f"/gone{AGENT}")) == 404
    assert await status_of(http, base(server, "/added/api/odata/businessobject/incidents")) == 200
    (event,) = logs.events("config_reloaded")
    assert event["kept"] == ["keep"] and event["removed"] == ["gone"]


async def test_reload_follows_a_symlink_swap(
    sandbox: Sandbox, file_proxy: FileProxy, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    # Kubernetes mounts: config.yaml -> ..data/config.yaml, ..data -> a timestamped dir.
    first, second = tmp_path / "v1", tmp_path / "v2"
    first.mkdir()
    second.mkdir()
    write_config(first / "config.yaml", [iics_route(sandbox)])
    write_config(second / "config.yaml", [iics_route(sandbox), ivanti_key_route(sandbox)])
    (tmp_path / "..data").symlink_to(first)
    path = tmp_path / "config.yaml"
    path.symlink_to(tmp_path / "..data" / "config.yaml")
    server = await file_proxy(path)
    incidents = base(server, "/ivanti/api/odata/businessobject/incidents")
    assert await status_of(http, incidents) == 404

    (tmp_path / "..data_tmp").symlink_to(second)
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    status, body = await post_reload(http, server)
    assert (status, body["added"]) == (200, ["ivanti"])
    assert await status_of(http, incidents) == 200


async def test_invalid_config_is_refused_and_the_old_one_stays(
    sandbox: Sandbox, file_proxy: FileProxy, http: aiohttp.ClientSession, tmp_path: Path, logs
) -> None:
    path = tmp_path / "config.yaml"
    write_config(path, [iics_route(sandbox)])
    server = await file_proxy(path)
    assert await status_of(http, base(server, "/iics" + AGENT)) == 200

    broken = iics_route(sandbox)
    del broken["auth"]["password"]
    write_config(path, [broken])
    status, body = await post_reload(http, server)
    assert status == 400
    assert body["error"]["code"] == "bad_request"
    assert "routes[0].auth.password: required" in body["error"]["message"]
    (failed,) = logs.events("reload_failed")
    assert "routes[0].auth.password: required" in failed["error"]

    assert await status_of(http, base(server, "/iics" + AGENT)) == 200
    assert login_count(sandbox) == 1
    samples = await scrape(http, server)
    assert metric(samples, "auth_proxy_config_last_reload_success") == 0


async def test_a_reload_keeps_a_login_lockout_and_clear_lifts_it(
    sandbox: Sandbox, file_proxy: FileProxy, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    write_config(path, [iics_route(sandbox)])
    server = await file_proxy(path)
    sandbox.state.login_status_override = 401
    assert await status_of(http, base(server, "/iics" + AGENT)) == 502
    sandbox.state.login_status_override = None  # the operator fixed the account
    assert await status_of(http, base(server, "/iics" + AGENT)) == 502  # still locked out
    assert (await post_reload(http, server))[0] == 200  # the same credentials: still
    assert await status_of(http, base(server, "/iics" + AGENT)) == 502
    assert login_count(sandbox) == 1

    clear = base(server, "/-/sessions/iics/clear")
    async with http.post(clear, headers={"X-Auth-Proxy": "1"}) as resp:
        assert resp.status == 200
    assert await status_of(http, base(server, "/iics" + AGENT)) == 200
    assert login_count(sandbox) == 2


async def test_new_listeners_need_a_restart_and_the_rest_is_applied(
    sandbox: Sandbox,
    file_proxy: FileProxy,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    logs,
    unused_tcp_port: int,
) -> None:
    path = tmp_path / "config.yaml"
    write_config(path, [iics_route(sandbox)])
    server = await file_proxy(path)
    own_port = iics_route(sandbox, name="own", prefix="/x")
    own_port["match"] = {"listen": {"port": unused_tcp_port}}
    write_config(path, [iics_route(sandbox), own_port])
    status, body = await post_reload(http, server)
    assert (status, body["added"], body["restart_needed"]) == (200, ["own"], ["listeners"])
    assert logs.events("reload_needs_restart")[0]["settings"] == ["listeners"]
    with pytest.raises(aiohttp.ClientConnectionError):
        await status_of(http, f"http://127.0.0.1:{unused_tcp_port}{AGENT}")
    assert await status_of(http, base(server, "/iics" + AGENT)) == 200


async def test_reload_applies_new_client_tokens(
    sandbox: Sandbox, file_proxy: FileProxy, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    write_config(path, [iics_route(sandbox)], client_auth={"tokens": ["old-token"]})
    server = await file_proxy(path)
    old = {"Proxy-Authorization": "Bearer old-token"}
    new = {"Proxy-Authorization": "Bearer new-token"}
    assert await status_of(http, base(server, "/iics" + AGENT), headers=old) == 200

    write_config(path, [iics_route(sandbox)], client_auth={"tokens": ["new-token"]})
    async with http.post(base(server, "/-/reload"), headers={**old, "X-Auth-Proxy": "1"}) as resp:
        assert resp.status == 200
    assert await status_of(http, base(server, "/iics" + AGENT), headers=old) == 401
    assert await status_of(http, base(server, "/iics" + AGENT), headers=new) == 200


def non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent; this only picks a source
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


async def test_reload_is_refused_to_non_loopback_clients_and_needs_post(
    sandbox: Sandbox, clock: ManualClock, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    path = tmp_path / "config.yaml"
    listen = {"host": "0.0.0.0", "port": 0}
    write_config(path, [iics_route(sandbox)], listen=listen, allow_unauthenticated=True)
    server = ProxyServer(load_config(path), clock=clock, config_path=path)
    await server.start()
    try:
        async with http.post(f"http://{address}:{server.port}/-/reload", json={}) as resp:
            assert resp.status == 403
            assert resp.headers["X-Auth-Proxy-Error"] == "forbidden"
            assert (await resp.json())["error"]["code"] == "forbidden"
        async with http.get(base(server, "/-/reload")) as resp:
            assert (resp.status, resp.headers["Allow"]) == (405, "POST")
        assert (await post_reload(http, server))[0] == 200
    finally:
        await server.stop(drain_timeout=1)


# ---------------------------------------------------------------- shutdown


async def test_stop_drains_in_flight_refuses_new_and_logs_out(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    assert await status_of(http, base(server, "/iics" + AGENT)) == 200
    session_id = last_session_id(sandbox)
    slow = asyncio.create_task(status_of(http, base(server, "/iics/saas/api/v2/slow?seconds=1")))
    await wait_for(lambda: bool(sandbox.state.requests_to("/saas/api/v2/slow")), what="slow call")

    stopping = asyncio.create_task(server.stop(drain_timeout=10))
    await wait_for(lambda: server.draining, what="draining")
    async with aiohttp.ClientSession() as fresh:
        async with fresh.get(base(server, "/iics" + AGENT)) as resp:
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == "draining"
        assert await status_of(fresh, base(server, "/-/readyz")) == 503
        assert await status_of(fresh, base(server, "/-/healthz")) == 200
    assert len(sandbox.state.requests_to(AGENT)) == 1  # nothing new was forwarded
    assert not stopping.done()  # still draining the slow call

    assert await slow == 200
    await asyncio.wait_for(stopping, 10)
    assert logged_out(sandbox) == {session_id}
    with pytest.raises(aiohttp.ClientConnectionError):
        await status_of(http, base(server, "/-/healthz"))


async def test_drain_is_bounded_by_the_timeout(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession, logs
) -> None:
    release = asyncio.Event()

    async def never_answers(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response()

    upstream.handler = never_answers
    server = await make_proxy(routes=[upstream.route()])
    stuck = asyncio.create_task(status_of(http, base(server, "/up/stuck")))
    await wait_for(lambda: bool(upstream.seen), what="the request upstream")
    started = time.monotonic()
    await server.stop(drain_timeout=0.2)
    assert time.monotonic() - started < 5
    assert logs.events("drain_timeout")[0]["inflight"] == 1
    with pytest.raises(aiohttp.ClientError):
        await stuck
    release.set()


# ---------------------------------------------------------------- a real process


async def test_sighup_reloads_the_config_file(
    sandbox: Sandbox, serve_process, tmp_path: Path, unused_tcp_port: int
) -> None:
    path = tmp_path / "config.yaml"
    listen = {"host": "127.0.0.1", "port": unused_tcp_port}
    write_config(path, [iics_route(sandbox)], listen=listen)
    served = await serve_process(path, unused_tcp_port)
    incidents = served.url("/ivanti/api/odata/businessobject/incidents")
    async with aiohttp.ClientSession() as http:
        assert await status_of(http, served.url("/iics" + AGENT)) == 200
        assert await status_of(http, incidents) == 404

        write_config(path, [iics_route(sandbox), ivanti_key_route(sandbox)], listen=listen)
        served.proc.send_signal(signal.SIGHUP)
        await wait_for_status(http, incidents, 200)
        assert await status_of(http, served.url("/iics" + AGENT)) == 200
        assert login_count(sandbox) == 1  # the unchanged route kept its session

        path.write_text("routes: [\n")
        served.proc.send_signal(signal.SIGHUP)

        async def reload_failed() -> bool:
            samples = {
                s.name: s.value
                for f in text_string_to_metric_families(
                    await (await http.get(served.url("/-/metrics"))).text()
                )
                for s in f.samples
            }
            return samples["auth_proxy_config_last_reload_success"] == 0

        deadline = time.monotonic() + 10
        while not await reload_failed():
            assert time.monotonic() < deadline, "the failed reload was not reported"
            await asyncio.sleep(0.02)
        assert await status_of(http, incidents) == 200  # the old config stays
    served.proc.send_signal(signal.SIGTERM)
    events = await served.finish()
    names = [e["event"] for e in events]
    assert "config_reloaded" in names
    (failed,) = [e for e in events if e["event"] == "reload_failed"]
    assert "at line" in failed["error"]


async def wait_for_status(http: aiohttp.ClientSession, url: str, status: int) -> None:
    deadline = time.monotonic() + 10
    while await status_of(http, url) != status:
        assert time.monotonic() < deadline, f"{url} never answered {status}"
        await asyncio.sleep(0.02)


async def test_sigterm_drains_then_logs_out_and_exits_0(
    sandbox: Sandbox, serve_process, tmp_path: Path, unused_tcp_port: int
) -> None:
    path = tmp_path / "config.yaml"
    listen = {"host": "127.0.0.1", "port": unused_tcp_port}
    write_config(path, [iics_route(sandbox)], listen=listen)
    served = await serve_process(path, unused_tcp_port)
    async with aiohttp.ClientSession() as http, aiohttp.ClientSession() as other:
        assert await status_of(http, served.url("/iics" + AGENT)) == 200
        session_id = last_session_id(sandbox)
        slow = asyncio.create_task(status_of(http, served.url("/iics/saas/api/v2/slow?seconds=1")))
        await wait_for(lambda: bool(sandbox.state.requests_to("/saas/api/v2/slow")), what="slow")
        served.proc.send_signal(signal.SIGTERM)
        await wait_for_status(other, served.url("/-/readyz"), 503)
        assert await status_of(other, served.url("/iics" + AGENT)) == 503
        assert await slow == 200
    events = await served.finish()
    assert len(sandbox.state.requests_to(AGENT)) == 1
    assert logged_out(sandbox) == {session_id}
    names = [e["event"] for e in events]
    assert names.index("shutting_down") < names.index("logout") < names.index("stopped")
    statuses = [e["status"] for e in events if e["event"] == "request" and e["path"] != "/-/readyz"]
    assert sorted(statuses) == [200, 200, 503]


# ---------------------------------------------------------------- check --login


async def run_check(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "check",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


async def test_check_login_reports_each_route_and_logs_out(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    write_config(path, [iics_route(sandbox), ivanti_key_route(sandbox)])
    code, out, err = await run_check("-c", str(path), "--login")
    assert code == 0, err
    table = out[out.index("ROUTE") :].splitlines()
    assert table[0].split() == ["ROUTE", "TYPE", "UPSTREAM", "ORG", "SESSION", "EXPIRES"]
    iics = table[1].split()
    assert iics[:4] == ["iics", "iics-password", sandbox.urls.pod, "5Xq2jG0mLwKzYbPdRt7sUe"]
    assert ISO.fullmatch(iics[4])
    assert table[2].split() == ["ivanti", "ivanti-api-key", sandbox.urls.ivanti, "-", "never"]
    assert login_count(sandbox) == 1
    assert len(sandbox.state.requests_to(LOGOUT)) == 1  # the session it opened is closed
    assert "demo-password" not in out + err


async def test_check_login_names_failing_routes_and_exits_1(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    bad = iics_route(sandbox, name="bad", prefix="/bad", password="s3cret-wrong")
    write_config(path, [iics_route(sandbox), bad])
    code, out, err = await run_check("-c", str(path), "--login")
    assert code == 1
    assert "FAILED (login_rejected)" in out
    (line,) = err.strip().splitlines()
    assert line.startswith("auth-proxy: login failed for route bad: login_rejected: ")
    assert "s3cret-wrong" not in out + err
    assert re.search(r"^iics\s+iics-password\s+http", out, re.M)


async def test_check_login_only_the_named_routes_and_unknown_names_exit_2(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    write_config(path, [iics_route(sandbox), ivanti_key_route(sandbox)])
    code, out, err = await run_check("-c", str(path), "--login", "ivanti")
    assert code == 0, err
    assert "ivanti-api-key" in out[out.index("ROUTE") :]
    assert "iics-password" not in out[out.index("ROUTE") :]
    assert login_count(sandbox) == 0

    code, _, err = await run_check("-c", str(path), "--login", "ivanti", "nosuch")
    assert code == 2
    assert "unknown route nosuch" in err
    assert login_count(sandbox) == 0

"""Reloading the config (``POST /-/reload``, SIGHUP): unchanged routes keep their
sessions, changed ones log in again, removed ones log out; a bad config is refused and
the old one stays; what needs a restart is said; only loopback clients may reload."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import (
    FileProxy,
    ServeRoutes,
    base,
    iics_route,
    ivanti_key_route,
    last_session_id,
    logged_out,
    metric,
    non_loopback_address,
    scrape,
    status_of,
    v2_logins,
    wait_for,
    wait_for_status,
    write_config,
)

from proxy.sandbox import Sandbox
from proxy.server.app import ProxyServer

AGENT = "/saas/api/v2/agent"


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
    assert v2_logins(sandbox) == 3

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
    assert v2_logins(sandbox) == 3  # the kept route did not log in again
    assert await status_of(http, base(server, f"/change{AGENT}")) == 200
    assert v2_logins(sandbox) == 4
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
    assert v2_logins(sandbox) == 1
    samples = await scrape(http, base(server, "/-/metrics"))
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
    assert v2_logins(sandbox) == 1

    clear = base(server, "/-/sessions/iics/clear")
    async with http.post(clear, headers={"X-Auth-Proxy": "1"}) as resp:
        assert resp.status == 200
    assert await status_of(http, base(server, "/iics" + AGENT)) == 200
    assert v2_logins(sandbox) == 2


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


async def test_reload_is_refused_to_non_loopback_clients_and_needs_post(
    sandbox: Sandbox, file_proxy: FileProxy, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    path = tmp_path / "config.yaml"
    listen = {"host": "0.0.0.0", "port": 0}
    write_config(path, [iics_route(sandbox)], listen=listen, allow_unauthenticated=True)
    server = await file_proxy(path)
    async with http.post(f"http://{address}:{server.port}/-/reload", json={}) as resp:
        assert resp.status == 403
        assert resp.headers["X-Auth-Proxy-Error"] == "forbidden"
        assert (await resp.json())["error"]["code"] == "forbidden"
    async with http.get(base(server, "/-/reload")) as resp:
        assert (resp.status, resp.headers["Allow"]) == (405, "POST")
    assert (await post_reload(http, server))[0] == 200


async def test_a_client_with_admin_rights_may_reload_from_anywhere(
    sandbox: Sandbox, file_proxy: FileProxy, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """README, "Shared gateway": an operator on another machine authenticates as a
    client_auth client with admin rights; other clients stay refused."""
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    path = tmp_path / "config.yaml"
    clients = {
        "tokens": [
            {"name": "oncall", "token": "oncall-token-1", "admin": True},
            {"name": "reader", "token": "reader-token-1"},
        ]
    }
    write_config(
        path, [iics_route(sandbox)], listen={"host": "0.0.0.0", "port": 0}, client_auth=clients
    )
    server = await file_proxy(path)
    url = f"http://{address}:{server.port}/-/reload"

    async def reload_as(token: str) -> tuple[int, str]:
        headers = {"Proxy-Authorization": f"Bearer {token}", "X-Auth-Proxy": "1"}
        async with http.post(url, headers=headers) as resp:
            return resp.status, (await resp.json()).get("status") or (await resp.json())["error"][
                "message"
            ]

    assert await reload_as("oncall-token-1") == (200, "reloaded")
    assert await reload_as("reader-token-1") == (
        403,
        'client "reader" may not use the admin endpoints',
    )


# ---------------------------------------------------------------- a real process


async def test_sighup_reloads_the_config_file(sandbox: Sandbox, serve_routes: ServeRoutes) -> None:
    served = await serve_routes([iics_route(sandbox)])
    incidents = served.url("/ivanti/api/odata/businessobject/incidents")
    async with aiohttp.ClientSession() as http:
        assert await status_of(http, served.url("/iics" + AGENT)) == 200
        assert await status_of(http, incidents) == 404

        served.rewrite([iics_route(sandbox), ivanti_key_route(sandbox)])
        served.proc.send_signal(signal.SIGHUP)
        await wait_for_status(http, incidents, 200)
        assert await status_of(http, served.url("/iics" + AGENT)) == 200
        assert v2_logins(sandbox) == 1  # the unchanged route kept its session

        served.config.write_text("routes: [\n")
        served.proc.send_signal(signal.SIGHUP)

        async def reload_failed() -> bool:
            samples = await scrape(http, served.url("/-/metrics"))
            return metric(samples, "auth_proxy_config_last_reload_success") == 0

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

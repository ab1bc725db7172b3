"""Reloading costs nothing that stays: memory and file descriptors level off.

A ConfigMap watcher may reload every minute for months. Each reload must reuse what an
unchanged route already has (its TLS context, hence its pooled upstream connections),
close what no route uses any more (the connection pool of a dropped ``resolve`` map),
and still pick up a CA bundle rotated in place.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from helpers import (
    FileProxy,
    ServeRoutes,
    StartSandbox,
    Upstream,
    base,
    iics_route,
    rss_kib,
    write_config,
)

from proxy.config.load import load_config
from proxy.sandbox import Sandbox
from proxy.server.app import ProxyServer

AGENT = "/iics/saas/api/v2/agent"
RELOADS = 100
STATE_CHANGE = {"X-Auth-Proxy": "1"}  # reloads need a request no HTML form can send
SETTLED = 5  # reloads after which the figures are the baseline
MAX_MORE_FDS = 10
MAX_MORE_RSS_KIB = 20 * 1024


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.parametrize("resolve_changes", [False, True], ids=["unchanged", "new-resolve-map"])
async def test_a_hundred_reloads_leave_memory_and_fds_flat(
    sandbox: Sandbox, serve_routes: ServeRoutes, resolve_changes: bool
) -> None:
    def routes(reload: int) -> list[dict[str, Any]]:
        upstream: dict[str, Any] = {}
        if resolve_changes:  # an entry no request uses: only the map itself differs
            upstream["resolve"] = {f"unused-{reload}.test:443": "127.0.0.1:9"}
        return [iics_route(sandbox, upstream=upstream)]

    served = await serve_routes(routes(0))
    pid = served.proc.pid
    baseline: tuple[int, int] = (0, 0)
    async with aiohttp.ClientSession() as http:
        for reload in range(1, RELOADS + 1):
            served.rewrite(routes(reload))
            # The reload answers once it is done.
            async with http.post(served.url("/-/reload"), headers=STATE_CHANGE) as resp:
                assert resp.status == 200
            async with http.get(served.url(AGENT)) as resp:
                assert resp.status == 200
            if reload == SETTLED:
                baseline = (open_fds(pid), rss_kib(pid))
        fds, rss = open_fds(pid), rss_kib(pid)
    print(f"after {SETTLED} reloads: {baseline[0]} fds, {baseline[1] // 1024} MiB RSS")
    print(f"after {RELOADS} reloads: {fds} fds, {rss // 1024} MiB RSS")
    assert fds <= baseline[0] + MAX_MORE_FDS, (baseline, fds)
    assert rss <= baseline[1] + MAX_MORE_RSS_KIB, (baseline, rss)


async def test_a_response_streaming_through_a_dropped_pool_is_not_cut(
    upstream: Upstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    release = asyncio.Event()

    async def two_halves(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first half;")
        await release.wait()
        await response.write(b"second half")
        return response

    upstream.handler = two_halves
    config = tmp_path / "config.yaml"

    def write(reload: int) -> None:
        resolve = {f"unused-{reload}.test:443": "127.0.0.1:9"}
        write_config(config, [upstream.route(upstream={"resolve": resolve})])

    write(0)
    server = ProxyServer(load_config(config), config_path=config)
    await server.start()
    try:
        async with http.get(base(server, "/up/download")) as resp:
            assert await resp.content.readexactly(len(b"first half;")) == b"first half;"
            write(1)  # the pool this download runs on is no longer any route's
            async with http.post(base(server, "/-/reload"), headers=STATE_CHANGE) as reloaded:
                assert (await reloaded.json())["relogin"] == ["up"]
            release.set()
            # A cut pool would leave this read waiting: bounded, so the test fails instead.
            assert await asyncio.wait_for(resp.content.read(), 10) == b"second half"
        async with http.get(base(server, "/up/again")) as resp:  # on the new pool
            assert resp.status == 200
    finally:
        await server.stop(drain_timeout=1)


async def test_a_ca_bundle_rotated_in_place_is_used_after_a_reload(
    tls_sandbox: StartSandbox,
    file_proxy: FileProxy,
    ca: trustme.CA,
    other_ca: trustme.CA,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    sandbox = await tls_sandbox("127.0.0.1")  # its certificate is from ``ca``
    bundle = tmp_path / "ca.pem"
    other_ca.cert_pem.write_to_path(str(bundle))  # the wrong CA: the login fails
    config = tmp_path / "config.yaml"
    write_config(config, [iics_route(sandbox, upstream={"ca_bundle": str(bundle)})])
    server = await file_proxy(config)
    async with http.get(base(server, AGENT)) as resp:
        assert resp.status == 502
        assert "failed TLS verification" in (await resp.json())["error"]["message"]
    ca.cert_pem.write_to_path(str(bundle))  # the same path, the right CA
    async with http.post(base(server, "/-/reload"), headers=STATE_CHANGE) as resp:
        assert (await resp.json())["relogin"] == ["iics"]  # a login through it
    async with http.get(base(server, AGENT)) as resp:
        assert resp.status == 200
    assert len(sandbox.state.logins_for("iics-v2-login")) == 1

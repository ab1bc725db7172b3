"""`auth-proxy demo`: every curl line it prints returns sandbox data through the proxy."""

from __future__ import annotations

import shlex

import aiohttp
from yarl import URL

from proxy.cli.demo import curl_lines, demo_config
from proxy.config import parse_config
from proxy.sandbox import Sandbox
from proxy.server.app import ProxyServer


async def test_every_printed_curl_line_works(
    sandbox: Sandbox, clock, http: aiohttp.ClientSession
) -> None:
    config = parse_config(demo_config(sandbox.urls, 0, sandbox.state.ivanti_tenant))
    server = ProxyServer(config, clock=clock)
    await server.start()
    try:
        lines = curl_lines(server.port)
        types = {route.auth.type for route in config.routes}
        assert len(types) >= 7  # one route per flow the sandbox can serve without a browser
        for line in lines:
            url = shlex.split(line)[-1]
            async with http.get(URL(url, encoded=True)) as resp:
                assert resp.status == 200, (line, await resp.text())
                assert await resp.json(), line
        async with http.get(f"http://127.0.0.1:{server.port}/-/sessions") as resp:
            states = {name: s["state"] for name, s in (await resp.json()).items()}
        assert set(states.values()) == {"active"}, states
    finally:
        await server.stop(drain_timeout=1)

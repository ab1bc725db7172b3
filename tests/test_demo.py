"""`auth-proxy demo`: every curl line it prints returns sandbox data through the proxy,
in reverse-proxy mode and in forward-proxy mode."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from proxy.cli.demo import curl_lines, demo_config, forward_demo
from proxy.config import parse_config
from proxy.core.clock import ManualClock
from proxy.flows.base import PLACEHOLDER_SESSION
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


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
async def test_every_line_printed_by_the_forward_proxy_demo_works(
    tmp_path: Path, clock: ManualClock
) -> None:
    async with forward_demo(0, tmp_path, clock=clock) as (_, lines):
        env = {
            **os.environ,
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        }
        for line in lines:
            process = await asyncio.create_subprocess_shell(
                line, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
            )
            out, err = await asyncio.wait_for(process.communicate(), timeout=30)
            assert process.returncode == 0, (line, err.decode())
            assert b"agent" in out or b"DTEMPLATE" in out or PLACEHOLDER_SESSION.encode() in out

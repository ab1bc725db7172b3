"""Regenerate the README's picture of the status page (``docs/status-page.png``).

Runs the sandbox and a proxy in this process on loopback, on a clock that can be moved
(no waiting), brings its routes into each state the page shows — active, expiring,
rejected, backing off, never used — opens ``/-/`` in headless Chromium and saves a
screenshot of the whole page. Run through ``scripts/screenshot``.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from proxy.config import parse_config
from proxy.core.clock import ManualClock
from proxy.sandbox import Sandbox, SandboxState, run_sandbox
from proxy.server.app import ProxyServer
from tools.chromium import open_chromium

WIDTH = 1280
AGENTS = "/saas/api/v2/agent"
INCIDENTS = "/api/odata/businessobject/incidents"


def routes(sandbox: Sandbox) -> list[dict[str, Any]]:
    urls = sandbox.urls
    iics = {"type": "iics-password", "login_url": urls.login, "username": "demo"}
    return [
        {
            "name": "iics",
            "match": {"prefix": "/iics"},
            "auth": {**iics, "password": "demo-password"},
        },
        {
            "name": "reports",
            "match": {"prefix": "/reports"},
            "auth": {**iics, "password": "demo-password"},
        },
        {
            "name": "ivanti",
            "match": {"prefix": "/ivanti"},
            "auth": {"type": "ivanti-api-key", "url": urls.ivanti, "api_key": "demo-api-key"},
            "upstream": {"max_concurrent": 8},
        },
        {
            "name": "etl-nightly",
            "match": {"prefix": "/etl-nightly"},
            "auth": {**iics, "password": "last-years-password"},
        },
        {
            "name": "staging",
            "match": {"prefix": "/staging"},
            "auth": {**iics, "password": "demo-password"},
        },
        {
            "name": "sandbox-org",
            "match": {"prefix": "/sandbox-org"},
            "auth": {**iics, "password": "demo-password"},
        },
    ]


async def traffic(http: aiohttp.ClientSession, base: str, sandbox: Sandbox, clock: ManualClock):
    """Requests that leave each route in a different state."""

    async def get(path: str, times: int = 1) -> None:
        for _ in range(times):
            async with http.get(base + path) as resp:
                await resp.read()

    await get("/reports" + AGENTS, 3)
    await get("/iics" + AGENTS, 12)
    await get("/ivanti" + INCIDENTS, 30)
    clock.advance(26 * 60)  # the reports session, unused since, nears its idle timeout
    await get("/iics" + AGENTS, 5)  # while iics is in use: it slides on
    await get("/ivanti" + INCIDENTS, 10)
    await get("/iics/saas/api/v2/no-such-thing", 2)
    await get("/etl-nightly" + AGENTS, 2)  # a password that changed: rejected, then refused
    sandbox.state.login_status_override = 503  # the vendor is down for a moment
    await get("/staging" + AGENTS)
    sandbox.state.login_status_override = None


def shoot(url: str, out: Path) -> None:
    driver = open_chromium(WIDTH, 900)
    try:
        driver.get(url)
        driver.execute_script(
            "document.querySelector('[data-route=\"etl-nightly\"] details').open = true"
        )
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
        driver.set_window_size(WIDTH, height + 140)  # the window's frame around the page
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()


async def main(out: Path) -> None:
    clock = ManualClock()
    async with run_sandbox(SandboxState(clock=clock)) as sandbox:
        config = parse_config(
            {
                "listen": {"host": "127.0.0.1", "port": 0},
                "session_store": {"type": "memory"},
                "log": {"level": "warning"},
                "routes": routes(sandbox),
            }
        )
        server = ProxyServer(config, clock=clock)
        await server.start()
        try:
            base = f"http://127.0.0.1:{server.port}"
            async with aiohttp.ClientSession() as http:
                await traffic(http, base, sandbox, clock)
            await asyncio.to_thread(shoot, base + "/-/", out)
        finally:
            await server.stop(drain_timeout=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path("docs/status-page.png"))
    asyncio.run(main(parser.parse_args().out))

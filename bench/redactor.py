"""The log redactor's cost per log line and per login, fresh and after 2,000 logins.

    .venv/bin/python bench/redactor.py [--logins 2000]

Runs the sandbox and a proxy in this process, on loopback, with two routes (IICS v2 and
Ivanti session); every round moves a manual clock past both idle timeouts, so each
request logs in again. Before and after the logins it prints how many strings the
redactor masks, the cost of masking an access-line path and a debug event, the
redactor's own work for one login (a new session id held, the old one released, the
pattern rebuilt on the next line), a whole request that logs in, and the RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
from timing import per_call_us

from proxy.config import parse_config
from proxy.core.clock import ManualClock
from proxy.ops.logs import REDACTOR, setup_logging
from proxy.sandbox import Sandbox, SandboxState, run_sandbox
from proxy.server.app import ProxyServer

PASSWORD = 'bench"pw/1 +x'
PATHS = {"v2": "/saas/api/v2/agent", "ivs": "/api/odata/businessobject/incidents"}
ACCESS_PATH = "/v2/saas/api/v2/agent/0123456789abcdef"
EVENT: dict[str, Any] = {
    "event": "upstream_request",
    "route": "v2",
    "method": "GET",
    "url": "https://pod.example/saas/api/v2/agent?limit=10",
    "headers": {"Accept": "application/json", "icSessionId": "x", "User-Agent": "bench"},
}


def redactor_login_us(samples: int = 200) -> float:
    """Median µs of what a login costs the redactor: hold a new id, release the old one,
    mask the next line (which rebuilds the pattern)."""
    times = []
    held = REDACTOR.add("bench-session-id-00000000")
    for n in range(samples):
        started = time.perf_counter()
        new = REDACTOR.add(f"bench-session-id-{n:08d}x")
        held.release()
        REDACTOR.text(ACCESS_PATH)
        times.append(time.perf_counter() - started)
        held = new
    held.release()
    return statistics.median(times) * 1e6


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def routes(sandbox: Sandbox) -> list[dict[str, Any]]:
    sandbox.state.iics_users["demo"].password = PASSWORD
    sandbox.state.ivanti_users["demo"].password = PASSWORD
    return [
        {
            "name": "v2",
            "match": {"prefix": "/v2"},
            "auth": {
                "type": "iics-password",
                "login_url": sandbox.urls.login,
                "username": "demo",
                "password": PASSWORD,
            },
        },
        {
            "name": "ivs",
            "match": {"prefix": "/ivs"},
            "auth": {
                "type": "ivanti-session",
                "url": sandbox.urls.ivanti,
                "tenant": sandbox.state.ivanti_tenant,
                "username": "demo",
                "password": PASSWORD,
                "role": "Admin",
            },
        },
    ]


async def main(logins: int) -> None:
    setup_logging("info", "json", stream=io.StringIO())  # the processor chain, no output
    clock = ManualClock()
    async with (
        run_sandbox(SandboxState(clock=clock)) as sandbox,
        aiohttp.ClientSession() as http,
    ):
        config = {
            "listen": {"host": "127.0.0.1", "port": 0},
            "session_store": {"type": "memory"},  # this process only, nothing on disk
            "routes": routes(sandbox),
        }
        server = ProxyServer(parse_config(config), clock=clock)
        await server.start()

        async def relogin_round() -> float:
            """Both routes log in again; the seconds it took."""
            clock.advance(1900)
            started = time.perf_counter()
            for name, path in PATHS.items():
                async with http.get(f"http://127.0.0.1:{server.port}/{name}{path}") as resp:
                    assert resp.status == 200, await resp.text()
            return time.perf_counter() - started

        async def measure(label: str) -> None:
            rounds = [await relogin_round() for _ in range(20)]
            line = per_call_us(lambda: REDACTOR.text(ACCESS_PATH), 20_000)
            event = per_call_us(lambda: REDACTOR(None, "debug", dict(EVENT)), 5_000)
            print(
                f"{label:<22} masked strings {len(REDACTOR):>5}   access path {line:6.2f} µs"
                f"   debug event {event:6.2f} µs   redactor per login"
                f" {redactor_login_us():8.1f} µs   request with login"
                f" {statistics.median(rounds) / 2 * 1e3:6.2f} ms   RSS {rss_mb():6.1f} MB"
            )

        await measure("after 40 logins")
        done = len(sandbox.state.logins)
        while len(sandbox.state.logins) - done < logins:
            await relogin_round()
        await measure(f"after {len(sandbox.state.logins)} logins")
        await server.stop(drain_timeout=1)
        print(f"{'after logout':<22} masked strings {len(REDACTOR):>5}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logins", type=int, default=2000)
    asyncio.run(main(parser.parse_args().logins))

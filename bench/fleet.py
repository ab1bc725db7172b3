"""The session store under load: what ``session_store`` costs and what it saves.

    .venv/bin/python bench/fleet.py [--rounds 3] [--duration 5]

1. Cold stampede: two replicas (``auth-proxy serve`` processes) with ``workers: 2``
   each, sharing one store; 200 concurrent requests spread over both, each on a
   connection of its own. Reported: the time until all have answered, and the logins
   the vendor (the sandbox) saw — 1 with ``local`` or ``redis``, one per process with
   ``memory``.
2. Steady state: one proxy per store (``workers: 1``, pinned to its own core), the
   ``iics-password`` route warmed up, then ``wrk -c64`` in rounds that alternate the
   stores; the median requests/s of each store against ``memory`` (the target is
   >= 0.95; each round's ratio compares runs seconds apart, and the median is taken), and
   p50 latency at c=1.
3. Hot path: what ``acquire()`` + ``touch()`` (the session layer's part of a request
   once a session is held) costs in-process with each store.

Uses nginx as the upstream and ``bench/bench_sandbox.py`` as the vendor (the building
blocks of ``bench/bench.py``; ``bench/run`` installs nginx and wrk), and starts its own
redis-server on a free loopback port. Everything listens on 127.0.0.1; everything
started is stopped at the end. Results go to ``bench/results/fleet.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from store import redis_server

from bench import (
    BODIES,
    PYTHON,
    ROOT,
    SERVER_CPU,
    Bench,
    BenchError,
    Run,
    Server,
    fetch,
    free_port,
    wait_for_listeners,
    wait_until_up,
    wrk,
)
from proxy.config import parse_config
from proxy.core.clock import Clock
from proxy.flows import flow_for
from proxy.flows.base import LoginRequest, LoginResponse
from proxy.ops.logs import setup_logging
from proxy.sessions.manager import RouteSessions
from proxy.sessions.stores import open_stores

RESULTS = ROOT / "bench" / "results" / "fleet.json"
STORE_KEY = "a bench key that is long enough"
KINDS = ("memory", "local", "redis")
COLD_REQUESTS = 200
RATIO_TARGET = 0.95


class Fleet:
    def __init__(self, tmp: Path, redis_url: str | None) -> None:
        self.tmp = tmp
        self.base = Bench(tmp)  # nginx upstream, sandbox, process bookkeeping
        self.redis_url = redis_url
        self.runs = 0

    @property
    def kinds(self) -> list[str]:
        return [k for k in KINDS if k != "redis" or self.redis_url is not None]

    def store(self, kind: str) -> dict[str, Any]:
        """A fresh store of ``kind``: nothing in it from an earlier run."""
        self.runs += 1
        if kind == "local":
            return {"type": "local", "path": str(self.tmp / f"state-{self.runs}")}
        if kind == "redis":
            prefix = f"bench{self.runs}:"
            return {"type": "redis", "url": self.redis_url, "key": STORE_KEY, "key_prefix": prefix}
        return {"type": "memory"}

    def config(self, port: int, workers: int, store: dict[str, Any]) -> Path:
        iics = {
            "type": "iics-password",
            "login_url": self.base.login_url,
            "username": "demo",
            "password": "demo-password",
        }
        config = {
            "listen": {"host": "127.0.0.1", "port": port},
            "workers": workers,
            "shutdown_timeout": 1,
            "upstream": {"trust_env": False},
            "session_store": store,
            "routes": [{"name": "iics", "match": {"prefix": "/iics"}, "auth": iics}],
        }
        path = self.tmp / f"auth-proxy-{port}.yaml"
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        return path

    def start_proxy(
        self, workers: int, store: dict[str, Any], cpu: int | None
    ) -> tuple[Server, str]:
        port = free_port()
        argv = [PYTHON, "-m", "proxy", "serve", "-c", str(self.config(port, workers, store))]
        server = self.base.procs.start(f"auth-proxy-{port}", argv, cpu=cpu)
        url = f"http://127.0.0.1:{port}"
        wait_until_up(server, f"{url}/-/healthz")
        listening = wait_for_listeners(server, port, workers)
        if len(listening) != workers:
            raise BenchError(f"auth-proxy: {len(listening)} of {workers} processes listening")
        return server, url

    # ---- cold stampede

    def cold(self, kind: str) -> dict[str, Any]:
        store = self.store(kind)
        replicas = [self.start_proxy(2, store, cpu=None) for _ in range(2)]
        try:
            before = self.base.logins_seen()
            urls = [f"{url}/iics/saas/{BODIES['small']}" for _, url in replicas]
            seconds, statuses = asyncio.run(spread(urls, COLD_REQUESTS))
            logins = self.base.logins_seen() - before
        finally:
            for server, _ in replicas:
                self.base.procs.stop(server)
        ok = sum(1 for status in statuses if status == 200)
        wanted = 4 if kind == "memory" else 1
        verdict = "PASS" if ok == COLD_REQUESTS and logins <= wanted else "MISS"
        print(f"  {kind:<7} {seconds * 1000:>8.0f} ms {ok:>5} ok {logins:>4} login(s)  {verdict}")
        return {"seconds": round(seconds, 3), "ok": ok, "logins": logins, "verdict": verdict}

    # ---- steady state

    def steady(self, rounds: int, duration: int) -> dict[str, Any]:
        proxies = {kind: self.start_proxy(1, self.store(kind), SERVER_CPU) for kind in self.kinds}
        try:
            urls = {
                kind: f"{url}/iics/saas/{BODIES['small']}" for kind, (_, url) in proxies.items()
            }
            for kind, url in urls.items():
                status, _ = fetch(url)  # the login
                if status != 200:
                    raise BenchError(f"{kind}: GET {url} answered {status}")
                wrk(url, 64, 1)  # warm-up
            runs: dict[str, list[Run]] = {kind: [] for kind in urls}
            latency: dict[str, list[Run]] = {kind: [] for kind in urls}
            order = list(urls)
            for index in range(rounds):
                for kind in order[index % len(order) :] + order[: index % len(order)]:
                    runs[kind].append(wrk(urls[kind], 64, duration))
                    latency[kind].append(wrk(urls[kind], 1, max(1, duration // 2)))
                print(
                    f"  round {index + 1}/{rounds}: "
                    + ", ".join(f"{kind} {runs[kind][-1].rps:,.0f}" for kind in order)
                    + " req/s"
                )
        finally:
            for server, _ in proxies.values():
                self.base.procs.stop(server)
        rps = {kind: statistics.median(r.rps for r in runs[kind]) for kind in runs}
        p50 = {kind: statistics.median(r.p50_us for r in latency[kind]) for kind in latency}
        errors = {kind: sum(r.errors for r in runs[kind]) for kind in runs}
        out: dict[str, Any] = {}
        for kind in runs:
            # Each round's ratio compares runs seconds apart: what other load the machine
            # has then weighs on both. The median of those is the figure.
            ratios = [a.rps / b.rps for a, b in zip(runs[kind], runs["memory"], strict=True)]
            ratio = statistics.median(ratios)
            out[kind] = {
                "rps_c64_median": round(rps[kind]),
                "ratio_to_memory": round(ratio, 3),
                "ratio_per_round": [round(r, 3) for r in ratios],
                "p50_us_c1": round(p50[kind]),
                "errors": errors[kind],
                "verdict": "PASS" if ratio >= RATIO_TARGET and not errors[kind] else "MISS",
            }
        return out


async def spread(urls: list[str], count: int) -> tuple[float, list[int]]:
    """``count`` requests at once, round-robin over ``urls``, each on its own connection
    (so the kernel spreads them over each replica's workers)."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as client:

        async def one(url: str) -> int:
            async with client.get(url) as response:
                await response.read()
                return response.status

        started = time.perf_counter()
        statuses = await asyncio.gather(*(one(urls[i % len(urls)]) for i in range(count)))
        return time.perf_counter() - started, list(statuses)


async def hot_path(fleet: Fleet, calls: int = 200_000) -> dict[str, float]:
    """What a request costs the session layer once a session is held, per store: the
    store is consulted only in the background (every few seconds of use)."""
    setup_logging("error", "console", stream=io.StringIO())  # the proxy's lines: not here
    out = {}
    for kind in fleet.kinds:
        settings = parse_config({"session_store": fleet.store(kind), "routes": [HOT_ROUTE]})
        stores = await open_stores(settings.session_store, time.time)
        flow = flow_for(settings.routes[0])
        sessions = RouteSessions(
            "hot",
            flow,
            _vendor,
            clock=Clock(),
            idle_timeout=1800,
            refresh_margin=120,
            login_retry_after=300,
            stores=stores,
        )
        try:
            lease = await sessions.acquire()
            started = time.perf_counter()
            for _ in range(calls):
                lease = await sessions.acquire()
                sessions.touch(lease)
            out[kind] = (time.perf_counter() - started) / calls * 1e9
        finally:
            await sessions.shutdown()
            await stores.close()
    return out


# An API-key route stays in the process whatever the store: a login route is timed, with a
# flow that "logs in" without a vendor (the hot path never calls it again).
HOT_ROUTE = {
    "name": "hot",
    "match": {"prefix": "/hot"},
    "auth": {
        "type": "ivanti-session",
        "url": "https://tenant.invalid",
        "tenant": "tenant.invalid",
        "username": "bench",
        "password": "bench-password",
        "role": "Admin",
    },
}


async def _vendor(request: LoginRequest) -> LoginResponse:
    """The vendor: answers the login with a session key."""
    return LoginResponse(200, {}, b'"tenant.invalid#bench-session#1"', request.url)


def report(fleet: Fleet, rounds: int, duration: int) -> dict[str, Any]:
    fleet.base.start_upstream()
    fleet.base.start_sandbox()
    print(f"cold stampede: {COLD_REQUESTS} concurrent requests over 2 replicas x 2 workers")
    cold = {kind: fleet.cold(kind) for kind in fleet.kinds}
    print(f"\nsteady state: workers 1, wrk -t1 -c64 {duration}s x {rounds} rounds, small body")
    steady = fleet.steady(rounds, duration)
    print(f"\n  {'store':<7} {'req/s':>9} {'ratio':>7} {'p50 c=1':>9}")
    for kind, row in steady.items():
        print(
            f"  {kind:<7} {row['rps_c64_median']:>9,} {row['ratio_to_memory']:>7.3f}"
            f" {row['p50_us_c1']:>7}µs  {row['verdict'] if kind != 'memory' else ''}"
        )
    print("\nhot path (in-process, no I/O): acquire() + touch() per request")
    hot = asyncio.run(hot_path(fleet))
    for kind, ns in hot.items():
        print(f"  {kind:<7} {ns:>7.0f} ns")
    if fleet.redis_url is None:
        print("(redis-server not installed: no Redis figures)")
    return {
        "cold_stampede": cold,
        "steady_state": steady,
        "hot_path_ns": hot,
        "rounds": rounds,
        "duration": duration,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per store")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    given = os.environ.get("BENCH_TMP")
    tmp = Path(given) if given else Path(tempfile.mkdtemp(prefix="auth-proxy-fleet-"))
    try:
        with redis_server(tmp) as url:
            fleet = Fleet(tmp, url)
            try:
                results = report(fleet, args.rounds, args.duration)
            finally:
                fleet.base.procs.stop_all()
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print(f"results: {RESULTS.relative_to(ROOT)}")
    except BenchError as exc:
        print(f"\nbench: {exc}", file=sys.stderr)
        return 1
    finally:
        if not given:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

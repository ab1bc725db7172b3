"""Helpers for the fleet tests: ``auth-proxy serve`` processes (replicas, each with its
workers) sharing one session store, and load spread over all of them.

Every count of logins is the sandbox's own journal; every process is real, and the
store is a real redis-server or a real SQLite directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from helpers import Served, iics_route, wait_for, write_config
from store_support import TEST_KEY, RedisServer

from proxy.sandbox import Sandbox

AGENT = "/iics/saas/api/v2/agent"
V2_LOGIN = "iics-v2-login"
V2_LOGOUT = "/saas/api/v2/user/logout"
NON_SIMPLE = {"X-Auth-Proxy": "1"}
_prefixes = itertools.count()

Spawn = Callable[[Path, int], Awaitable[Served]]


def logins(sandbox: Sandbox) -> int:
    return len(sandbox.state.logins_for(V2_LOGIN))


def logouts(sandbox: Sandbox) -> int:
    return len(sandbox.state.requests_to(V2_LOGOUT))


def session_ids(sandbox: Sandbox) -> set[str]:
    """The session ids the vendor saw on proxied calls."""
    return {r.headers["icSessionId"] for r in sandbox.state.requests_for("iics-pod")}


def local_store(tmp_path: Path) -> dict[str, Any]:
    """A ``session_store`` block for a local store in ``tmp_path``."""
    return {"type": "local", "path": str(tmp_path / "state")}


def redis_store(server: RedisServer, **extra: Any) -> dict[str, Any]:
    """A ``session_store`` block for ``server``, under a key prefix of its own."""
    prefix = f"fleet{next(_prefixes)}:"
    return {"type": "redis", "url": server.url, "key": TEST_KEY, "key_prefix": prefix, **extra}


@dataclass
class Replica:
    served: Served
    workers: int

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.served.events() if name is None or e["event"] == name]

    def url(self, path: str) -> str:
        return self.served.url(path)


@dataclass
class Fleet:
    """Replicas of one config (each its own supervisor and workers) on ports of their own."""

    sandbox: Sandbox
    spawn: Spawn
    tmp: Path
    ports: Callable[[], int]
    replicas: list[Replica] = field(default_factory=list)

    async def start(
        self,
        store: dict[str, Any],
        *,
        replicas: int = 2,
        workers: int = 2,
        routes: list[dict[str, Any]] | None = None,
        **auth: Any,
    ) -> list[Replica]:
        routes = routes or [iics_route(self.sandbox, **auth)]
        started = []
        for index in range(replicas):
            port = self.ports()
            config = self.tmp / f"replica{len(self.replicas) + index}.yaml"
            listen = {"host": "127.0.0.1", "port": port}
            write_config(config, routes, workers=workers, listen=listen, session_store=store)
            started.append(Replica(await self.spawn(config, port), workers))
        for replica in started:
            await wait_for(
                lambda r=replica: len(r.events("listening")) >= r.workers,
                timeout=20,
                what="every worker listening",
            )
        self.replicas += started
        return started

    def urls(self, path: str) -> list[str]:
        return [replica.url(path) for replica in self.replicas]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for replica in self.replicas for e in replica.events(name)]


async def one(http: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, str]:
    """Status and error code; a broken connection is status 0 (a killed process)."""
    try:
        async with http.get(url, headers=headers) as resp:
            await resp.read()
            return resp.status, resp.headers.get("X-Auth-Proxy-Error", "")
    except aiohttp.ClientConnectionError as exc:
        return 0, type(exc).__name__


async def burst(urls: list[str], count: int, timeout: float = 60) -> list[tuple[int, str]]:
    """``count`` concurrent GETs spread round-robin over ``urls``, each on a connection of
    its own (so the kernel spreads them over each replica's workers)."""
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as http:
        return list(await asyncio.gather(*(one(http, urls[i % len(urls)]) for i in range(count))))


async def admin_json(url: str, method: str = "GET") -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, headers=NON_SIMPLE) as resp,
    ):
        return resp.status, await resp.json()


def answered_by(fleet: Fleet) -> set[tuple[int, int]]:
    """(replica, worker) pairs that answered a proxied request."""
    return {
        (index, e["worker"])
        for index, replica in enumerate(fleet.replicas)
        for e in replica.events("request")
    }


@contextlib.asynccontextmanager
async def stopped(server: RedisServer) -> Any:
    """Redis down for the duration of the block, then up again on the same port."""
    server.stop()
    try:
        yield
    finally:
        server.start()

"""The proxy server: listeners, the request handler, reload and shutdown.

A request goes: admin endpoint? → route → ``forward`` (session, headers, upstream,
stream back). Errors are ``ProxyError`` values turned into responses here, in one
place, and every request ends in exactly one access-log line.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

from proxy.admin import Admin
from proxy.clock import Clock
from proxy.config import Config
from proxy.errors import Draining, NoRoute, ProxyError
from proxy.forward import Outcome, forward
from proxy.logs import REDACTOR
from proxy.outbound import Outbound
from proxy.routing import host_without_port
from proxy.runtime import Runtime

log = structlog.get_logger("auth_proxy")
access_log = structlog.get_logger("auth_proxy.access")

# Session ids may be JWTs of up to 16,000 characters (protocols §2.3).
MAX_FIELD_SIZE = 32 * 1024
MAX_LINE_SIZE = 32 * 1024
LOGOUT_BUDGET = 5.0


@dataclass(frozen=True, slots=True)
class Listener:
    host: str
    port: int
    route: str | None  # None: the main listener


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    family, type_, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(addr)
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class ProxyServer:
    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.outbound = Outbound()
        self.runtime = self._build(config, None)
        self.admin = Admin(self)
        self.draining = False
        self.listeners: list[Listener] = []
        self._runners: list[web.ServerRunner] = []
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def config(self) -> Config:
        return self.runtime.config

    def _build(self, config: Config, previous: Runtime | None) -> Runtime:
        return Runtime(
            config,
            self.outbound,
            clock=self.clock,
            on_secret=REDACTOR.add,
            on_login=self._on_login,
            previous=previous,
        )

    def _on_login(self, route: str, result: str, seconds: float) -> None:
        """Hook for metrics; the session manager calls it after every login attempt."""

    # ------------------------------------------------------------------ listeners

    async def start(self, sockets: dict[tuple[str, int], socket.socket] | None = None) -> None:
        """Bind every listener. ``sockets`` may supply pre-bound ones (workers, tests)."""
        sockets = dict(sockets or {})
        main = self.config.listen
        wanted = [(main.host, main.port, None)] + [
            (host, port, rt.name) for host, port, rt in self.runtime.listen_ports()
        ]
        reuse = self.config.workers > 1
        for host, port, route in wanted:
            sock = sockets.pop((host, port), None) or bind_socket(host, port, reuse_port=reuse)
            bound_port = sock.getsockname()[1]
            handler = self._handler_for(bound_port if route is None else port)
            server = web.Server(
                handler,
                auto_decompress=False,  # bodies pass through exactly as sent
                max_field_size=MAX_FIELD_SIZE,
                max_line_size=MAX_LINE_SIZE,
                access_log=None,
            )
            runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=0)
            await runner.setup()
            await web.SockSite(runner, sock).start()
            self._runners.append(runner)
            self.listeners.append(Listener(host, bound_port, route))
        log.info(
            "listening",
            listeners=[f"{lst.host}:{lst.port}" for lst in self.listeners],
            routes=list(self.runtime.routes),
        )

    @property
    def port(self) -> int:
        return self.listeners[0].port

    def _handler_for(self, port: int) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
        async def handler(request: web.BaseRequest) -> web.StreamResponse:
            return await self.handle(request, port)

        return handler

    # ------------------------------------------------------------------ requests

    async def handle(self, request: web.BaseRequest, port: int) -> web.StreamResponse:
        started = time.perf_counter()
        path, _, query = request.raw_path.partition("?")
        if path.startswith("/-/"):
            return await self.admin.handle(request, path)
        runtime = self.runtime
        outcome = Outcome()
        route_name: str | None = None
        status = 500
        request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex
        self._enter()
        try:
            if self.draining:
                raise Draining("the proxy is shutting down")
            matched = runtime.router.match(port, host_without_port(request.host), path)
            if matched is None:
                raise NoRoute(f"no route matches {path}")
            route = matched.target
            route_name = route.name
            route_base = f"{request.scheme}://{request.host}{matched.prefix}"
            response = await forward(request, route, matched.rest, query, route_base, outcome)
            status = response.status
            return response
        except ProxyError as exc:
            if route_name:
                exc.for_route(route_name)
            status = exc.status
            if exc.code not in ("login_rejected", "login_failed", "login_backoff"):
                # Login outcomes are logged once by the session manager.
                log.warning("request_failed", route=route_name, code=exc.code, reason=exc.message)
            return exc.to_response()
        finally:
            self._leave()
            if runtime.config.log.access:
                access_log.info(
                    "request",
                    route=route_name,
                    method=request.method,
                    path=path,
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                    upstream_ms=round(outcome.upstream_seconds * 1000, 2),
                    replayed=outcome.replayed,
                    request_id=request_id,
                )

    def _enter(self) -> None:
        self._inflight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    # ------------------------------------------------------------------ lifecycle

    def reload(self, config: Config) -> None:
        """Swap in ``config``; routes whose login settings are unchanged keep their sessions."""
        previous = self.runtime
        self.runtime = self._build(config, previous)
        kept = {rt.sessions for rt in self.runtime.routes.values()}
        for rt in previous.routes.values():
            if rt.sessions not in kept:
                asyncio.get_running_loop().create_task(rt.sessions.logout())

    async def stop(self, *, drain_timeout: float | None = None) -> None:
        """Stop accepting, drain in-flight requests, log sessions out, close."""
        self.draining = True
        timeout = self.config.shutdown_timeout if drain_timeout is None else drain_timeout
        for runner in self._runners:
            for site in list(runner.sites):
                await site.stop()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("drain_timeout", inflight=self._inflight)
        await self.logout_all()
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        await self.outbound.close()

    async def logout_all(self) -> None:
        """Log every session out, bounded to LOGOUT_BUDGET seconds in all."""
        tasks = [rt.sessions.logout() for rt in self.runtime.routes.values()]
        if not tasks:
            return
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), LOGOUT_BUDGET)
        except TimeoutError:
            log.warning("logout_timeout", seconds=LOGOUT_BUDGET)

"""The proxy server: listeners, the request handler, reload and shutdown.

A request goes: admin endpoint? → route → ``forward`` (session, headers, upstream,
stream back). Errors are ``ProxyError`` values turned into responses here, in one
place, and every request ends in exactly one access-log line.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from proxy.config import Config, ConfigError
from proxy.config.load import load_config
from proxy.core.clock import Clock
from proxy.core.errors import STATUS_BY_CODE, ClientAborted, Draining, NoRoute, ProxyError
from proxy.core.hosts import host_without_port, is_loopback
from proxy.ops.logs import ACCESS_LOG, REDACTOR
from proxy.ops.metrics import Metrics
from proxy.server import cors, emulation
from proxy.server.admin import Admin
from proxy.server.connect import ForwardProxyServer, route_for, target_of
from proxy.server.guard import OPEN_ADMIN_PATHS, Guard
from proxy.server.httpserver import HEADER_TIMEOUT, KEEPALIVE_TIMEOUT, ProxyHttpServer, allow_cors
from proxy.server.listeners import Listener, bind_socket
from proxy.server.responses import error_response
from proxy.server.runtime import Runtime
from proxy.server.startup import check_startup
from proxy.server.state import ReloadResult
from proxy.server.tls import LocalCA
from proxy.sessions.lockout import LocalLockouts, Lockouts
from proxy.sessions.manager import SessionStatus
from proxy.upstream.client import Outbound
from proxy.upstream.relay import Outcome, forward

log = structlog.get_logger("auth_proxy")

# Session ids may be JWTs of up to 16,000 characters (protocols §2.3).
MAX_FIELD_SIZE = 32 * 1024
MAX_LINE_SIZE = 32 * 1024
LOGOUT_BUDGET = 5.0
# After the drain, requests still running are cancelled; aiohttp reads a 0 here as "wait
# forever", so the grace they get to unwind must be a small positive number.
STRAGGLER_GRACE = 0.1


class ProxyServer:
    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        config_path: Path | str | None = None,
        lockouts: Lockouts | None = None,
    ) -> None:
        self.clock = clock or Clock()
        # Kept across reloads; shared with sibling workers when there are any.
        self.lockouts = lockouts if lockouts is not None else LocalLockouts()
        self._request_id_prefix = os.urandom(6).hex()
        self._request_counter = 0
        self.config_path = Path(config_path) if config_path is not None else None
        self.outbound = Outbound()
        self.metrics = Metrics(self._session_statuses, self.clock.now)
        self.runtime = self._build(config, None)
        self.metrics.reloaded(True, self.clock.now())
        self._background: set[asyncio.Task[Any]] = set()
        self._retiring: set[Runtime] = set()  # replaced by a reload, maybe still in use
        self.admin = Admin(self)
        self.guard = Guard()
        self.draining = False
        self.header_timeout = HEADER_TIMEOUT  # read by start()
        self.listeners: list[Listener] = []
        self._runners: list[web.ServerRunner] = []
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def config(self) -> Config:
        return self.runtime.config

    def _build(self, config: Config, previous: Runtime | None) -> Runtime:
        runtime = Runtime(
            config,
            self.outbound,
            clock=self.clock,
            on_secret=REDACTOR.add,
            on_login=self._on_login,
            previous=previous,
            lockouts=self.lockouts,
        )
        self.metrics.add_routes(runtime.routes)
        return runtime

    def _on_login(self, route: str, result: str, seconds: float) -> None:
        """Hook for metrics; the session manager calls it after every login attempt."""
        self.metrics.login(route, result, seconds)

    def _session_statuses(self) -> Iterator[tuple[str, SessionStatus]]:
        for name, rt in self.runtime.routes.items():
            yield name, rt.sessions.status()

    # ------------------------------------------------------------------ listeners

    async def start(self, sockets: dict[tuple[str, int], socket.socket] | None = None) -> None:
        """Bind every listener. ``sockets`` may supply pre-bound ones (workers, tests)."""
        sockets = dict(sockets or {})
        await self.guard.load(self.config)
        main = self.config.listen
        wanted = [(main.host, main.port, None)] + [
            (host, port, rt.name) for host, port, rt in self.runtime.listen_ports()
        ]
        reuse = self.config.workers > 1
        fp = self.config.forward_proxy
        ca = LocalCA.load_or_create(fp.ca.cert, fp.ca.key) if fp.enabled else None
        for host, port, route in wanted:
            sock = sockets.pop((host, port), None) or bind_socket(host, port, reuse_port=reuse)
            bound_port = sock.getsockname()[1]
            forward_proxy = route is None and ca is not None  # the main listener only
            handler = self._handler_for(
                bound_port if route is None else port, is_loopback(host), forward_proxy
            )
            settings: dict[str, Any] = {
                "auto_decompress": False,  # bodies pass through exactly as sent
                "max_field_size": MAX_FIELD_SIZE,
                "max_line_size": MAX_LINE_SIZE,
                "access_log": None,
                # A client that hangs up cancels its request, so the upstream exchange
                # (or the wait for it) is given up at once instead of run to the end.
                "handler_cancellation": True,
                "keepalive_timeout": KEEPALIVE_TIMEOUT,
                "header_timeout": self.header_timeout,
            }
            server = (
                ForwardProxyServer(handler, app=self, ca=ca, **settings)
                if forward_proxy and ca is not None
                else ProxyHttpServer(handler, **settings)
            )
            runner = web.ServerRunner(
                server, handle_signals=False, shutdown_timeout=STRAGGLER_GRACE
            )
            await runner.setup()
            await web.SockSite(runner, sock).start()
            self._runners.append(runner)
            self.listeners.append(Listener(host, bound_port, route))
        log.info(
            "listening",
            pid=os.getpid(),
            listeners=[f"{lst.host}:{lst.port}" for lst in self.listeners],
            routes=list(self.runtime.routes),
        )

    @property
    def port(self) -> int:
        return self.listeners[0].port

    def _handler_for(
        self, port: int, loopback: bool, forward_proxy: bool = False
    ) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
        async def handler(request: web.BaseRequest) -> web.StreamResponse:
            return await self.handle(request, port, loopback, forward_proxy)

        return handler

    # ------------------------------------------------------------------ requests

    async def handle(
        self,
        request: web.BaseRequest,
        port: int,
        loopback: bool = True,
        forward_proxy: bool = False,
    ) -> web.StreamResponse:
        started = time.perf_counter()
        # Forward-proxy mode: inside a CONNECT tunnel, or an absolute-form request.
        target = target_of(request) if forward_proxy else None
        path, _, query = (request.raw_path if target is None else target.path).partition("?")
        if target is None and path in OPEN_ADMIN_PATHS:
            return await self._probe(request, path)
        runtime = self.runtime
        outcome = Outcome()
        route_name: str | None = None
        status = 500
        request_id = request.headers.get("X-Request-ID") or self._next_request_id()
        self._enter(runtime)
        try:
            preflight = self._check_browser(request)
            if preflight is not None:
                status = preflight.status
                return preflight
            guard = self.guard
            guard.check_target(request, path)
            if target is not None:
                if not target.tunnel:  # a tunnel's client authenticated on its CONNECT
                    guard.check_client(request, basic=True)
            else:
                host = host_without_port(request.host)
                if loopback:
                    guard.check_host(host, runtime.router)
                guard.check_client(request)
                if path.startswith("/-/"):
                    admin_response = await self.admin.handle(request, path)
                    status = admin_response.status
                    return admin_response
            if self.draining:
                raise Draining("the proxy is shutting down")
            matched = (
                runtime.router.match(port, host, path)
                if target is None
                else route_for(runtime.router, target)
            )
            if matched is None:
                raise NoRoute(f"no route matches {path}")
            route = matched.target
            route_name = route.name
            # Forward-proxy clients address the vendor by name: no URL points at the proxy.
            route_base = (
                None if target is not None else f"{request.scheme}://{request.host}{matched.prefix}"
            )
            kind = emulation.emulated_kind(route, request.method, matched.rest)
            response: web.StreamResponse
            if kind is not None:
                response = await emulation.answer(route, kind, route_base)
                status = response.status
                return response
            response = await forward(
                request,
                route,
                matched.rest,
                query,
                route_base,
                outcome,
                request_id=request_id,
                upstream_base=None if target is None else target.origin,
            )
            status = response.status
            return response
        except ProxyError as exc:
            if route_name:
                exc.for_route(route_name)
            status = exc.status
            if isinstance(exc, ClientAborted):
                _client_aborted(route_name, exc.phase)
            elif exc.code not in ("login_rejected", "login_failed", "login_backoff"):
                # Login outcomes are logged once by the session manager.
                log.warning("request_failed", route=route_name, code=exc.code, reason=exc.message)
            answer = error_response(exc)
            if self.draining:
                answer.force_close()  # no keep-alive: the client's next try must reconnect
            return answer
        except asyncio.CancelledError:
            # The client hung up (aiohttp cancels the handler and drops the transport), or
            # the drain ran out and shutdown cancelled the straggler.
            if request.transport is not None or self.draining:
                raise
            status = _client_aborted(route_name, outcome.phase(request))
            raise
        finally:
            self._leave(runtime)
            elapsed = time.perf_counter() - started
            if route_name is not None or not path.startswith("/-/"):  # scrapes are not traffic
                self.metrics.request(route_name, status, elapsed, outcome.replayed)
            if runtime.config.log.access:
                ACCESS_LOG.write(
                    route_name,
                    request.method,
                    path,
                    status,
                    elapsed,
                    outcome.upstream_seconds,
                    outcome.replayed,
                    request_id,
                )

    def _check_browser(self, request: web.BaseRequest) -> web.Response | None:
        """Refuse cross-site requests; answer an allowed origin's preflight (or None)."""
        origin = self.guard.check_origin(request.headers)
        if origin is None:
            return None
        allow_cors(request, origin)
        return cors.preflight(request) if cors.is_preflight(request) else None

    async def _probe(self, request: web.BaseRequest, path: str) -> web.StreamResponse:
        """Health probes skip the access log and metrics, but not the cross-site rule."""
        try:
            preflight = self._check_browser(request)
        except ProxyError as exc:
            return error_response(exc)
        return preflight or await self.admin.handle(request, path)

    def _next_request_id(self) -> str:
        """Unique per process run: a random prefix and a counter (cheaper than uuid4)."""
        self._request_counter += 1
        return f"{self._request_id_prefix}{self._request_counter:010x}"

    def _enter(self, runtime: Runtime) -> None:
        self._inflight += 1
        self._idle.clear()
        runtime.enter()

    def _leave(self, runtime: Runtime) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()
        runtime.leave()

    # ------------------------------------------------------------------ lifecycle

    def reload(self, config: Config) -> ReloadResult:
        """Swap in ``config``; routes whose login settings are unchanged keep their sessions.

        A route whose auth changed, or that is gone, is logged out at the vendor. A login
        lockout holds until the route's credentials change: its secret sources are read
        again at its next login attempt (a rotated password file is a change). Listeners
        are not rebound; a change to them is reported as needing a restart.
        """
        previous = self.runtime
        self.runtime = self._build(config, previous)
        result = ReloadResult(ok=True, restart_needed=_restart_needed(previous.config, config))
        for name, rt in self.runtime.routes.items():
            old = previous.routes.get(name)
            if old is None:
                result.added.append(name)
            elif old.sessions is rt.sessions:
                result.kept.append(name)
                rt.sessions.reread_credentials()
            else:
                result.relogin.append(name)
        kept = {rt.sessions for rt in self.runtime.routes.values()}
        logouts = []
        for name, rt in previous.routes.items():
            if name not in self.runtime.routes:
                result.removed.append(name)
            if rt.sessions not in kept:
                logouts.append(self._spawn(rt.sessions.logout()))
        self._retiring.add(previous)
        self._spawn(self._retire(previous, logouts))
        self.metrics.reloaded(True, self.clock.now())
        log.info(
            "config_reloaded",
            kept=result.kept,
            relogin=result.relogin,
            added=result.added,
            removed=result.removed,
        )
        if result.restart_needed:
            log.warning("reload_needs_restart", settings=result.restart_needed)
        return result

    async def reload_from_file(self) -> ReloadResult:
        """Re-read the config file (by path, so renames and symlink swaps are seen)."""
        try:
            if self.config_path is None:
                raise ConfigError("the proxy was not started from a config file")
            config = await asyncio.to_thread(load_config, self.config_path)
            check_startup(config)
            await self.guard.load(config)  # client tokens may have changed too
        except (ConfigError, ProxyError) as exc:
            error = exc.message if isinstance(exc, ProxyError) else str(exc)
            self.metrics.reloaded(False, self.clock.now())
            log.error("reload_failed", path=str(self.config_path), error=error)
            return ReloadResult(ok=False, error=error)
        return self.reload(config)

    def schedule_reload(self) -> None:
        """Reload from a signal handler (SIGHUP)."""
        self._spawn(self.reload_from_file())

    async def _retire(self, old: Runtime, logouts: list[asyncio.Task[Any]]) -> None:
        """Once nothing runs on ``old`` any more, close the upstream pools only it used."""
        await asyncio.gather(*logouts, return_exceptions=True)  # they use old's clients
        await old.drained()
        self._retiring.discard(old)
        live = [rt.client for r in (self.runtime, *self._retiring) for rt in r.routes.values()]
        await self.outbound.release_unused(live)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._background.discard)
        return task

    async def stop(self, *, drain_timeout: float | None = None) -> None:
        """Answer new requests 503, drain in-flight ones, close, log sessions out.

        The listeners stay open while draining so that clients (and ``/-/readyz``) get
        a clear 503 rather than a refused connection; nothing is forwarded any more.
        """
        self.draining = True
        timeout = self.config.shutdown_timeout if drain_timeout is None else drain_timeout
        log.info("draining", inflight=self._inflight, timeout=timeout)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("drain_timeout", inflight=self._inflight)
        for runner in self._runners:
            await runner.cleanup()  # closes listeners and connections, cancels stragglers
        self._runners.clear()
        await self.logout_all()
        await self.outbound.close()
        ACCESS_LOG.flush()
        log.info("stopped")

    async def logout_all(self) -> None:
        """Log every session out, bounded to LOGOUT_BUDGET seconds in all."""
        tasks: list[Awaitable[Any]] = [rt.sessions.logout() for rt in self.runtime.routes.values()]
        tasks.extend(self._background)  # logouts of routes a reload removed or changed
        if not tasks:
            return
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), LOGOUT_BUDGET)
        except TimeoutError:
            log.warning("logout_timeout", seconds=LOGOUT_BUDGET)


def _client_aborted(route: str | None, phase: str) -> int:
    """Log a client that went away; the status its request is logged and counted with."""
    log.info("client_aborted", route=route, phase=phase)
    return STATUS_BY_CODE["client_aborted"]


def _listeners(config: Config) -> set[tuple[str, int]]:
    out = {(config.listen.host, config.listen.port)}
    for route in config.routes:
        if route.match.listen is not None:
            out.add((route.match.listen.host or config.listen.host, route.match.listen.port))
    return out


def _restart_needed(old: Config, new: Config) -> list[str]:
    """Settings that only take effect at start-up and that ``new`` changes."""
    changed = []
    if _listeners(old) != _listeners(new):
        changed.append("listeners")
    if old.workers != new.workers:
        changed.append("workers")
    if (old.log.level, old.log.format) != (new.log.level, new.log.format):
        changed.append("log")
    if old.forward_proxy != new.forward_proxy:
        changed.append("forward_proxy")
    return changed

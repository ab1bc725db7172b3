"""The request pipeline: short steps over one ``Exchange`` per request.

probe? → cross-site check (and CORS preflight) → guard → admin endpoint? → draining?
→ route → login emulation? → forward. A refusal at any step is a ``ProxyError``, turned
into an answer in one place (``server.responses``); every request ends in exactly one
access line and one metrics update.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

from proxy.core.errors import ClientAborted, Draining, NoRoute, ProxyError
from proxy.core.hosts import host_without_port, loopback_host
from proxy.ops.logs import ACCESS_LOG
from proxy.server import cors, emulation
from proxy.server.admin import Admin
from proxy.server.connect import Target, route_for, target_of
from proxy.server.guard import OPEN_ADMIN_PATHS
from proxy.server.responses import error_response
from proxy.server.runtime import Runtime
from proxy.server.state import ServerState
from proxy.upstream.exchange import Exchange
from proxy.upstream.headers import allow_origin
from proxy.upstream.relay import forward

log = structlog.get_logger("auth_proxy")

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
# Logged once, by the session manager, where they happen.
_LOGIN_OUTCOMES = frozenset({"login_rejected", "login_failed", "login_backoff"})


@dataclass(frozen=True, slots=True)
class Door:
    """How requests arrive: the listener's port, and what kind of listener it is."""

    port: int
    loopback: bool  # the Host check against DNS rebinding applies
    forward_proxy: bool  # CONNECT and absolute-form requests are accepted


class Pipeline:
    def __init__(self, state: ServerState, admin: Admin) -> None:
        self.state = state
        self.admin = admin

    def handler(self, door: Door) -> Handler:
        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            return await self.handle(request, door)

        return handle

    async def handle(self, request: web.BaseRequest, door: Door) -> web.StreamResponse:
        started = time.perf_counter()
        # Forward-proxy mode: inside a CONNECT tunnel, or an absolute-form request.
        target = target_of(request) if door.forward_proxy else None
        path, _, query = (request.raw_path if target is None else target.path).partition("?")
        if target is None and path in OPEN_ADMIN_PATHS:
            return await self._probe(request, path)
        state = self.state
        runtime = state.runtime
        request_id = request.headers.get("X-Request-ID") or state.next_request_id()
        origin = None if target is None else target.origin
        ex = Exchange(request, request_id, path, query, origin=origin)
        state.enter(runtime)
        try:
            try:
                response = await self._respond(ex, door, target, runtime)
            except ProxyError as exc:
                response = self._refuse(ex, exc)
            if not response.prepared:
                ex.decorate(response.headers)
            ex.status = response.status
            return response
        except asyncio.CancelledError:
            # The client hung up (aiohttp cancels the handler and drops the transport), or
            # the drain ran out and shutdown cancelled the straggler.
            if request.transport is not None or state.draining:
                raise
            ex.status = _client_aborted(ex.route_name, ex.phase())
            raise
        finally:
            state.leave(runtime)
            self._record(ex, runtime, time.perf_counter() - started)

    async def _respond(
        self, ex: Exchange, door: Door, target: Target | None, runtime: Runtime
    ) -> web.StreamResponse:
        request = ex.request
        preflight = self._browser(ex)
        if preflight is not None:
            return preflight
        host = host_without_port(request.host)
        self._admit(ex, door, target, runtime, host)
        if target is None and ex.path.startswith("/-/"):
            return await self.admin.handle(request, ex.path)
        if self.state.draining:
            raise Draining("the proxy is shutting down")
        matched = (
            runtime.router.match(door.port, host, ex.path)
            if target is None
            else route_for(runtime.router, target)
        )
        if matched is None:
            raise NoRoute(f"no route matches {ex.path}")
        route, prefix, ex.rest = matched
        ex.route = route
        if target is None:
            ex.public_base = f"{request.scheme}://{request.host}{prefix}"
        kind = emulation.emulated_kind(route, request.method, ex.rest)
        if kind is not None:
            return await emulation.answer(route, kind, ex.public_base)
        return await forward(ex, route)

    def _browser(self, ex: Exchange) -> web.Response | None:
        """Refuse cross-site requests; answer an allowed origin's preflight (or None)."""
        request = ex.request
        # The proxy's own pages (the status page's clear button) call its admin endpoints
        # from its own origin: accepted on a loopback Host, which a page that rebinds its
        # name to 127.0.0.1 cannot send. Routed paths keep the rule: a vendor's page served
        # through the proxy shares that origin, and is allowed only if listed.
        own = None
        if (
            ex.origin is None
            and ex.path.startswith("/-/")
            and loopback_host(host_without_port(request.host))
        ):
            own = f"{request.scheme}://{request.host}"
        origin = self.state.guard.check_origin(request.headers, own)
        if origin is None:
            return None
        ex.cors_origin = origin
        return cors.preflight(ex.request) if cors.is_preflight(ex.request) else None

    def _admit(
        self, ex: Exchange, door: Door, target: Target | None, runtime: Runtime, host: str
    ) -> None:
        """The guard's checks: target and method, Host (loopback), client credentials."""
        guard, request = self.state.guard, ex.request
        guard.check_target(request, ex.path)
        if target is not None:
            if not target.tunnel:  # a tunnel's client authenticated on its CONNECT
                guard.check_client(request, basic=True)
            return
        if door.loopback:
            guard.check_host(host, runtime.router)
        guard.check_client(request)

    def _refuse(self, ex: Exchange, exc: ProxyError) -> web.Response:
        ex.error_code = exc.code
        if ex.route is not None:
            exc.for_route(ex.route.name)
        if isinstance(exc, ClientAborted):
            _client_aborted(ex.route_name, exc.phase)
        elif exc.code not in _LOGIN_OUTCOMES:
            log.warning("request_failed", route=ex.route_name, code=exc.code, reason=exc.message)
        answer = error_response(exc)
        if self.state.draining:
            answer.force_close()  # no keep-alive: the client's next try must reconnect
        return answer

    def _record(self, ex: Exchange, runtime: Runtime, elapsed: float) -> None:
        """The request's access line and metrics (scrapes of ``/-/`` are not traffic)."""
        route = ex.route
        if route is not None or not ex.path.startswith("/-/"):
            self.state.metrics.request(ex.route_name, ex.status, elapsed, ex.replayed)
        if route is not None:  # for the status page
            self.state.traffic.request(
                self.state.clock.now(),
                route.name,
                ex.status,
                ex.error_code,
                ex.replayed,
                ex.throttled,
            )
        if runtime.config.log.access:
            ACCESS_LOG.write(
                ex.route_name,
                ex.request.method,
                ex.path,
                ex.status,
                elapsed,
                ex.upstream_seconds,
                ex.replayed,
                ex.request_id,
            )

    async def _probe(self, request: web.BaseRequest, path: str) -> web.StreamResponse:
        """Health probes skip the access log and metrics, but not the cross-site rule."""
        try:
            origin = self.state.guard.check_origin(request.headers)
        except ProxyError as exc:
            return error_response(exc)
        if origin is not None and cors.is_preflight(request):
            response: web.StreamResponse = cors.preflight(request)
        else:
            response = await self.admin.handle(request, path)
        if origin is not None:
            allow_origin(response.headers, origin)
        return response


def _client_aborted(route: str | None, phase: str) -> int:
    """Log a client that went away; the status its request is logged and counted with."""
    log.info("client_aborted", route=route, phase=phase)
    return ClientAborted(phase).status

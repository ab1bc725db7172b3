"""The request pipeline: short steps over one ``Exchange`` per request.

probe? → cross-site check (and CORS preflight) → guard → admin endpoint? → draining?
→ route → login emulation? → forward. A refusal at any step is a ``ProxyError``, turned
into an answer in one place (``server.responses``); every request ends in exactly one
access line and one metrics update. Its id is set for the whole request
(``ops.logs.REQUEST_ID``): every event logged on its behalf carries it, and every answer
names it in ``X-Request-ID``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

from proxy.core.errors import ClientAborted, Draining, NoRoute, ProxyError, RateLimited
from proxy.core.hosts import host_without_port, loopback_host
from proxy.ops.logs import ACCESS_LOG, REDACTOR, REQUEST_ID
from proxy.server import cors, emulation
from proxy.server.admin import STATUS, STATUS_PATHS, Admin
from proxy.server.clients import Client
from proxy.server.connect import Target, route_for, target_of
from proxy.server.guard import OPEN_ADMIN_PATHS, SCRAPE_PATH
from proxy.server.responses import error_response
from proxy.server.runtime import Runtime
from proxy.server.state import ServerState
from proxy.upstream.exchange import Exchange
from proxy.upstream.headers import REQUEST_ID_HEADER, allow_origin
from proxy.upstream.relay import forward

log = structlog.get_logger("auth_proxy")

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
# Logged once, by the session manager, where they happen.
_LOGIN_OUTCOMES = frozenset({"login_rejected", "login_failed", "login_backoff"})
# The audit log records every request but these reads, and every refusal.
# Fetched every few seconds by Prometheus and by an open status page: answered, they are
# not access-logged (README, "Logs"); the status page itself is, once per visit.
_POLLED = frozenset({SCRAPE_PATH, *STATUS_PATHS} - {STATUS})
_READS = frozenset({"GET", "HEAD"})
_DENIALS = frozenset({"client_unauthorized", "forbidden", "rate_limited", "method_not_allowed"})


@dataclass(frozen=True, slots=True)
class Door:
    """How requests arrive: the listener's port, and what kind of listener it is."""

    port: int
    loopback: bool  # the Host check against DNS rebinding applies
    forward_proxy: bool  # CONNECT and absolute-form requests are accepted
    tls: bool = False  # a client certificate may have been verified (with client_ca)


class Pipeline:
    def __init__(self, state: ServerState, admin: Admin) -> None:
        self.state = state
        self.admin = admin

    def handler(self, door: Door) -> Handler:
        # A partial, not a wrapping coroutine: every resumption of a request's coroutine
        # chain walks each frame in it, so the hot path keeps that chain short.
        return functools.partial(self.handle, door=door)

    async def handle(self, request: web.BaseRequest, door: Door) -> web.StreamResponse:
        started = time.perf_counter()
        # Forward-proxy mode: inside a CONNECT tunnel, or an absolute-form request.
        target = target_of(request) if door.forward_proxy else None
        path, _, query = (request.raw_path if target is None else target.path).partition("?")
        if target is None and path in OPEN_ADMIN_PATHS:
            return await self._probe(request, path)
        state = self.state
        runtime = state.runtime
        request_id = state.request_id(request.headers.get(REQUEST_ID_HEADER))
        # Not reset: aiohttp runs each request in a task of its own, whose context ends
        # with it (and aiohttp's handling of a crash, in that task, still sees it).
        REQUEST_ID.set(request_id)
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
                ex.bytes_out = response.content_length or 0
            ex.status = response.status
            return response
        except asyncio.CancelledError:
            # The client hung up (aiohttp cancels the handler and drops the transport), or
            # the drain ran out and shutdown cancelled the straggler.
            if request.transport is not None or state.draining:
                raise
            ex.status = _client_aborted(ex.route_name, ex.phase())
            ex.error_code = ClientAborted.code
            raise
        except Exception:
            ex.error_code = "internal"  # answered (and logged) by the HTTP server's handler
            raise
        finally:
            state.leave(runtime)
            self._record(ex, runtime, time.perf_counter() - started)

    def _respond(
        self, ex: Exchange, door: Door, target: Target | None, runtime: Runtime
    ) -> Awaitable[web.StreamResponse]:
        """The checks and routing, done at once; the awaitable that makes the answer.

        Not a coroutine itself, so the answer's coroutine is awaited by ``handle``
        directly (one frame less on every resumption of the request).
        """
        request = ex.request
        preflight = self._browser(ex)
        if preflight is not None:
            return _ready(preflight)
        host = host_without_port(request.host)
        client = self._admit(ex, door, target, runtime, host)
        if target is None and ex.path.startswith("/-/"):
            if client is not None:
                client.check_admin(request.method)
                self._check_rate(client)
            return self.admin.handle(request, ex.path, admin_client=client is not None)
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
        if client is not None:
            client.check_request(route.name, request.method, request.headers)
            self._check_rate(client)
        if target is None:
            ex.public_base = f"{request.scheme}://{request.host}{prefix}"
        kind = emulation.emulated_kind(route, request.method, ex.rest)
        if kind is not None:
            return emulation.answer(route, kind, ex.public_base)
        return forward(ex, route)

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
    ) -> Client | None:
        """The guard's checks: target and method, Host (loopback), client credentials;
        the client, whose scope is checked once the route is known."""
        guard, request = self.state.guard, ex.request
        guard.check_target(request, ex.path)
        if target is None:
            if door.loopback:
                guard.check_host(host, runtime.router)
            client = guard.check_client(request, scrape=ex.path == SCRAPE_PATH, certified=door.tls)
        elif target.tunnel:  # the credentials came on the CONNECT
            client = guard.check_credentials(target.authorization, basic=True)
        else:
            client = guard.check_client(request, basic=True)
        if client is not None:
            ex.client = client.name
        return client

    def _check_rate(self, client: Client) -> None:
        try:
            client.check_rate(self.state.clock.now())
        except RateLimited:
            self.state.metrics.client_rate_limited.labels(client.name).inc()
            raise

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
        """The request's access line, audit line, metrics and the status page's counts
        (calls of ``/-/`` are not traffic, and answered metrics scrapes are not
        access-logged)."""
        route = ex.route
        admin = route is None and ex.path.startswith("/-/")
        if not admin:
            self.state.metrics.request(
                ex.route_name, ex.status, elapsed, ex.replayed, ex.error_code
            )
        if route is not None:
            self.state.traffic.request(
                self.state.clock.now(),
                route.name,
                ex.status,
                ex.error_code,
                ex.replayed,
                ex.throttled,
            )
        if runtime.config.log.access and not (admin and ex.path in _POLLED and ex.status < 400):
            ACCESS_LOG.write(ex, elapsed)
        audit = self.state.audit
        if audit is not None and (ex.method not in _READS or ex.error_code in _DENIALS):
            audit.write(
                client=ex.client,
                client_addr=ex.client_addr,
                route=ex.route_name,
                method=ex.method,
                path=REDACTOR.text(ex.path),
                status=ex.status,
                request_id=ex.request_id,
                code=ex.error_code,
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


async def _ready(response: web.StreamResponse) -> web.StreamResponse:
    return response


def _client_aborted(route: str | None, phase: str) -> int:
    """Log a client that went away; the status its request is logged and counted with."""
    log.info("client_aborted", route=route, phase=phase)
    return ClientAborted(phase).status

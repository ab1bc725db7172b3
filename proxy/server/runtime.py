"""The live form of a config: one ``RouteRuntime`` per route and the router over them.

Built once per (re)load. Everything the request path needs per route is computed here
so a request does no per-route work beyond dictionary lookups.
"""

from __future__ import annotations

import asyncio

from proxy.config import Config, Route
from proxy.core.clock import Clock
from proxy.core.errors import RouteBusy
from proxy.flows import CREDENTIAL_HEADERS, flow_for
from proxy.ops.metrics import Metrics
from proxy.server.routing import Router
from proxy.sessions.credentials import route_scope
from proxy.sessions.lease import Register
from proxy.sessions.manager import RouteSessions
from proxy.sessions.stores import SessionStores
from proxy.upstream.client import Outbound, RouteClient
from proxy.upstream.limiter import ConcurrencyLimiter
from proxy.upstream.route import RouteRuntime
from proxy.upstream.throttle import ThrottlePolicy


# Headers a client may send that would let it speak with someone else's credentials.
def _drop_set(route: Route) -> frozenset[str]:
    return CREDENTIAL_HEADERS | {h.name.lower() for h in route.headers}


def _limiter(route: str, limit: int | None, metrics: Metrics) -> ConcurrencyLimiter | None:
    if limit is None:
        return None

    def busy(message: str, retry_after: float) -> RouteBusy:
        return RouteBusy(message, route=route, retry_after=retry_after)

    limiter = ConcurrencyLimiter(limit, busy)
    limiter.on_wait = metrics.watch_queue(route, lambda: limiter.queued)
    return limiter


def _sessions(
    route: Route,
    client: RouteClient,
    clock: Clock,
    on_secret: Register,
    metrics: Metrics,
    stores: SessionStores,
) -> RouteSessions:
    """New sessions for ``route``, logging in through ``client``."""
    return RouteSessions(
        route.name,
        flow_for(route),
        client.execute,
        clock=clock,
        idle_timeout=route.auth.idle_timeout,
        idle_timeout_source=(
            "config" if "idle_timeout" in route.auth.model_fields_set else "default"
        ),
        refresh_margin=route.auth.refresh_margin,
        login_retry_after=route.auth.login_retry_after,
        reauth_on=route.auth.reauth_on,
        on_secret=on_secret,
        observer=metrics,
        stores=stores,
        scope=route_scope(route.allowed_hosts, client.settings.resolve),
    )


class Runtime:
    def __init__(
        self,
        config: Config,
        outbound: Outbound,
        *,
        clock: Clock,
        on_secret: Register,
        metrics: Metrics,
        stores: SessionStores,
        previous: Runtime | None = None,
    ) -> None:
        self.config = config
        self.routes: dict[str, RouteRuntime] = {}
        self.router: Router[RouteRuntime] = Router()
        # Requests running on this runtime: after a reload, its upstream pools may be
        # closed only once they have finished.
        self._inflight = 0
        self._drained = asyncio.Event()
        self._drained.set()
        for route in config.routes:
            settings = config.upstream_for(route)
            client = outbound.client_for(route.name, settings)
            kept = previous.reusable(route, client) if previous else None
            sessions = kept or _sessions(route, client, clock, on_secret, metrics, stores)
            if previous is not None and kept is None:
                sessions.after_reload()
            rt = RouteRuntime(
                config=route,
                sessions=sessions,
                client=client,
                static_headers=route.headers,
                drop_headers=_drop_set(route),
                retry_body_limit=settings.retry_body_limit,
                throttle=ThrottlePolicy(
                    max_wait=settings.throttle.max_wait,
                    methods=frozenset(settings.throttle.methods),
                ),
                limiter=_limiter(route.name, settings.max_concurrent, metrics),
                queue_timeout=settings.queue_timeout,
                clock=clock,
                events=metrics,
            )
            self.routes[route.name] = rt
            m = route.match
            if m.prefix is not None:
                self.router.add_prefix(m.prefix, rt)
            elif m.host is not None:
                self.router.add_hosts(m.host, rt)
            elif m.listen is not None:
                self.router.add_port(m.listen.port, rt)

    def reusable(self, route: Route, client: RouteClient) -> RouteSessions | None:
        """This runtime's sessions for ``route`` if nothing about its login changed.

        Kept sessions log in through the client they were made with, so a new TLS
        context (a CA bundle rotated in place) means new sessions too.
        """
        old = self.routes.get(route.name)
        if (
            old is None
            or old.config.auth != route.auth
            or old.config.allowed_hosts != route.allowed_hosts
        ):
            return None
        if (
            old.client.settings.connection() != client.settings.connection()
            or old.client.ssl is not client.ssl
        ):
            return None
        return old.sessions

    def enter(self) -> None:
        self._inflight += 1
        self._drained.clear()

    def leave(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._drained.set()

    async def drained(self) -> None:
        await self._drained.wait()

    def listen_ports(self) -> list[tuple[str, int, RouteRuntime]]:
        out = []
        for rt in self.routes.values():
            listen = rt.config.match.listen
            if listen is not None:
                out.append((listen.host or self.config.listen.host, listen.port, rt))
        return out

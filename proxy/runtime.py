"""The live form of a config: one ``RouteRuntime`` per route and the router over them.

Built once per (re)load. Everything the request path needs per route is computed here
so a request does no per-route work beyond dictionary lookups.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.clock import Clock
from proxy.config import Config, Route, UpstreamSettings
from proxy.flows import flow_for
from proxy.outbound import Outbound, RouteClient
from proxy.routing import Router
from proxy.sessions import LoginObserver, Register, RouteSessions
from proxy.workers import LockoutBoard


@dataclass(eq=False)
class RouteRuntime:
    config: Route
    sessions: RouteSessions
    client: RouteClient
    static_headers: tuple[tuple[str, str], ...]
    drop_headers: frozenset[str]  # lowercase names
    reauth_on: frozenset[int]
    retry_body_limit: int

    @property
    def name(self) -> str:
        return self.config.name


# Headers a client may send that would let it speak with someone else's credentials.
_ALWAYS_DROPPED = ("icSessionId", "INFA-SESSION-ID", "IDS-SESSION-ID", "Authorization")


def _drop_set(route: Route) -> frozenset[str]:
    return frozenset(n.lower() for n in (*_ALWAYS_DROPPED, *route.headers))


class Runtime:
    def __init__(
        self,
        config: Config,
        outbound: Outbound,
        *,
        clock: Clock,
        on_secret: Register,
        on_login: LoginObserver,
        previous: Runtime | None = None,
        lockouts: LockoutBoard | None = None,
    ) -> None:
        self.config = config
        self.routes: dict[str, RouteRuntime] = {}
        self.router: Router[RouteRuntime] = Router()
        for route in config.routes:
            settings = config.upstream_for(route)
            client = outbound.client_for(route.name, settings)
            kept = previous.reusable(route, settings) if previous else None
            sessions = kept or RouteSessions(
                route.name,
                flow_for(route),
                client.execute,
                clock=clock,
                idle_timeout=route.auth.idle_timeout,
                refresh_margin=route.auth.refresh_margin,
                login_retry_after=route.auth.login_retry_after,
                on_secret=on_secret,
                on_login=on_login,
                lockouts=lockouts,
            )
            rt = RouteRuntime(
                config=route,
                sessions=sessions,
                client=client,
                static_headers=tuple(route.headers.items()),
                drop_headers=_drop_set(route),
                reauth_on=frozenset(route.auth.reauth_on if sessions.flow.can_relogin else ()),
                retry_body_limit=settings.retry_body_limit,
            )
            self.routes[route.name] = rt
            m = route.match
            if m.prefix is not None:
                self.router.add_prefix(m.prefix, rt)
            elif m.host is not None:
                self.router.add_hosts(m.host, rt)
            elif m.listen is not None:
                self.router.add_port(m.listen.port, rt)

    def reusable(self, route: Route, settings: UpstreamSettings) -> RouteSessions | None:
        """This runtime's sessions for ``route`` if nothing about its login changed."""
        old = self.routes.get(route.name)
        if (
            old is None
            or old.config.auth != route.auth
            or old.config.allowed_hosts != route.allowed_hosts
        ):
            return None
        if old.client.settings != settings:
            return None
        return old.sessions

    def listen_ports(self) -> list[tuple[str, int, RouteRuntime]]:
        out = []
        for rt in self.routes.values():
            listen = rt.config.match.listen
            if listen is not None:
                out.append((listen.host or self.config.listen.host, listen.port, rt))
        return out

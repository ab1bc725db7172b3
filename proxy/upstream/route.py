"""A route as the data path uses it: its config, its sessions, its upstream client and the
header rules computed once per (re)load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from proxy.config import Route
from proxy.core.clock import Clock
from proxy.sessions.manager import RouteSessions
from proxy.upstream.client import RouteClient
from proxy.upstream.limiter import ConcurrencyLimiter
from proxy.upstream.throttle import ThrottlePolicy


class RouteEvents(Protocol):
    """What the data path reports beyond the access line (the metrics implement it)."""

    def throttled(self, route: str, retried: bool) -> None: ...
    def preflight_renewal(self, route: str) -> None: ...


@dataclass(eq=False)
class RouteRuntime:
    config: Route
    sessions: RouteSessions
    client: RouteClient
    static_headers: tuple[tuple[str, str], ...]
    drop_headers: frozenset[str]  # lowercase names
    retry_body_limit: int
    throttle: ThrottlePolicy
    limiter: ConcurrencyLimiter | None  # None: no max_concurrent
    queue_timeout: float
    clock: Clock
    events: RouteEvents

    @property
    def name(self) -> str:
        return self.config.name

"""A route as the data path uses it: its config, its sessions, its upstream client and the
header rules computed once per (re)load.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.config import Route
from proxy.sessions.manager import RouteSessions
from proxy.upstream.client import RouteClient


@dataclass(eq=False)
class RouteRuntime:
    config: Route
    sessions: RouteSessions
    client: RouteClient
    static_headers: tuple[tuple[str, str], ...]
    drop_headers: frozenset[str]  # lowercase names
    retry_body_limit: int

    @property
    def name(self) -> str:
        return self.config.name

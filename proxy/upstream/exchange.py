"""One request's journey through the proxy: what each step reads and fills in.

The server's pipeline creates an ``Exchange`` per request and fills in the client side
(route, path, how the client addresses the route); the relay fills in the upstream side
(time spent upstream, whether it replayed, whether the answer started). The access line
and the metrics are written from it at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from proxy.upstream.headers import allow_origin
from proxy.upstream.route import RouteRuntime


@dataclass(slots=True, eq=False)
class Exchange:
    request: web.BaseRequest
    request_id: str
    path: str  # raw, without the query
    query: str  # raw, byte for byte
    # Forward-proxy mode: the origin the client named (the upstream, and the name the
    # client keeps using: no URL in an answer points at the proxy). None: reverse mode.
    origin: str | None = None
    route: RouteRuntime | None = None
    # The route base as the client sees it (scheme, Host, the matched prefix), which
    # answers' URLs are pointed back at; None in forward-proxy mode.
    public_base: str | None = None
    rest: str = ""  # the path after the prefix
    cors_origin: str | None = None  # an allowed browser origin: every answer names it
    status: int = 500
    upstream_seconds: float = 0.0
    replayed: bool = False
    throttled: int = 0  # throttled answers the vendor gave (429, 503 with Retry-After)
    error_code: str | None = None  # the proxy's error code when it refused the request
    responding: bool = False  # the answer's headers went to the client

    @property
    def route_name(self) -> str | None:
        return None if self.route is None else self.route.name

    def phase(self) -> str:
        """What the client was doing when it went away (see ``ClientAborted``)."""
        if self.responding:
            return "download"
        return "waiting" if self.request.content.is_eof() else "upload"

    def decorate(self, headers: CIMultiDict[str]) -> None:
        """Add what every answer to this request carries, whoever made the answer."""
        if self.cors_origin is not None:
            allow_origin(headers, self.cors_origin)

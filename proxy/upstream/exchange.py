"""One request's journey through the proxy: what each step reads and fills in.

The server's pipeline creates an ``Exchange`` per request and fills in the client side
(route, path, how the client addresses the route, the error code of a refusal); the
relay fills in the upstream side (time spent upstream, the upstream's status, whether it
replayed, whether the answer started, the body bytes sent back). The access line and the
metrics are written from it at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from proxy.upstream.headers import REQUEST_ID_HEADER, allow_origin
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
    client: str | None = None  # the authenticated client's name (``client_auth``)
    route: RouteRuntime | None = None
    # The route base as the client sees it (scheme, Host, the matched prefix), which
    # answers' URLs are pointed back at; None in forward-proxy mode.
    public_base: str | None = None
    rest: str = ""  # the path after the prefix
    cors_origin: str | None = None  # an allowed browser origin: every answer names it
    status: int = 500
    error_code: str | None = None  # the proxy's own error code, when it made the answer
    upstream_seconds: float = 0.0
    upstream_status: int | None = None  # of the last upstream answer, if any
    replayed: bool = False
    throttled: int = 0  # throttled answers the vendor gave (429, 503 with Retry-After)
    responding: bool = False  # the answer's headers went to the client
    bytes_out: int = 0  # body bytes of the answer

    @property
    def bytes_in(self) -> int:
        """Body bytes received from the client (what was relayed, for a forwarded
        request); aiohttp counts them as it reads."""
        return self.request.content.total_bytes

    @property
    def route_name(self) -> str | None:
        return None if self.route is None else self.route.name

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def client_addr(self) -> str | None:
        return self.request.remote

    def phase(self) -> str:
        """What the client was doing when it went away (see ``ClientAborted``)."""
        if self.responding:
            return "download"
        return "waiting" if self.request.content.is_eof() else "upload"

    def decorate(self, headers: CIMultiDict[str]) -> None:
        """Add what every answer to this request carries, whoever made the answer."""
        headers[REQUEST_ID_HEADER] = self.request_id
        if self.cors_origin is not None:
            allow_origin(headers, self.cors_origin)

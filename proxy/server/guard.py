"""Who may use the proxy, and which requests it refuses outright (the README: "Security").

- Client authentication: ``Proxy-Authorization: Bearer <token>`` against
  ``client_auth.tokens``, compared in constant time. Forward-proxy requests (CONNECT,
  absolute-form) may also send ``Basic`` with the token as the password: that is what
  clients derive from ``HTTPS_PROXY=http://user:<token>@host:port``.
- DNS-rebinding defence: on a loopback listener, the ``Host`` header must be a loopback
  name/address or a host a route matches; a web page that rebinds its own name to
  127.0.0.1 is refused.
- Cross-site defence: a web page can make the browser send requests to 127.0.0.1.
  A request the browser marks as coming from another site (an ``Origin`` not in
  ``allowed_origins``, or ``Sec-Fetch-Site: cross-site``/``same-site`` without one) is
  refused; clients that are not browsers send neither header. The proxy's own origin
  on a loopback ``Host`` calling ``/-/`` (the status page) is not another site. State-changing
  admin endpoints also need a request that no HTML form can send (``check_state_change``).
- Request targets that are not a plain origin-form path (absolute-form, ``CONNECT``,
  ``*``) and paths with broken percent-encoding are refused before any routing, and so
  are ``TRACE``/``TRACK``, which would echo the injected session back.
"""

from __future__ import annotations

import base64
import hmac
import re
from typing import Any

from aiohttp import web
from multidict import CIMultiDictProxy, istr

from proxy.config import Config
from proxy.core.errors import BadRequest, ClientUnauthorized, Forbidden, MethodNotAllowed
from proxy.core.hosts import loopback_host
from proxy.server.routing import Router

_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ORIGIN = istr("Origin")
_FETCH_SITE = istr("Sec-Fetch-Site")
_OTHER_SITE = frozenset({"cross-site", "same-site"})
_STATE_CHANGE_HEADER = istr("X-Auth-Proxy")
_ECHO_METHODS = frozenset({"TRACE", "TRACK"})
# Probes must work without credentials (container health checks, load balancers).
OPEN_ADMIN_PATHS = frozenset({"/-/healthz", "/-/readyz"})


def check_state_change(request: web.BaseRequest) -> None:
    """Refuse a state change that an HTML form (or any "simple" request) could send.

    A page can only send a JSON ``Content-Type`` or a custom header after a CORS
    preflight, which the proxy grants to ``allowed_origins`` alone.
    """
    if _STATE_CHANGE_HEADER in request.headers or request.content_type == "application/json":
        return
    raise Forbidden(
        "this endpoint changes state: send the header X-Auth-Proxy: 1 or a "
        "Content-Type: application/json body (an HTML form can send neither)"
    )


class Guard:
    def __init__(self) -> None:
        self._tokens: tuple[bytes, ...] = ()
        self._origins: frozenset[str] = frozenset()

    async def load(self, config: Config) -> None:
        """Take the allowed origins and resolve the client tokens, once per config load."""
        self._origins = frozenset(config.allowed_origins)
        if config.client_auth is None:
            self._tokens = ()
            return
        self._tokens = tuple(
            [(await source.resolve()).encode() for source in config.client_auth.tokens]
        )

    def check_origin(self, headers: CIMultiDictProxy[str], own: str | None = None) -> str | None:
        """The request's allowed browser origin; None when no browser marked it, or when
        a page of the proxy's own origin ``own`` sent it (the status page).

        Browsers send ``Origin`` on cross-origin and non-GET requests and
        ``Sec-Fetch-Site`` on all of them; a page cannot forge either.
        """
        origin = headers.get(_ORIGIN)
        if origin is not None:
            if origin in self._origins:
                return origin
            if origin == own:
                return None
            if origin == "null":
                raise Forbidden(
                    "a browser page with an opaque origin (Origin: null: a sandboxed frame "
                    "or a file:// page) may not use the proxy"
                )
            raise Forbidden(
                f"a browser page at {origin} may not use the proxy (cross-site request); "
                "to allow it, add that origin to allowed_origins"
            )
        site = headers.get(_FETCH_SITE)
        if site in _OTHER_SITE:
            raise Forbidden(
                f"a browser marked this request {site} (Sec-Fetch-Site) and sent no allowed "
                "Origin; to let a browser app use the proxy, add its origin to allowed_origins"
            )
        return None

    def check_target(self, request: web.BaseRequest, path: str) -> None:
        if request.method in _ECHO_METHODS:
            raise MethodNotAllowed(f"{request.method} is not accepted: it would echo credentials")
        if request.method == "CONNECT" or not path.startswith("/"):
            raise Forbidden(
                "this listener accepts only origin-form requests (/path); "
                "CONNECT and absolute URLs need forward_proxy.enabled"
            )
        if "%" in path and _BAD_PERCENT.search(path):
            raise BadRequest("the request path has invalid percent-encoding")

    def check_host(self, host: str, router: Router[Any]) -> None:
        """Refuse Host headers that are neither loopback nor a routed host."""
        if loopback_host(host) or router.has_host(host):
            return
        raise Forbidden(f"Host {host!r} is not served here (DNS-rebinding protection)")

    def check_client(self, request: web.BaseRequest, *, basic: bool = False) -> None:
        self.check_credentials(request.headers.get("Proxy-Authorization", ""), basic=basic)

    def check_credentials(self, header: str, *, basic: bool = False) -> None:
        """Check a ``Proxy-Authorization`` value; ``basic`` also accepts user:token."""
        if not self._tokens:
            return
        scheme, _, presented = header.partition(" ")
        scheme = scheme.lower()
        if basic and scheme == "basic":
            try:
                decoded = base64.b64decode(presented.strip(), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                decoded = ""
            scheme, presented = "bearer", decoded.partition(":")[2]
        if scheme != "bearer" or not presented:
            raise ClientUnauthorized("send Proxy-Authorization: Bearer <token>")
        candidate = presented.strip().encode()
        # Compare against every token so timing says nothing about which one matched.
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(candidate, token)
        if not matched:
            raise ClientUnauthorized("the client token is not valid")

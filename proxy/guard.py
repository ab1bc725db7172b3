"""Who may use the proxy, and which requests it refuses outright (SPEC §7, §8).

- Client authentication: ``Proxy-Authorization: Bearer <token>`` against
  ``client_auth.tokens``, compared in constant time. Forward-proxy requests (CONNECT,
  absolute-form) may also send ``Basic`` with the token as the password: that is what
  clients derive from ``HTTPS_PROXY=http://user:<token>@host:port``.
- DNS-rebinding defence: on a loopback listener, the ``Host`` header must be a loopback
  name/address or a host a route matches; a web page that rebinds its own name to
  127.0.0.1 is refused.
- Request targets that are not a plain origin-form path (absolute-form, ``CONNECT``,
  ``*``) and paths with broken percent-encoding are refused before any routing, and so
  are ``TRACE``/``TRACK``, which would echo the injected session back.
"""

from __future__ import annotations

import base64
import functools
import hmac
import re
from typing import Any

from aiohttp import web

from proxy.config import Config, is_loopback
from proxy.errors import BadRequest, ClientUnauthorized, Forbidden, MethodNotAllowed
from proxy.routing import Router

_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ECHO_METHODS = frozenset({"TRACE", "TRACK"})
# Probes must work without credentials (container health checks, load balancers).
OPEN_ADMIN_PATHS = frozenset({"/-/healthz", "/-/readyz"})


@functools.lru_cache(maxsize=512)
def loopback_host(host: str) -> bool:
    """``localhost``, ``*.localhost`` (RFC 6761) or a loopback address."""
    return host == "localhost" or host.endswith(".localhost") or is_loopback(host)


class Guard:
    def __init__(self) -> None:
        self._tokens: tuple[bytes, ...] = ()

    async def load(self, config: Config) -> None:
        """Resolve the client tokens (secret sources) once per config load."""
        if config.client_auth is None:
            self._tokens = ()
            return
        self._tokens = tuple(
            [(await source.resolve()).encode() for source in config.client_auth.tokens]
        )

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

"""Who may use the proxy, and which requests it refuses outright (the README: "Security").

- Client authentication: ``Proxy-Authorization: Bearer <token>`` against
  ``client_auth.tokens``, compared in constant time. Forward-proxy requests (CONNECT,
  absolute-form) may also send ``Basic`` with the token as the password: that is what
  clients derive from ``HTTPS_PROXY=http://user:<token>@host:port``. A request without
  the header may instead come over a mutual-TLS listener, whose handshake verified the
  client's certificate: its subject names the client (``client_auth.certificates``;
  without that list, any certificate the listener's ``client_ca`` signed, named by its
  CN). The answer is the ``Client``, whose scope the pipeline checks once the route is
  known (``server.clients``).
  A scrape of ``/-/metrics`` may send ``Authorization: Bearer <token>`` instead, which
  is what Prometheus sends; nowhere else, where ``Authorization`` is the vendor's header.
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
import functools
import re
from typing import Any

from aiohttp import web
from multidict import CIMultiDictProxy, istr

from proxy.config import FULL_ACCESS, ClientIdentity, Config
from proxy.config.clients import common_name
from proxy.core.clock import Clock
from proxy.core.errors import BadRequest, ClientUnauthorized, Forbidden, MethodNotAllowed
from proxy.core.hosts import loopback_host
from proxy.ops.logs import REDACTOR
from proxy.server.clients import Client, Clients
from proxy.server.peers import peer_subject
from proxy.server.routing import Router

_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ORIGIN = istr("Origin")
_FETCH_SITE = istr("Sec-Fetch-Site")
_OTHER_SITE = frozenset({"cross-site", "same-site"})
_STATE_CHANGE_HEADER = istr("X-Auth-Proxy")
_ECHO_METHODS = frozenset({"TRACE", "TRACK"})
# Probes must work without credentials (container health checks, load balancers).
OPEN_ADMIN_PATHS = frozenset({"/-/healthz", "/-/readyz"})
SCRAPE_PATH = "/-/metrics"


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
    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or Clock()
        self._clients: Clients | None = None
        self._masked = REDACTOR.add()
        self._origins: frozenset[str] = frozenset()

    async def load(self, config: Config) -> None:
        """Take the allowed origins and resolve the client tokens, once per config load.

        The tokens are masked in logs (a tool may put its token in a URL) until the
        next load."""
        self._origins = frozenset(config.allowed_origins)
        if config.client_auth is None:
            self._clients = None
            self._masked.release()
            return
        identities = [
            (identity, None if token is None else await token.resolve())
            for identity in config.client_auth.identities()
            for token in (identity.token,)
        ]
        masked = REDACTOR.add(*(token for _, token in identities if token is not None))
        self._masked.release()
        self._masked = masked
        self._clients = Clients.build(
            [(identity, None if t is None else t.encode()) for identity, t in identities],
            self._clients,
            self._clock.now(),
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

    def check_client(
        self,
        request: web.BaseRequest,
        *,
        basic: bool = False,
        scrape: bool = False,
        certified: bool = False,
    ) -> Client | None:
        """Who sent the request (None without client authentication); 401 if nobody we
        know. A ``Proxy-Authorization`` header wins over a client certificate.
        ``scrape``: a scrape of ``/-/metrics``, which may use ``Authorization``;
        ``certified``: the request came over a TLS listener, where a client certificate
        may have been verified (``client_ca``)."""
        header = request.headers.get("Proxy-Authorization")
        if scrape and header is None:
            header = request.headers.get("Authorization")
        if header is None and certified and (subject := peer_subject(request)) is not None:
            return self._certificate_client(subject)
        if self._clients is None:
            return None
        return self.check_credentials(header or "", basic=basic)

    def _certificate_client(self, subject: str) -> Client:
        """The client a verified certificate names: the ``client_auth.certificates``
        entry for its subject (401 if none), or, without that list, a client with every
        right named by the certificate's CN (the listener's ``client_ca`` vouched for it)."""
        clients = self._clients
        if clients is None or not clients.subjects:
            return _certified(subject)
        client = clients.subjects.get(subject)
        if client is None:
            raise ClientUnauthorized(
                f"the client certificate {subject} is not in client_auth.certificates"
            )
        return client

    def check_credentials(self, header: str, *, basic: bool = False) -> Client | None:
        """Check a ``Proxy-Authorization`` value; ``basic`` also accepts user:token."""
        clients = self._clients
        if clients is None:
            return None
        if not clients.tokens:
            raise ClientUnauthorized(
                "present a client certificate that client_auth.certificates names"
            )
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
        client = clients.by_token(presented.strip().encode())
        if client is None:
            raise ClientUnauthorized("the client token is not valid")
        return client


@functools.lru_cache(maxsize=256)
def _certified(subject: str) -> Client:
    """A certificate client with every right, named by its CN (else its subject)."""
    return Client(ClientIdentity(common_name(subject) or subject, FULL_ACCESS), None)

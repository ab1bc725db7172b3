"""Forward-proxy mode: CONNECT tunnels and absolute-form requests (the README: "Tools with
hard-coded URLs (forward-proxy mode)").

With ``forward_proxy.enabled`` every connection to the main listener starts in a
``Sniffer`` (``proxy.server.tunnel``), which looks at its first bytes. Anything but
``CONNECT`` goes on to the usual aiohttp handler with those bytes replayed. A ``CONNECT
host:port`` is decided here, once per tunnel, after the client token (sent on the
CONNECT, not inside) is checked:

- a host a route matches: ``200``, then TLS is terminated with a certificate for that
  host from the local CA, and the decrypted stream is served by a ``TunnelHandler``.
  Its requests go through ``ProxyServer.handle`` like any other, carrying a ``Target``:
  routed by the tunnel's host, emulated logins keep the vendor's URLs, and the upstream
  is the host the client asked for (its name passed the route's host patterns, which
  are the SSRF guard in this mode);
- a host in ``forward_proxy.passthrough``: ``200``, then bytes are piped both ways
  untouched (the ``upstream.resolve`` map applies to the connection);
- anything else: ``403 forbidden``.

Absolute-form requests (``GET http://host/path``) get a ``Target`` from ``target_of``
and are routed by that host the same way. They are sent upstream over https: the proxy
adds the vendor session to them and never sends it in clear text.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from proxy.core.errors import BadRequest, Draining, Forbidden, ProxyError, UpstreamUnreachable
from proxy.ops.logs import REDACTOR
from proxy.server.clients import Client
from proxy.server.httpserver import ProxyHttpServer, ProxyRequestHandler
from proxy.server.responses import error_bytes
from proxy.server.routing import Matched, Router
from proxy.server.state import ServerState
from proxy.server.tls import LocalCA
from proxy.server.tunnel import Pending, Pipe, Sniffer

log = structlog.get_logger("auth_proxy.forward_proxy")

HANDSHAKE_TIMEOUT = 30.0
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
_HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?")


@dataclass(frozen=True, slots=True)
class Target:
    """Where a forward-proxied request goes: the host the client named."""

    host: str  # lowercased, without port: what routes' host patterns match
    origin: str  # https://host[:port], the upstream base
    path: str  # origin-form path and query, as the client sent them
    tunnel: bool  # inside a CONNECT tunnel, whose client authenticated on the CONNECT
    # A tunnel's Proxy-Authorization, sent once on its CONNECT: each request inside is
    # checked with it again, so a reload that revokes the token reaches open tunnels.
    authorization: str = field(default="", repr=False)


def _origin(host: str, port: int) -> str:
    return f"https://{host}" if port == 443 else f"https://{host}:{port}"


def target_of(request: web.BaseRequest) -> Target | None:
    """The ``Target`` of a request on a forward-proxy listener; None for ordinary ones."""
    protocol = request.protocol
    if isinstance(protocol, TunnelHandler):
        return Target(
            protocol.host,
            protocol.origin,
            request.raw_path,
            tunnel=True,
            authorization=protocol.authorization,
        )
    raw = request.raw_path
    if raw.startswith("/") or request.method == "CONNECT":
        return None
    parts = urlsplit(raw)
    try:
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return None  # left to the guard, which refuses it
    if port is None or (scheme == "http" and port == 80):
        port = 443
    host = parts.hostname.rstrip(".")  # lowercased, brackets removed
    if ":" in host:
        host = f"[{host}]"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(host, _origin(host, port), path, tunnel=False)


def route_for(router: Router[Any], target: Target) -> Matched[Any]:
    """The route for a forward-proxied request: by its host only, never by path."""
    found = router.match_host(target.host)
    if found is None:
        raise Forbidden(
            f"no route matches {target.host}; forward-proxy requests reach routed hosts"
        )
    return (found, "", target.path.partition("?")[0])


# --------------------------------------------------------------------------- CONNECT


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    host: str  # lowercased; an IPv6 address keeps its brackets
    port: int
    proxy_authorization: str

    def __repr__(self) -> str:  # the authorization is a credential
        return f"ConnectRequest({self.host}:{self.port})"


def parse_connect(head: bytes) -> ConnectRequest:
    """Parse ``CONNECT host:port HTTP/1.x`` and its headers (up to the blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[0] != "CONNECT" or not parts[2].startswith("HTTP/1."):
        raise BadRequest("the CONNECT request line is malformed")
    host, sep, port = parts[1].rpartition(":")
    host = host.lower().rstrip(".")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadRequest("CONNECT needs host:port")
    if host.startswith("["):
        if not host.endswith("]") or not re.fullmatch(r"\[[0-9a-f:.]+\]", host):
            raise BadRequest("CONNECT names an invalid IPv6 address")
    elif not _HOST_NAME.fullmatch(host):
        raise BadRequest("CONNECT names an invalid host")
    authorization = ""
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "proxy-authorization":
            authorization = value.strip()
    return ConnectRequest(host, int(port), authorization)


class TunnelHandler(ProxyRequestHandler):
    """The HTTP handler inside one intercepted tunnel: its requests are for ``origin``."""

    def __init__(
        self, manager: web.Server, *, host: str, origin: str, authorization: str, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self.host = host
        self.origin = origin
        self.authorization = authorization  # the CONNECT's Proxy-Authorization


class ForwardProxyServer(ProxyHttpServer):
    """The main listener's server in forward-proxy mode: every connection starts sniffed.

    Keeps the connections aiohttp does not own yet (sniffing, deciding, passthrough) so
    that shutting the listener down closes them too.
    """

    def __init__(self, handler: Any, *, app: ServerState, ca: LocalCA, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._app = app
        self._ca = ca
        if ca.created:
            log.info("ca_created", cert=str(ca.cert_path), key=str(ca.key_path))
        settings = app.config.forward_proxy
        self._passthrough: Router[bool] = Router()
        self._passthrough.add_hosts(settings.passthrough, True)
        self._resolve: dict[tuple[str, int], tuple[str, int]] = {
            rule.name: rule.address for rule in app.config.upstream.resolve
        }
        self._connect_timeout = app.config.upstream.connect_timeout
        self._open: set[asyncio.Transport] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self) -> RequestHandler:
        # The listener's protocol factory: any asyncio.Protocol will do.
        return Sniffer(self)  # type: ignore[return-value]

    def http_handler(self) -> RequestHandler:
        return super().__call__()

    def track(self, transport: asyncio.Transport) -> None:
        self._open.add(transport)

    def untrack(self, transport: asyncio.Transport) -> None:
        self._open.discard(transport)

    def pre_shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for transport in list(self._open):
            transport.close()
        super().pre_shutdown()

    async def shutdown(self, timeout: float | None = None) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await super().shutdown(timeout)

    # ------------------------------------------------------------------ decisions

    def _decide(self, request: ConnectRequest, client: Client | None) -> str:
        app = self._app
        if app.draining:
            raise Draining("the proxy is shutting down")
        route = app.runtime.router.match_host(request.host)
        if route is not None:
            if client is not None:
                client.check_route(route.name)
            return "intercept"
        if self._passthrough.match_host(request.host) is not None:
            return "passthrough"
        raise Forbidden(
            f"CONNECT to {request.host} is refused: no route matches it and it is not "
            "in forward_proxy.passthrough"
        )

    def start_connect(
        self, transport: asyncio.Transport, head: bytes, early: bytes
    ) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._connect(transport, head, early))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _connect(self, transport: asyncio.Transport, head: bytes, early: bytes) -> None:
        host = client = None
        try:
            request = parse_connect(head)
            host = request.host
            client = self._app.guard.check_credentials(request.proxy_authorization, basic=True)
            decision = self._decide(request, client)
            if decision == "intercept" and early:
                raise BadRequest("the client sent data before the tunnel was established")
        except ProxyError as exc:
            name = None if client is None else client.name
            log.warning("connect", host=host, client=name, decision="refused", code=exc.code)
            self._audit_refusal(transport, head, name, exc)
            self.refuse(transport, exc)
            return
        name = None if client is None else client.name
        log.info("connect", host=host, port=request.port, client=name, decision=decision)
        if decision == "intercept":
            await self._intercept(transport, request)
        else:
            await self._pipe(transport, request, early)

    def _audit_refusal(
        self, transport: asyncio.Transport, head: bytes, client: str | None, exc: ProxyError
    ) -> None:
        """A refused CONNECT in the audit log, like any refused request."""
        audit = self._app.audit
        if audit is None:
            return
        peer = transport.get_extra_info("peername")
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        target = parts[1].decode("latin-1") if len(parts) == 3 else ""
        audit.write(
            client=client,
            client_addr=None if not peer else str(peer[0]),
            route=exc.route,
            method="CONNECT",
            path=REDACTOR.text(target),
            status=exc.status,
            request_id=self._app.next_request_id(),
            code=exc.code,
        )

    def refuse(self, transport: asyncio.Transport, error: ProxyError) -> None:
        self._open.discard(transport)
        transport.write(error_bytes(error))
        transport.close()

    # ------------------------------------------------------------------ intercept

    async def _intercept(self, transport: asyncio.Transport, request: ConnectRequest) -> None:
        loop = asyncio.get_running_loop()
        origin = _origin(request.host, request.port)
        handler = TunnelHandler(
            self,
            loop=loop,
            host=request.host,
            origin=origin,
            authorization=request.proxy_authorization,
            header_timeout=self.header_timeout,
            **self.handler_settings,
        )
        pending = Pending()
        self._open.discard(transport)  # from here the TLS layer, then aiohttp, own it
        transport.write(ESTABLISHED)
        try:
            tls = await loop.start_tls(
                transport,
                pending,
                self._ca.leaf_context(request.host),
                server_side=True,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            # Most often a client that does not trust the CA; it says so on its side.
            log.info("connect_tls_failed", host=request.host, error=type(exc).__name__)
            transport.close()
            return
        if tls is None:
            transport.close()
            return
        pending.hand_over(tls, handler)

    # ------------------------------------------------------------------ passthrough

    async def _pipe(
        self, transport: asyncio.Transport, request: ConnectRequest, early: bytes
    ) -> None:
        loop = asyncio.get_running_loop()
        address = self._resolve.get((request.host.strip("[]"), request.port))
        host, port = address or (request.host.strip("[]"), request.port)
        ours, theirs = Pipe(self), Pipe(self)
        try:
            async with asyncio.timeout(self._connect_timeout):
                remote, _ = await loop.create_connection(lambda: theirs, host, port)
        except (OSError, TimeoutError) as exc:
            log.warning("connect_failed", host=request.host, error=type(exc).__name__)
            error = UpstreamUnreachable(f"{request.host}:{request.port} could not be reached")
            self.refuse(transport, error)
            return
        remote = cast(asyncio.Transport, remote)
        self._open.add(remote)
        ours.transport, ours.peer, theirs.peer = transport, theirs, ours
        transport.set_protocol(ours)
        transport.write(ESTABLISHED)
        if early:
            remote.write(early)
        transport.resume_reading()
        remote.resume_reading()  # paused until now: a server may speak first

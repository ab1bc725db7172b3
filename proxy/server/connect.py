"""Forward-proxy mode (SPEC §9): CONNECT tunnels and absolute-form requests.

With ``forward_proxy.enabled`` every connection to the main listener starts in
``_Sniffer``, which looks at its first bytes. Anything but ``CONNECT`` goes on to the
usual aiohttp handler with those bytes replayed. A ``CONNECT host:port`` is decided here,
once per tunnel, after the client token (sent on the CONNECT, not inside) is checked:

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
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from proxy.core.errors import BadRequest, Draining, Forbidden, ProxyError, UpstreamUnreachable
from proxy.server.httpserver import ProxyHttpServer, ProxyRequestHandler
from proxy.server.responses import error_bytes
from proxy.server.routing import Matched, Router
from proxy.server.state import ServerState
from proxy.server.tls import LocalCA

log = structlog.get_logger("auth_proxy.forward_proxy")

CONNECT = b"CONNECT "
MAX_HEAD = 64 * 1024
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


def _origin(host: str, port: int) -> str:
    return f"https://{host}" if port == 443 else f"https://{host}:{port}"


def target_of(request: web.BaseRequest) -> Target | None:
    """The ``Target`` of a request on a forward-proxy listener; None for ordinary ones."""
    protocol = request.protocol
    if isinstance(protocol, TunnelHandler):
        return Target(protocol.host, protocol.origin, request.raw_path, tunnel=True)
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
    return Matched(found, "", target.path.partition("?")[0])


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

    def __init__(self, manager: web.Server, *, host: str, origin: str, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.host = host
        self.origin = origin


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
        return _Sniffer(self)  # type: ignore[return-value]

    def http_handler(self) -> RequestHandler:
        return super().__call__()

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

    def _decide(self, request: ConnectRequest) -> str:
        app = self._app
        app.guard.check_credentials(request.proxy_authorization, basic=True)
        if app.draining:
            raise Draining("the proxy is shutting down")
        if app.runtime.router.match_host(request.host) is not None:
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
        host = None
        try:
            request = parse_connect(head)
            host = request.host
            decision = self._decide(request)
            if decision == "intercept" and early:
                raise BadRequest("the client sent data before the tunnel was established")
        except ProxyError as exc:
            log.warning("connect", host=host, decision="refused", code=exc.code)
            self._refuse(transport, exc)
            return
        log.info("connect", host=request.host, port=request.port, decision=decision)
        if decision == "intercept":
            await self._intercept(transport, request)
        else:
            await self._pipe(transport, request, early)

    def _refuse(self, transport: asyncio.Transport, error: ProxyError) -> None:
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
            header_timeout=self.header_timeout,
            **self.handler_settings,
        )
        pending = _Pending()
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
        ours, theirs = _Pipe(self), _Pipe(self)
        try:
            async with asyncio.timeout(self._connect_timeout):
                remote, _ = await loop.create_connection(lambda: theirs, host, port)
        except (OSError, TimeoutError) as exc:
            log.warning("connect_failed", host=request.host, error=type(exc).__name__)
            error = UpstreamUnreachable(f"{request.host}:{request.port} could not be reached")
            self._refuse(transport, error)
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


# --------------------------------------------------------------------------- protocols


class _Sniffer(asyncio.Protocol):
    """A new connection, until its first bytes show whether it is a CONNECT."""

    def __init__(self, server: ForwardProxyServer) -> None:
        self._server = server
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._connect: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as ones.
        self._transport = cast(asyncio.Transport, transport)
        self._server._open.add(self._transport)
        # A CONNECT head has as long as any request head (see proxy.server.httpserver).
        timeout = self._server.header_timeout
        self._timer = asyncio.get_running_loop().call_later(timeout, transport.close)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        self._buffer += data
        if not CONNECT.startswith(bytes(self._buffer[: len(CONNECT)])):
            self._hand_over(transport)
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end == -1:
            if len(self._buffer) > MAX_HEAD:
                self._stop_timer()
                self._server._refuse(transport, BadRequest("the CONNECT request is too long"))
            return
        self._stop_timer()
        transport.pause_reading()
        head, early = bytes(self._buffer[: end + 4]), bytes(self._buffer[end + 4 :])
        self._buffer.clear()
        self._connect = self._server.start_connect(transport, head, early)

    def _hand_over(self, transport: asyncio.Transport) -> None:
        """Not a CONNECT: aiohttp takes the connection, starting with what we read."""
        self._stop_timer()
        self._server._open.discard(transport)
        handler = self._server.http_handler()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        handler.data_received(bytes(self._buffer))

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def eof_received(self) -> bool:
        return False  # closes: nothing useful can follow a half-sent first request

    def connection_lost(self, exc: BaseException | None) -> None:
        # Lost while a CONNECT was being decided: stop it before it opens anything.
        self._stop_timer()
        if self._connect is not None:
            self._connect.cancel()
        if self._transport is not None:
            self._server._open.discard(self._transport)


class _Pending(asyncio.Protocol):
    """Holds what arrives between the end of the TLS handshake and aiohttp taking over.

    A client may send its first request in the same packet as its last handshake
    message; that data must wait for the handler's ``connection_made``.
    """

    def __init__(self) -> None:
        self._data: list[bytes] = []
        self._eof = False
        self._lost: tuple[BaseException | None] | None = None

    def data_received(self, data: bytes) -> None:
        self._data.append(data)

    def eof_received(self) -> bool:
        self._eof = True
        return True  # the handler decides once it is attached

    def connection_lost(self, exc: BaseException | None) -> None:
        self._lost = (exc,)

    def hand_over(self, transport: asyncio.Transport, handler: RequestHandler) -> None:
        transport.set_protocol(handler)
        handler.connection_made(transport)
        for chunk in self._data:
            handler.data_received(chunk)
        if self._lost is not None:
            handler.connection_lost(self._lost[0])
        elif self._eof:
            handler.eof_received()
            transport.close()  # what the TLS layer does after an EOF aiohttp does not keep


class _Pipe(asyncio.Protocol):
    """One side of a passthrough tunnel: what arrives is written to the other side.

    Flow control is end to end: when one side's write buffer fills, the other side stops
    reading. A half-close is passed on; the tunnel closes when both sides are done or
    either fails.
    """

    def __init__(self, server: ForwardProxyServer) -> None:
        self._server = server
        self.transport: asyncio.Transport | None = None
        self.peer: _Pipe | None = None
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.pause_reading()  # until the tunnel is wired up and announced

    def _other(self) -> asyncio.Transport:
        assert self.peer is not None and self.peer.transport is not None
        return self.peer.transport

    def data_received(self, data: bytes) -> None:
        self._other().write(data)

    def eof_received(self) -> bool:
        self.eof = True
        other = self._other()
        assert self.peer is not None
        if self.peer.eof or not other.can_write_eof():
            other.close()
            return False
        other.write_eof()
        return True  # keep writing the other side's answer to this one

    def pause_writing(self) -> None:
        self._other().pause_reading()

    def resume_writing(self) -> None:
        self._other().resume_reading()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.transport is not None:
            self._server._open.discard(self.transport)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

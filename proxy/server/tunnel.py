"""The asyncio protocols of forward-proxy mode, below aiohttp.

- ``Sniffer``: every new connection to a forward-proxy listener, until its first bytes
  show whether it is a ``CONNECT``; anything else goes on to aiohttp with those bytes;
- ``Pending``: holds what arrives between the end of an intercepted tunnel's TLS
  handshake and aiohttp taking the connection over;
- ``Pipe``: one side of a passthrough tunnel.

What a ``CONNECT`` leads to is decided by the server that owns the listener
(``proxy.server.connect.ForwardProxyServer``), seen here as a ``ConnectionOwner``.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

from aiohttp.web_protocol import RequestHandler

from proxy.core.errors import BadRequest, ProxyError

CONNECT = b"CONNECT "
MAX_HEAD = 64 * 1024


class ConnectionOwner(Protocol):
    """The server a connection belongs to while aiohttp does not own it yet."""

    header_timeout: float

    def track(self, transport: asyncio.Transport) -> None:
        """Close ``transport`` when the listener shuts down."""

    def untrack(self, transport: asyncio.Transport) -> None:
        """``transport`` is closed, or owned by someone else now."""

    def refuse(self, transport: asyncio.Transport, error: ProxyError) -> None:
        """Answer ``error`` and close."""

    def start_connect(
        self, transport: asyncio.Transport, head: bytes, early: bytes
    ) -> asyncio.Task[None]:
        """Decide and carry out the ``CONNECT`` in ``head``; ``early`` came after it."""

    def http_handler(self) -> RequestHandler:
        """A new aiohttp handler for a connection that is not a ``CONNECT``."""


class Sniffer(asyncio.Protocol):
    """A new connection, until its first bytes show whether it is a CONNECT."""

    def __init__(self, server: ConnectionOwner) -> None:
        self._server = server
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._connect: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as ones.
        self._transport = cast(asyncio.Transport, transport)
        self._server.track(self._transport)
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
                self._server.refuse(transport, BadRequest("the CONNECT request is too long"))
            return
        self._stop_timer()
        transport.pause_reading()
        head, early = bytes(self._buffer[: end + 4]), bytes(self._buffer[end + 4 :])
        self._buffer.clear()
        self._connect = self._server.start_connect(transport, head, early)

    def _hand_over(self, transport: asyncio.Transport) -> None:
        """Not a CONNECT: aiohttp takes the connection, starting with what we read."""
        self._stop_timer()
        self._server.untrack(transport)
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
            self._server.untrack(self._transport)


class Pending(asyncio.Protocol):
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


class Pipe(asyncio.Protocol):
    """One side of a passthrough tunnel: what arrives is written to the other side.

    Flow control is end to end: when one side's write buffer fills, the other side stops
    reading. A half-close is passed on; the tunnel closes when both sides are done or
    either fails.
    """

    def __init__(self, server: ConnectionOwner) -> None:
        self._server = server
        self.transport: asyncio.Transport | None = None
        self.peer: Pipe | None = None
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
            self._server.untrack(self.transport)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

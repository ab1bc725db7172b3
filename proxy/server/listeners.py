"""Listening sockets: binding them, and the record of what a server listens on."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from dataclasses import dataclass

from proxy.config import Config

Sockets = dict[tuple[str, int], socket.socket]  # keyed by the configured (host, port)


@dataclass(frozen=True, slots=True)
class Listener:
    host: str
    port: int  # as bound: a configured port 0 becomes the one the system chose


def _socket_for(host: str, port: int) -> tuple[socket.socket, tuple[object, ...]]:
    family, type_, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, type_, proto)
    # On Windows SO_REUSEADDR would let a second process take a port in use (asyncio
    # leaves it off there too).
    if os.name != "nt":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock, addr


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    try:
        sock, addr = _socket_for(host, port)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def probe_bind(host: str, port: int) -> OSError | None:
    """Why ``host:port`` cannot be listened on, or None. Without SO_REUSEPORT, so a port
    that another auth-proxy holds (with SO_REUSEPORT, as workers do) counts as taken."""
    try:
        sock, addr = _socket_for(host, port)
    except OSError as exc:
        return exc
    with contextlib.closing(sock):
        try:
            sock.bind(addr)
        except OSError as exc:
            return exc
    return None


def bind_problem(error: OSError, host: str) -> str:
    """What ``probe_bind``'s error means, said of the address ("127.0.0.1:8080 ...")."""
    if error.errno == errno.EADDRINUSE:
        return "is already in use (by another program, or another auth-proxy)"
    if error.errno == errno.EACCES:
        return "needs privileges to bind (ports below 1024 do); use a port above 1023"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"cannot be bound: this machine has no address {host}"
    if isinstance(error, socket.gaierror):
        return f"cannot be bound: {host} does not resolve ({error.strerror})"
    return f"cannot be bound: {error.strerror or error}"


def bind_listeners(config: Config) -> Sockets:
    """One SO_REUSEPORT socket per listener, on the configured ports (0: any free one)."""
    return {
        (host, port): bind_socket(host, port, reuse_port=True)
        for host, port, _route in config.listeners()
    }

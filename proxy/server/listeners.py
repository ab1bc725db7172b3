"""Listening sockets: binding them, and the record of what a server listens on."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from proxy.config import Config

Sockets = dict[tuple[str, int], socket.socket]  # keyed by the configured (host, port)


@dataclass(frozen=True, slots=True)
class Listener:
    host: str
    port: int  # as bound: a configured port 0 becomes the one the system chose


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    family, type_, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(addr)
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def bind_listeners(config: Config) -> Sockets:
    """One SO_REUSEPORT socket per listener, on the configured ports (0: any free one)."""
    return {
        (host, port): bind_socket(host, port, reuse_port=True)
        for host, port, _route in config.listeners()
    }

"""One listening socket served by aiohttp's low-level server: the HTTP settings every
listener shares, TLS with a bounded handshake, and closing it at shutdown."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from proxy.server.httpserver import KEEPALIVE_TIMEOUT
from proxy.server.listen_tls import RotatingContext

# IICS session ids may be JWTs of up to 16,000 characters.
MAX_FIELD_SIZE = 32 * 1024
MAX_LINE_SIZE = 32 * 1024
# After the drain, requests still running are cancelled; aiohttp reads a 0 here as "wait
# forever", so the grace they get to unwind must be a small positive number.
STRAGGLER_GRACE = 0.1
BACKLOG = 128  # aiohttp's default


def http_settings(header_timeout: float, debug: bool) -> dict[str, Any]:
    """What every listener's server is built with."""
    return {
        "auto_decompress": False,  # bodies pass through exactly as sent
        "max_field_size": MAX_FIELD_SIZE,
        "max_line_size": MAX_LINE_SIZE,
        "access_log": None,
        # A client that hangs up cancels its request, so the upstream exchange (or the
        # wait for it) is given up at once instead of run to the end.
        "handler_cancellation": True,
        "keepalive_timeout": KEEPALIVE_TIMEOUT,
        "header_timeout": header_timeout,
        # aiohttp's own debug records (a client's premature disconnect, ...) at log
        # level debug, through the same pipeline as ours (``ops.logs``).
        "debug": debug,
    }


@dataclass(frozen=True, slots=True)
class Site:
    listening: asyncio.Server
    runner: web.ServerRunner

    async def close(self) -> None:
        self.listening.close()
        await self.runner.cleanup()  # closes connections, cancels stragglers


async def open_site(
    server: web.Server, sock: socket.socket, tls: RotatingContext | None, header_timeout: float
) -> Site:
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=STRAGGLER_GRACE)
    await runner.setup()
    # Served without aiohttp's SockSite, which cannot bound the TLS handshake: it comes
    # before the request head, and is held to the same bound.
    listening = await asyncio.get_running_loop().create_server(
        server,
        sock=sock,
        ssl=tls,
        ssl_handshake_timeout=None if tls is None else header_timeout,
        backlog=BACKLOG,
    )
    return Site(listening, runner)

"""``auth-proxy serve``: one process, or a supervisor and its workers."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import structlog

from proxy.cli.run import EXIT_OK, install_uvloop, on_stop_signals, run
from proxy.config import Config, default_config_path
from proxy.config.load import load_config
from proxy.ops.logs import setup_logging
from proxy.server.app import ProxyServer
from proxy.server.listeners import Sockets
from proxy.server.preflight import check_preflight
from proxy.server.supervisor import Supervisor
from proxy.sessions.lockout import LockoutBoard


def serve_command(config_arg: str | None) -> int:
    config_path = default_config_path(config_arg)
    config = load_config(config_path)
    check_preflight(config)  # the same checks as `auth-proxy check`
    setup_logging(config.log.level, config.log.format)
    if config.workers > 1:

        def worker(sockets: Sockets, board: LockoutBoard) -> int:
            install_uvloop()
            return asyncio.run(serve(config, config_path, sockets=sockets, lockouts=board))

        return Supervisor(config, worker).run()
    return run(serve(config, config_path))


async def serve(
    config: Config,
    config_path: Path | None = None,
    *,
    sockets: dict[tuple[str, int], socket.socket] | None = None,
    lockouts: LockoutBoard | None = None,
) -> int:
    server = ProxyServer(config, config_path=config_path, lockouts=lockouts)
    await server.start(sockets)
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        structlog.get_logger("auth_proxy").info("shutting_down", signal=sig.name)
        stop.set()

    on_stop_signals(on_signal, server.schedule_reload)
    try:
        await stop.wait()
    finally:
        await server.stop()
    return EXIT_OK

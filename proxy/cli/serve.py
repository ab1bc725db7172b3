"""``auth-proxy serve``: one process, or a supervisor and its workers."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

import structlog

from proxy.cli.run import EXIT_OK, install_uvloop, run
from proxy.config import Config
from proxy.config.store import SessionStore as StoreSettings
from proxy.ops.logs import setup_logging
from proxy.server.app import ProxyServer
from proxy.server.listeners import Sockets
from proxy.server.startup import check_startup
from proxy.server.supervisor import Supervisor
from proxy.sessions.stores import effective_settings


def serve_command(config: Config, config_path: Path | None = None) -> int:
    check_startup(config)
    setup_logging(config.log.level, config.log.format)
    if config.workers > 1:
        # Decided once, before the workers start: a store that cannot be opened stops
        # the start, and an unusable default location is reported once.
        settings = asyncio.run(effective_settings(config.session_store, time.time))
        # Sessions in memory are per worker; their login verdicts are still shared.
        run_dir = (
            Path(tempfile.mkdtemp(prefix="auth-proxy-run-")) if settings.type == "memory" else None
        )

        def worker(sockets: Sockets) -> int:
            install_uvloop()
            return asyncio.run(
                serve(config, config_path, sockets=sockets, store=settings, run_dir=run_dir)
            )

        try:
            return Supervisor(config, worker).run()
        finally:
            if run_dir is not None:
                shutil.rmtree(run_dir, ignore_errors=True)
    return run(serve(config, config_path))


async def serve(
    config: Config,
    config_path: Path | None = None,
    *,
    sockets: dict[tuple[str, int], socket.socket] | None = None,
    store: StoreSettings | None = None,
    run_dir: Path | None = None,
) -> int:
    server = ProxyServer(config, config_path=config_path, store_settings=store, run_dir=run_dir)
    await server.start(sockets)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        structlog.get_logger("auth_proxy").info("shutting_down", signal=sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, server.schedule_reload)
    try:
        await stop.wait()
    finally:
        await server.stop()
    return EXIT_OK

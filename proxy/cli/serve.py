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

from proxy.cli.run import EXIT_OK, install_uvloop, on_stop_signals, run, settle_heap
from proxy.config import Config, default_config_path
from proxy.config import SessionStore as StoreSettings
from proxy.config.load import load_config
from proxy.ops.logs import setup_logging
from proxy.ops.metrics_files import forget_process, share_between_processes
from proxy.server.app import ProxyServer
from proxy.server.preflight import check_preflight
from proxy.server.reloads import read_config
from proxy.server.supervisor import Supervisor, WorkerStart
from proxy.server.workerlink import SupervisorLink
from proxy.sessions.stores import effective_settings


def serve_command(config_arg: str | None) -> int:
    config_path = default_config_path(config_arg)
    config = load_config(config_path)
    check_preflight(config)  # the same checks as `auth-proxy check`
    setup_logging(config.log.level, config.log.format)
    if config.workers > 1:
        # Decided once, before the workers start: a store that cannot be opened stops
        # the start, and an unusable default location is reported once.
        settings = asyncio.run(
            effective_settings(config.session_store, time.time, config.state_dir)
        )
        run_dir = _run_directory(config.state_dir)
        metrics_dir = run_dir / "metrics"
        metrics_dir.mkdir()
        # Sessions in memory are per worker; their login verdicts are still shared.
        verdicts = run_dir if settings.type == "memory" else None

        def worker(start: WorkerStart) -> int:
            install_uvloop()
            share_between_processes(metrics_dir)
            return asyncio.run(
                serve(
                    start.config,
                    config_path,
                    sockets=start.sockets,
                    store=settings,
                    run_dir=verdicts,
                    worker=start,
                    metrics_dir=metrics_dir,
                )
            )

        try:
            return Supervisor(
                config,
                worker,
                lambda: read_config(config_path),
                on_exit=lambda pid: forget_process(pid, metrics_dir),
            ).run()
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
    return run(serve(config, config_path))


async def serve(
    config: Config,
    config_path: Path | None = None,
    *,
    sockets: dict[tuple[str, int], socket.socket] | None = None,
    store: StoreSettings | None = None,
    run_dir: Path | None = None,
    worker: WorkerStart | None = None,
    metrics_dir: Path | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT. A ``worker`` reloads through its supervisor."""
    server = ProxyServer(
        config,
        config_path=config_path,
        store_settings=store,
        run_dir=run_dir,
        startup=worker.startup if worker is not None else None,
        metrics_dir=metrics_dir,
    )
    link = None
    if worker is not None:
        link = SupervisorLink(
            worker.link,
            server.apply_config,
            lambda error: server.reload_refused(error, logged=True),
        )
        await link.start()
        server.state.reload = link.request_reload
    await server.start(sockets)
    settle_heap()
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        structlog.get_logger("auth_proxy").info("shutting_down", signal=sig.name)
        stop.set()

    on_stop_signals(
        on_signal,
        server.schedule_reload if link is None else link.schedule_reload,
        server.reopen_logs,
    )
    try:
        await stop.wait()
    finally:
        if link is not None:
            await link.close()
        await server.stop()
    return EXIT_OK


def _run_directory(state_dir: str | None) -> Path:
    """A fresh directory for what this run's workers share (metrics; login verdicts when
    sessions are in memory), removed at exit: in the state directory (a container's
    writable volume, where the rest of the file system may be read-only), else in the
    system's temporary directory."""
    if state_dir is not None:
        Path(state_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="auth-proxy-run-", dir=state_dir))

"""What every command shares: exit codes, loading the config, running a coroutine, signals."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from proxy.config import Config, ConfigError, default_config_path
from proxy.config.load import load_config
from proxy.server.listeners import bind_problem, probe_bind

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


def load(path: str | None) -> Config:
    return load_config(default_config_path(path))


def local_address(config: Config) -> str | None:
    """``host:port`` where this machine reaches the main listener (None: any free port)."""
    host, port = config.listen.host, config.listen.port
    if port == 0:
        return None
    if host in ("0.0.0.0", "::", ""):  # listening everywhere: loopback reaches it too
        host = "::1" if host == "::" else "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def require_free(flag: str, first: int, count: int = 1, host: str = "127.0.0.1") -> None:
    """Refuse, naming ``flag``, when a port from ``first`` on cannot be listened on (0: the
    system picks free ones)."""
    for port in range(first, first + count) if first else ():
        if error := probe_bind(host, port):
            raise ConfigError(
                f"{flag}: {host}:{port} {bind_problem(error, host)}; choose another with {flag}"
            )


def run(coro: Coroutine[Any, Any, Any]) -> int:
    """Run ``coro`` until it returns, or until SIGTERM or Ctrl-C cancel it (exit 0)."""
    install_uvloop()
    with contextlib.suppress(KeyboardInterrupt):
        return int(asyncio.run(_until_stopped(coro)) or 0)
    return EXIT_OK


async def _until_stopped(coro: Coroutine[Any, Any, Any]) -> Any:
    task = asyncio.ensure_future(coro)
    on_stop_signals(lambda _sig: task.cancel())
    try:
        return await task
    except asyncio.CancelledError:
        return EXIT_OK


def on_stop_signals(
    stop: Callable[[signal.Signals], object],
    reload: Callable[[], object] | None = None,
    reopen: Callable[[], object] | None = None,
) -> None:
    """Call ``stop`` on SIGTERM and SIGINT, ``reload`` on SIGHUP, ``reopen`` (log files,
    after a rotation) on SIGUSR1, in the running loop.

    SIGTERM needs a handler: as PID 1 in a container, a signal without one is ignored, and
    the container is killed after its grace period. Windows has no SIGHUP or SIGUSR1
    (reload through ``POST /-/reload`` there) and its event loops no
    ``add_signal_handler``: a plain handler hands the signal to the loop instead.
    """
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop, sig)
        except NotImplementedError:
            signal.signal(
                sig, lambda num, _frame: loop.call_soon_threadsafe(stop, signal.Signals(num))
            )
    for name, handler in (("SIGHUP", reload), ("SIGUSR1", reopen)):
        number = getattr(signal, name, None)
        if handler is not None and number is not None:
            with contextlib.suppress(NotImplementedError):  # a loop without signal support
                loop.add_signal_handler(number, handler)


def install_uvloop() -> None:
    """The faster event loop when the ``speed`` extra is installed."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# Allocations between two young-generation collections (CPython's default: 700). A
# request allocates a few hundred objects that die with it; collecting less often, over
# a heap whose start-up objects are frozen, costs less per request (README, "Performance").
GC_YOUNG_THRESHOLD = 7000


def settle_heap() -> None:
    """Once the server listens: collect what start-up left behind, move the rest (modules,
    config, routes) out of the collector's sight, and collect young objects less often.
    The garbage collector then no longer walks the whole start-up heap at each full
    collection; measured at about a tenth of a small request's CPU."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)

"""What every command shares: exit codes, loading the config, running a coroutine."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from proxy.config import Config, default_config_path
from proxy.config.load import load_config

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


def load(path: str | None) -> Config:
    return load_config(default_config_path(path))


def run(coro: Any) -> int:
    install_uvloop()
    with contextlib.suppress(KeyboardInterrupt):
        return int(asyncio.run(coro) or 0)
    return EXIT_OK


def install_uvloop() -> None:
    """The faster event loop when the ``speed`` extra is installed."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

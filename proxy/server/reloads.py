"""What a reload reads and how its result is told (README, "Reload").

A reload reads the config file by path (``read_config``: valid, and allowed to start),
says which changed settings wait for a restart (``restart_needed``), and warns of TLS
listener certificates that expire soon.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from proxy.config import Config, ConfigError
from proxy.config.load import load_config
from proxy.core.errors import ProxyError
from proxy.server.listen_tls import Loaded
from proxy.server.startup import check_startup

log = structlog.get_logger("auth_proxy")


def read_config(path: Path) -> Config:
    """The config file at ``path``, valid and allowed to start (what a reload reads)."""
    config = load_config(path)
    check_startup(config)
    return config


def error_message(exc: ConfigError | ProxyError) -> str:
    return exc.message if isinstance(exc, ProxyError) else str(exc)


def restart_needed(old: Config, new: Config) -> list[str]:
    """Settings that only take effect at start-up and that ``new`` changes."""
    changed = []
    if _listening(old) != _listening(new):
        changed.append("listeners")
    if old.workers != new.workers:
        changed.append("workers")
    if (old.log.level, old.log.format) != (new.log.level, new.log.format):
        changed.append("log")
    if old.forward_proxy != new.forward_proxy:
        changed.append("forward_proxy")
    if old.session_store != new.session_store:
        changed.append("session_store")
    return changed


def _listening(config: Config) -> set[tuple[str, int, str | None, bool]]:
    """Each listener's address and whether it is TLS: what only a restart changes."""
    return {(*lst, config.listener_tls(lst[2]) is not None) for lst in config.listeners()}


def warn_expiring(tls: Loaded) -> None:
    for line in tls.warnings:
        log.warning("tls_certificate_expires_soon", warning=line)

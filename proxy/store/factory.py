"""Opening the configured session store (``session_store`` in the config)."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from proxy.store.base import Clock, Store
from proxy.store.crypto import master_key
from proxy.store.local import LocalStore
from proxy.store.memory import MemoryStore
from proxy.store.redis_store import RedisStore
from proxy.store.values import StoreConfigError, StoreError

KINDS = ("local", "memory", "redis")
DEFAULT_PREFIX = "auth-proxy:"

_log = logging.getLogger("auth_proxy.store")


def default_directory(state_dir: str | os.PathLike[str] | None = None) -> Path:
    """``<state_dir>/sessions`` when the proxy has a state directory (a container's
    volume), else ``$XDG_STATE_HOME/auth-proxy``, else ``~/.local/state/auth-proxy`` (the
    XDG base directory rules: a relative XDG_STATE_HOME is ignored)."""
    if state_dir is not None:
        return Path(state_dir) / "sessions"
    state = os.environ.get("XDG_STATE_HOME", "")
    if os.path.isabs(state):
        return Path(state) / "auth-proxy"
    return Path.home() / ".local" / "state" / "auth-proxy"


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _open_redis(
    url: str | None, master: bytes | None, key_prefix: str, password: str | None, clock: Clock
) -> RedisStore:
    """A RedisStore, after checking its settings; it connects on first use."""
    if not url:
        raise StoreConfigError("session_store.url is required for type: redis")
    if master is None:
        raise StoreConfigError(
            "session_store.key is required for type: redis (the same on every replica)"
        )
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise StoreConfigError("session_store.url must start with redis://, rediss:// or unix://")
    try:
        return RedisStore(url, key=master, key_prefix=key_prefix, password=password, clock=clock)
    except ValueError:  # not echoed: the URL may carry a password
        raise StoreConfigError("session_store.url is not a valid Redis URL") from None


async def open_store(
    kind: str = "local",
    *,
    path: str | os.PathLike[str] | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    url: str | None = None,
    key_prefix: str = DEFAULT_PREFIX,
    password: str | None = None,
    key: str | bytes | None = None,
    clock: Clock = time.time,
    warn: Callable[[str], None] = _log.warning,
) -> Store:
    """Open the store ``kind`` ("local", "memory" or "redis").

    local: in ``path``, else ``default_directory(state_dir)``. An explicit path that cannot
    be used raises ``StoreConfigError`` naming it; if the default one cannot be used,
    ``warn`` is called once and a ``MemoryStore`` is returned. redis: ``url`` and ``key``
    are required (every replica needs the same key); Redis need not be up yet.
    """
    master = None if key is None else master_key(key)
    if kind == "memory":
        return MemoryStore(key=master, clock=clock)
    if kind == "redis":
        return _open_redis(url, master, key_prefix, password, clock)
    if kind != "local":
        raise StoreConfigError(
            f"session_store.type must be one of {', '.join(KINDS)}, not {kind!r}"
        )
    directory = Path(path) if path is not None else default_directory(state_dir)
    try:
        return await LocalStore.open(directory, key=master, clock=clock)
    except (OSError, sqlite3.Error, StoreError) as exc:
        if path is not None:
            raise StoreConfigError(
                f"session_store.path {directory} cannot be used: {_reason(exc)}"
            ) from exc
        warn(
            f"the default session store {directory} cannot be used ({_reason(exc)}); "
            "sessions are kept in memory, per process"
        )
        return MemoryStore(key=master, clock=clock)

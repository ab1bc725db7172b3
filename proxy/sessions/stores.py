"""The session stores of one process: opened from ``session_store`` once, kept across
reloads, closed at shutdown.

- ``local`` and ``redis``: sessions, login leases and verdicts (rejections, backoff) are
  shared by every process using the same store, keyed by credentials.
- ``memory``: sessions are per process and per route, as they were before there was a
  store. Verdicts are shared by the workers of one ``auth-proxy serve`` (a store in a
  private run directory the supervisor makes), so a rejected login still stops them all.

Static credentials (an API key: no login to share) always stay in the process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from proxy.config import ConfigError
from proxy.config import SessionStore as StoreSettings
from proxy.core.errors import ProxyError
from proxy.core.secrets import Secret
from proxy.store import MemoryStore, Store, StoreConfigError, open_store

log = structlog.get_logger("auth_proxy.sessions")

Now = Callable[[], float]


@dataclass(eq=False)
class SessionStores:
    kind: str  # "local", "memory" or "redis": how far sessions are shared
    sessions: Store  # session records and login leases
    verdicts: Store  # rejections and backoff
    local: MemoryStore  # this process only: static credentials, and everything for memory
    lease_ttl: float

    @property
    def shared(self) -> bool:
        """Sessions are keyed by credentials and shared with other processes."""
        return self.kind != "memory"

    async def close(self) -> None:
        closed: list[Store] = []
        for store in (self.sessions, self.verdicts, self.local):
            if all(store is not c for c in closed):
                closed.append(store)
                await store.close()


def memory_stores(now: Now, lease_ttl: float = 10.0) -> SessionStores:
    """Per-process stores: what a server uses until it opens the configured ones."""
    local = MemoryStore(clock=now)
    return SessionStores("memory", local, local, local, lease_ttl)


async def _value(source: Secret | None, key: str) -> str | None:
    if source is None:
        return None
    try:
        return await source.resolve()
    except ProxyError as exc:
        raise ConfigError(f"session_store.{key}: {exc.message}") from None


async def open_stores(
    settings: StoreSettings,
    now: Now,
    *,
    state_dir: str | None = None,
    run_dir: Path | None = None,
) -> SessionStores:
    """The stores ``settings`` describe. An explicit location that cannot be used, or a
    secret that cannot be read, is a ``ConfigError``; an unusable default location
    (``<state_dir>/sessions``, else the user's state directory) is reported once
    (``session_store_fallback``) and means ``memory``. ``run_dir``: where the workers of
    one ``serve`` share verdicts when sessions are in memory."""

    def fallback(reason: str) -> None:
        log.warning("session_store_fallback", reason=reason)

    local = MemoryStore(clock=now)
    opened: list[Store] = []
    try:
        if settings.type == "memory":
            shared: Store = local
        else:
            shared = await open_store(
                settings.type,
                path=settings.path,
                state_dir=state_dir,
                url=settings.url,
                key_prefix=settings.key_prefix,
                password=await _value(settings.password, "password"),
                key=await _value(settings.key, "key"),
                clock=now,
                warn=fallback,
            )
            opened.append(shared)
        if shared.kind == "memory":  # asked for, or the default location was unusable
            verdicts: Store = local
            if run_dir is not None:
                verdicts = await open_store("local", path=run_dir, clock=now)
                opened.append(verdicts)
            return SessionStores("memory", local, verdicts, local, settings.lease_ttl)
        return SessionStores(shared.kind, shared, shared, local, settings.lease_ttl)
    except StoreConfigError as exc:
        for store in opened:
            with contextlib.suppress(Exception):
                await store.close()
        raise ConfigError(str(exc)) from None


async def effective_settings(
    settings: StoreSettings, now: Now, state_dir: str | None = None
) -> StoreSettings:
    """Open and close the configured store once, before the workers start: a start-up
    error is raised here, an unusable default location is reported here (once, not once
    per worker), and the workers then open what this returns."""
    stores = await open_stores(settings, now, state_dir=state_dir)
    await stores.close()
    if stores.kind == "memory" and settings.type != "memory":
        return StoreSettings(type="memory", lease_ttl=settings.lease_ttl)
    return settings

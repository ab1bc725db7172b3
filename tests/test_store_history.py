"""The store does not grow with history: thousands of logins and 401s leave a bounded
number of rows (SQLite) or keys (Redis), and entries of credentials no longer in use
expire."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from helpers import wait_for
from store_support import Backend, RedisServer

from proxy.core.clock import ManualClock
from proxy.store import LocalStore, Store

CYCLES = 2000
KEYS = [f"{i:064x}" for i in range(4)]  # a few sets of credentials, as in a config


def sqlite_rows(backend: Backend) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(backend.path / "sessions.db")) as db:
        tables = ("sessions", "leases", "rejections", "backoffs")
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


async def cycle(store: Store, key: str) -> None:
    """A login under the lease, then a 401 that invalidates it."""
    lease = await store.acquire(key, ttl=5)
    assert lease is not None
    record = await store.publish(lease, b"x" * 200, expires_at=store._clock() + 600)
    await store.release(lease)
    await store.touch(key, record.version, store._clock())
    assert await store.invalidate(key, record.version)


async def test_logins_and_401s_leave_a_bounded_store(shared_backend: Backend) -> None:
    store = await shared_backend.open()
    for i in range(CYCLES):
        await cycle(store, KEYS[i % len(KEYS)])
        if i % 500 == 0:
            await store.reject(KEYS[0], until=store._clock() + 60, message="rejected")
            await store.backoff(KEYS[1], until=store._clock() + 60, step=2, message="503")
    if shared_backend.kind == "local":
        rows = sqlite_rows(shared_backend)
        assert rows["sessions"] == 0 and rows["leases"] == len(KEYS)  # fence counters
        sizes = [p.stat().st_size for p in shared_backend.path.glob("sessions.db*")]
        assert sum(sizes) < 4 * 1024 * 1024
    else:
        # A fence counter per set of credentials; sessions and leases are gone.
        names = shared_backend.redis_keys()
        assert len(names) == len(KEYS)
        assert all(name.endswith(b":fence") for name in names)


async def test_rows_of_old_credentials_are_swept_from_sqlite(tmp_path: Path) -> None:
    clock = ManualClock()
    store = await LocalStore.open(tmp_path, clock=clock.now, gc_every=0)
    try:
        for key in KEYS:  # credentials that then changed: nobody asks for them again
            lease = await store.acquire(key, ttl=5)
            assert lease is not None
            await store.publish(lease, b"old", expires_at=clock.now() + 10)
            await store.release(lease)
            await store.reject(key, until=clock.now() + 10, message="no")
        clock.advance(20)
        lease = await store.acquire("new" * 20, ttl=5)
        assert lease is not None
        await store.publish(lease, b"new", expires_at=clock.now() + 10)  # sweeps the old
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "sessions.db")) as db:
        assert db.execute("SELECT count(*) FROM sessions").fetchone()[0] == 1
        assert db.execute("SELECT count(*) FROM rejections").fetchone()[0] == 0


async def test_keys_of_old_credentials_expire_from_redis(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    backend = Backend("redis", tmp_path, redis_server)
    store = await backend.open()
    try:
        for key in KEYS:
            lease = await store.acquire(key, ttl=5)
            assert lease is not None
            await store.publish(lease, b"old", expires_at=store._clock() + 0.3)
            await store.release(lease)
            await store.reject(key, until=store._clock() + 0.3, message="no")
    finally:
        await store.close()

    def expiring() -> list[bytes]:
        return [name for name in backend.redis_keys() if not name.endswith(b":fence")]

    assert len(expiring()) == 2 * len(KEYS)  # a session and a rejection per key
    await wait_for(lambda: not expiring(), timeout=10, what="Redis to expire the keys")

"""Store failures are defined: when Redis is down or paused, or the SQLite database is
locked by another process, every operation raises ``StoreUnavailable`` promptly (never
hangs), a holder learns that its lease can no longer be kept, and the same store object
works again once the backend is back."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for
from store_support import TEST_KEY, RedisServer

from proxy.store import LocalStore, Store, StoreUnavailable, open_store, single_flight

KEY = "o" * 64
BOUND = 15  # seconds: far above the store's own timeouts, only so a hang fails the test


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, to stop and restart."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    if server.proc is not None:
        server.resume()  # in case the test stopped while it was paused
    server.stop()


@pytest.fixture
async def redis_store(own_redis: RedisServer) -> AsyncIterator[Store]:
    store = await open_store("redis", url=own_redis.url, key=TEST_KEY)
    yield store
    await store.close()


def operations(store: Store) -> list[Callable[[], Awaitable[Any]]]:
    return [
        lambda: store.get(KEY),
        lambda: store.acquire(KEY, ttl=5),
        lambda: store.touch(KEY, "v", store._clock()),
        lambda: store.invalidate(KEY, "v"),
        lambda: store.reject(KEY, until=store._clock() + 60, message="no"),
        lambda: store.backoff_state(KEY),
        lambda: store.wait(KEY, None, 30),
        lambda: store.lease_holder(KEY),
        lambda: single_flight(store, KEY, lambda held: asyncio.sleep(0, None)),  # type: ignore[arg-type,return-value]
    ]


async def assert_unavailable(store: Store) -> None:
    for operation in operations(store):
        async with asyncio.timeout(BOUND):
            with pytest.raises(StoreUnavailable):
                await operation()


async def publish(store: Store, payload: bytes) -> None:
    lease = await store.acquire(KEY, ttl=5)
    assert lease is not None
    async with store.hold(lease) as held:
        await store.publish(held.lease, payload, expires_at=store._clock() + 600)


async def test_redis_down_then_back(own_redis: RedisServer, redis_store: Store) -> None:
    await publish(redis_store, b"before")
    await asyncio.to_thread(own_redis.stop)
    await assert_unavailable(redis_store)
    await asyncio.to_thread(own_redis.start)  # same port, empty data
    assert await redis_store.get(KEY) is None  # the same object reconnected
    await publish(redis_store, b"after")
    record = await redis_store.get(KEY)
    assert record is not None and record.payload == b"after"


async def test_a_redis_restart_between_calls_goes_unnoticed(
    own_redis: RedisServer, redis_store: Store
) -> None:
    await publish(redis_store, b"before")  # the pooled connection is now open
    await asyncio.to_thread(own_redis.stop)
    await asyncio.to_thread(own_redis.start)
    assert await redis_store.get(KEY) is None  # reconnected at once, data gone with it


async def test_redis_paused_answers_unavailable_not_never(
    own_redis: RedisServer, redis_store: Store
) -> None:
    await publish(redis_store, b"before")
    own_redis.pause()
    try:
        async with asyncio.timeout(BOUND):
            with pytest.raises(StoreUnavailable, match="unavailable"):
                await redis_store.get(KEY)
    finally:
        own_redis.resume()
    record = await redis_store.get(KEY)
    assert record is not None and record.payload == b"before"


async def test_a_holder_learns_it_lost_the_lease_when_redis_goes(
    own_redis: RedisServer, redis_store: Store
) -> None:
    lease = await redis_store.acquire(KEY, ttl=0.6)
    assert lease is not None
    async with redis_store.hold(lease) as held:
        await asyncio.to_thread(own_redis.stop)
        await wait_for(lambda: held.lost, timeout=BOUND, what="the lease to count as lost")
    # Leaving the block tried to release the lease and did not raise.


@contextlib.contextmanager
def locked(database: Path) -> Iterator[None]:
    """Another process's long write transaction on the database."""
    other = sqlite3.connect(database, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


async def test_a_locked_sqlite_store_is_unavailable_for_writes_only(tmp_path: Path) -> None:
    store = await LocalStore.open(tmp_path, busy_timeout=0.2)
    try:
        await publish(store, b"held")
        with locked(tmp_path / "sessions.db"):
            writes = [
                lambda: store.acquire(KEY, ttl=5),
                lambda: store.touch(KEY, "v", store._clock()),
                lambda: store.reject(KEY, until=store._clock() + 60, message="no"),
                lambda: store.remove(KEY),
            ]
            for write in writes:
                async with asyncio.timeout(BOUND):
                    with pytest.raises(StoreUnavailable, match="database is locked"):
                        await write()
            # WAL mode: what is stored can still be read and served.
            record = await store.get(KEY)
            assert record is not None and record.payload == b"held"
        await publish(store, b"again")
        record = await store.get(KEY)
        assert record is not None and record.payload == b"again"
    finally:
        await store.close()

"""The session store's contract, run against every backend (memory, local SQLite, a real
redis-server): sessions, compare-and-delete, leases with fencing and renewal, verdicts,
waiting for another process's outcome, and single flight."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
from helpers import wait_for
from store_support import Backend

from proxy.core.clock import ManualClock
from proxy.store import (
    Backoff,
    LeaseLost,
    Record,
    Rejection,
    Store,
    single_flight,
)

KEY = "k" * 64


async def publish(store: Store, key: str = KEY, payload: bytes = b"session-1") -> Record:
    lease = await store.acquire(key, ttl=5)
    assert lease is not None
    try:
        return await store.publish(lease, payload, expires_at=store._clock() + 600)
    finally:
        await store.release(lease)


async def test_a_published_session_is_seen_by_every_store_on_the_backend(
    backend: Backend,
) -> None:
    one, two = await backend.open(), await backend.open()
    assert await one.get(KEY) is None
    record = await publish(one)
    seen = await two.get(KEY)
    assert seen is not None
    assert seen.payload == b"session-1"
    assert seen.version == record.version
    assert (seen.origin.host, seen.origin.pid, seen.origin.kind) == (
        socket.gethostname(),
        os.getpid(),
        "login",
    )
    assert seen.expires_at == record.expires_at
    assert seen.logged_in_at == seen.last_used == record.logged_in_at


async def test_an_expired_session_is_a_miss(backend: Backend) -> None:
    clock = ManualClock()
    store = await backend.open(clock.now)
    await publish(store)
    clock.advance(599)
    assert await store.get(KEY) is not None
    clock.advance(2)
    assert await store.get(KEY) is None


async def test_invalidate_deletes_only_the_session_that_was_used(backend: Backend) -> None:
    store = await backend.open()
    first = await publish(store, payload=b"first")
    assert not await store.invalidate(KEY, "not-the-version")
    assert (await store.get(KEY)) == first
    second = await publish(store, payload=b"second")
    assert second.version != first.version
    # A worker that got a 401 with the first session must not delete the second.
    assert not await store.invalidate(KEY, first.version)
    assert (await store.get(KEY)) == second
    assert await store.invalidate(KEY, second.version)
    assert await store.get(KEY) is None
    assert not await store.invalidate(KEY, second.version)


async def test_touch_slides_the_session_of_that_version_only(backend: Backend) -> None:
    clock = ManualClock()
    store = await backend.open(clock.now)
    record = await publish(store)
    assert not await store.touch(KEY, "other", clock.now() + 50)
    assert await store.touch(KEY, record.version, record.last_used + 30)
    assert await store.touch(KEY, record.version, record.last_used + 10)  # late writer
    assert await store.touch(KEY, record.version, record.last_used + 40, clock.now() + 900)
    clock.advance(700)
    seen = await store.get(KEY)
    assert seen is not None
    assert seen.last_used == record.last_used + 40
    assert seen.expires_at == record.logged_in_at + 900


async def test_remove_forgets_the_session_whatever_its_version(backend: Backend) -> None:
    store = await backend.open()
    await publish(store)
    assert await store.remove(KEY)
    assert await store.get(KEY) is None
    assert not await store.remove(KEY)


async def test_one_lease_at_a_time_with_growing_fence(backend: Backend) -> None:
    one, two = await backend.open(), await backend.open()
    first = await one.acquire(KEY, ttl=10)
    assert first is not None
    assert await two.acquire(KEY, ttl=10) is None
    holder = await two.lease_holder(KEY)
    assert holder is not None
    assert (holder.host, holder.pid, holder.fence) == (
        socket.gethostname(),
        os.getpid(),
        first.fence,
    )
    assert 0 < holder.expires_in <= 10
    assert await one.release(first)
    assert await two.lease_holder(KEY) is None
    second = await two.acquire(KEY, ttl=10)
    assert second is not None
    assert second.fence > first.fence
    assert not await one.release(first)  # a stale release does not free the new lease
    assert await one.acquire(KEY, ttl=10) is None


async def test_a_taken_over_holder_cannot_publish(backend: Backend) -> None:
    one, two = await backend.open(), await backend.open()
    stale = await one.acquire(KEY, ttl=0.3)
    assert stale is not None
    await wait_for_lease_gone(two)
    fresh = await two.acquire(KEY, ttl=10)
    assert fresh is not None and fresh.fence > stale.fence
    with pytest.raises(LeaseLost):
        await one.publish(stale, b"stale", expires_at=one._clock() + 600)
    assert not await one.renew(stale)
    assert not await one.release(stale)
    record = await two.publish(fresh, b"fresh", expires_at=two._clock() + 600)
    assert (await one.get(KEY)) == record


async def wait_for_lease_gone(store: Store) -> None:
    # The lease TTL runs on real time: poll until the store itself says it is gone.
    gone = False

    async def check() -> None:
        nonlocal gone
        while not gone:
            gone = await store.lease_holder(KEY) is None
            await asyncio.sleep(0.02)

    await asyncio.wait_for(check(), 10)


async def test_a_holder_slower_than_the_ttl_keeps_its_lease(backend: Backend) -> None:
    one, two = await backend.open(), await backend.open()
    lease = await one.acquire(KEY, ttl=0.3)
    assert lease is not None
    loop = asyncio.get_running_loop()
    async with one.hold(lease) as held:
        slow_until = loop.time() + 1.5  # five TTLs of a slow vendor
        while loop.time() < slow_until:
            assert await two.acquire(KEY, ttl=10) is None
            await asyncio.sleep(0.05)
        assert not held.lost
        record = await one.publish(held.lease, b"slow", expires_at=one._clock() + 600)
    assert (await two.get(KEY)) == record
    assert await two.lease_holder(KEY) is None  # released at the end of the block


async def test_a_holder_is_told_when_its_lease_is_gone(backend: Backend) -> None:
    store = await backend.open()
    lease = await store.acquire(KEY, ttl=0.3)
    assert lease is not None
    async with store.hold(lease) as held:
        assert await store.release(lease)  # as if it had expired and been taken
        await wait_for(lambda: held.lost, what="the holder to learn it lost the lease")
        with pytest.raises(LeaseLost):
            await store.publish(lease, b"x", expires_at=store._clock() + 600)


async def test_a_rejection_holds_everyone_back_until_cleared(backend: Backend) -> None:
    clock = ManualClock()
    one, two = await backend.open(clock.now), await backend.open(clock.now)
    until = clock.now() + 300
    await one.reject(KEY, until=until, message="invalid user name or password")
    assert await two.rejection(KEY) == Rejection(until, "invalid user name or password", KEY)
    assert await two.wait(KEY, None, 0) == Rejection(until, "invalid user name or password", KEY)
    assert await two.clear_rejection(KEY)
    assert await one.rejection(KEY) is None
    assert not await two.clear_rejection(KEY)
    await one.reject(KEY, until=until, message="again", credentials="other-digest")
    assert await two.rejection(KEY) == Rejection(until, "again", "other-digest")
    clock.advance(301)
    assert await two.rejection(KEY) is None
    assert not await two.clear_rejection(KEY)


async def test_a_backoff_is_shared_and_remembers_its_step(backend: Backend) -> None:
    clock = ManualClock()
    one, two = await backend.open(clock.now), await backend.open(clock.now)
    until = clock.now() + 4
    await one.backoff(KEY, until=until, step=4, message="HTTP 503 from the login host")
    state = await two.backoff_state(KEY)
    assert state == Backoff(until, 4, "HTTP 503 from the login host")
    assert state.active(clock.now())
    assert await two.wait(KEY, None, 0) == state
    clock.advance(5)
    later = await two.backoff_state(KEY)
    assert later == state and not later.active(clock.now())  # kept, for the next step
    assert await two.wait(KEY, None, 0) is None
    assert await one.clear_backoff(KEY)
    assert await two.backoff_state(KEY) is None


async def test_a_successful_login_clears_rejection_and_backoff(backend: Backend) -> None:
    store = await backend.open()
    now = store._clock()
    await store.reject(KEY, until=now + 300, message="rejected")
    await store.backoff(KEY, until=now + 300, step=8, message="503")
    await publish(store)
    assert await store.rejection(KEY) is None
    assert await store.backoff_state(KEY) is None


async def test_wait_returns_the_outcome_of_another_holder(backend: Backend) -> None:
    one, two = await backend.open(), await backend.open()
    old = await publish(one, payload=b"old")
    assert await two.wait(KEY, None, 0) == old  # any session will do
    assert await two.wait(KEY, old.version, 0) is None  # nobody is logging in
    lease = await one.acquire(KEY, ttl=10)
    assert lease is not None
    assert await two.wait(KEY, old.version, 0.2) is None  # timed out
    waiting = asyncio.create_task(two.wait(KEY, old.version, 30))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    new = await one.publish(lease, b"new", expires_at=one._clock() + 600)
    assert await waiting == new


async def test_wait_ends_when_the_holder_goes_without_an_outcome(backend: Backend) -> None:
    one, two = await backend.open(), await backend.open()
    lease = await one.acquire(KEY, ttl=10)
    assert lease is not None
    waiting = asyncio.create_task(two.wait(KEY, None, 30))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await one.release(lease)
    assert await waiting is None


async def test_single_flight_logs_in_once_for_many_waiters(backend: Backend) -> None:
    stores = [await backend.open() for _ in range(8)]
    logins: list[int] = []

    def login_for(store: Store, index: int):  # type: ignore[no-untyped-def]
        async def login(held):  # type: ignore[no-untyped-def]
            logins.append(index)
            await asyncio.sleep(0.3)  # a slow vendor: everyone else is waiting by now
            return await store.publish(held.lease, b"the-one", expires_at=store._clock() + 600)

        return login

    results = await asyncio.gather(
        *(single_flight(s, KEY, login_for(s, i), ttl=5, timeout=20) for i, s in enumerate(stores))
    )
    assert len(logins) == 1
    assert all(isinstance(r, Record) and r.payload == b"the-one" for r in results)
    # A 401 with that session: the stale version is not handed out again, one new login.
    stale = results[0]
    assert isinstance(stale, Record)
    assert await stores[0].invalidate(KEY, stale.version)
    again = await asyncio.gather(
        *(
            single_flight(s, KEY, login_for(s, i), stale=stale.version, ttl=5, timeout=20)
            for i, s in enumerate(stores)
        )
    )
    assert len(logins) == 2
    assert len({r.version for r in again if isinstance(r, Record)}) == 1
    assert all(isinstance(r, Record) and r.version != stale.version for r in again)


async def test_fingerprints_are_keyed_and_depend_on_every_part(backend: Backend) -> None:
    one, two = await backend.open(), await backend.open()
    identity = ["iics-password", "dm-us.informaticacloud.com", "demo", "org-1"]
    print_one = one.fingerprint(identity, ["s3cret-password"])
    assert print_one == two.fingerprint(identity, ["s3cret-password"])
    assert print_one != one.fingerprint(identity, ["s3cret-passwore"])
    assert print_one != one.fingerprint([*identity[:3], "org-2"], ["s3cret-password"])
    # No ambiguity between where the identity ends and the secrets begin.
    assert one.fingerprint(["a", "b"], ["c"]) != one.fingerprint(["a"], ["b", "c"])
    assert "s3cret" not in print_one and len(print_one) == 64

"""Single flight across processes: worker processes sharing a local store directory or a
redis-server log in once between them, survive a slow vendor, take over from a holder
killed with SIGKILL only after its lease ran out, and share rejections and backoff."""

from __future__ import annotations

import asyncio
import os
import signal

from helpers import wait_for
from store_support import Backend, Workers

from proxy.store import Store

NAMES = [f"w{i}" for i in range(6)]


def worker_key(store: Store) -> str:
    """The key store_worker.py fingerprints: the same under the same store key."""
    return store.fingerprint(["iics-password", "login.example", "demo"], ["demo-password"])


async def start_all(workers: Workers, backend: Backend, names: list[str], **job: object) -> None:
    for name in names:
        workers.spawn(backend, name, **job)
    await wait_for(lambda: workers.ready(*names), timeout=60, what="the workers to start")
    workers.go()


async def results(workers: Workers, names: list[str]) -> list[dict[str, object]]:
    return [await asyncio.to_thread(workers.result, name) for name in names]


async def test_six_processes_log_in_once(shared_backend: Backend, workers: Workers) -> None:
    await start_all(workers, shared_backend, NAMES, login_seconds=0.5)
    got = await results(workers, NAMES)
    assert len(workers.logins()) == 1
    winner = workers.logins()[0]
    assert got == [{"got": "record", "payload": f"session-from-{winner}", "origin": winner}] * 6


async def test_a_login_slower_than_the_lease_ttl_is_still_the_only_one(
    shared_backend: Backend, workers: Workers
) -> None:
    # The lease lives 0.5 s unless renewed; the vendor takes 2.5 s (five TTLs).
    await start_all(workers, shared_backend, NAMES, login_seconds=2.5, ttl=0.5)
    got = await results(workers, NAMES)
    assert len(workers.logins()) == 1
    assert {g["payload"] for g in got} == {f"session-from-{workers.logins()[0]}"}


async def test_a_killed_holder_is_taken_over_once_after_its_ttl(
    shared_backend: Backend, workers: Workers
) -> None:
    store = await shared_backend.open()
    key = worker_key(store)
    holder = workers.spawn(shared_backend, "holder", login_seconds=120, ttl=3)
    await wait_for(lambda: workers.ready("holder"), timeout=60, what="the holder to start")
    workers.go()
    await wait_for(lambda: len(workers.logins()) == 1, timeout=30, what="the holder's login")
    others = NAMES[:5]
    for name in others:
        workers.spawn(shared_backend, name, login_seconds=0.2, ttl=3)
    await wait_for(lambda: workers.ready(*others), timeout=60, what="the others to start")

    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    # The dead holder's lease still stands: nobody else has logged in.
    logins = workers.logins()
    lease = await store.lease_holder(key)
    assert lease is not None and lease.pid == holder.pid
    assert logins == [holder.pid]

    got = await results(workers, others)
    logins = workers.logins()
    assert len(logins) == 2 and logins[0] == holder.pid
    taker = logins[1]
    assert got == [{"got": "record", "payload": f"session-from-{taker}", "origin": taker}] * 5


async def test_a_rejection_stops_every_process_until_cleared(
    shared_backend: Backend, workers: Workers
) -> None:
    await start_all(workers, shared_backend, NAMES, login_seconds=0.5, outcome="reject")
    got = await results(workers, NAMES)
    assert len(workers.logins()) == 1  # one rejected login, not six
    assert got == [{"got": "rejection", "message": "wrong password"}] * 6

    store = await shared_backend.open()
    rejection = await store.rejection(worker_key(store))
    assert rejection is not None and rejection.message == "wrong password"
    assert await store.clear_rejection(worker_key(store))
    workers.spawn(shared_backend, "after")
    assert (await results(workers, ["after"]))[0]["got"] == "record"
    assert len(workers.logins()) == 2


async def test_a_backoff_holds_every_process_back(
    shared_backend: Backend, workers: Workers
) -> None:
    store = await shared_backend.open()
    until = store._clock() + 300
    await store.backoff(worker_key(store), until=until, step=4, message="HTTP 503 from login")
    await start_all(workers, shared_backend, NAMES[:3])
    got = await results(workers, NAMES[:3])
    assert got == [{"got": "backoff", "message": "HTTP 503 from login"}] * 3
    assert workers.logins() == []

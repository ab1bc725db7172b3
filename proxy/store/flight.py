"""Single flight across processes and machines: of all the workers and replicas that
need a session for the same credentials at once, one logs in and the others wait for
its stored outcome (a session, a rejection or a backoff) instead of logging in."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from proxy.store.base import Store
from proxy.store.lease import Held
from proxy.store.values import Record, Verdict

Login = Callable[[Held], Awaitable[Record | Verdict]]


async def single_flight(
    store: Store,
    key: str,
    login: Login,
    *,
    stale: str | None = None,
    ttl: float = 30.0,
    timeout: float = 60.0,
) -> Record | Verdict | None:
    """The session for ``key`` that is not version ``stale``, logging in at most once.

    Returns a stored session, or the rejection/backoff in force, or None if no outcome
    came within ``timeout`` seconds. When this process wins the lease, ``login(held)``
    runs while the lease is renewed; it must record its outcome in the store —
    ``store.publish(held.lease, ...)``, ``store.reject(...)`` or ``store.backoff(...)`` —
    and return it: the others are waiting for exactly that. If it raises instead, the
    lease is released and the next waiter tries. ``LeaseLost`` (from publish) and
    ``StoreUnavailable`` propagate.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = await store.wait(key, stale, max(0.0, deadline - loop.time()))
        if found is not None or loop.time() >= deadline:
            return found
        lease = await store.acquire(key, ttl)
        if lease is None:
            continue  # another process was quicker: wait for its outcome
        async with store.hold(lease) as held:
            # Someone may have published between our look and our lease: no second login.
            found = await store.wait(key, stale, 0)
            if found is not None:
                return found
            return await login(held)

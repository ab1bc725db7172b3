"""Holding a login lease (README, "Sessions across processes and machines"): the renewal
in the background ends when the holder is done, whatever the store client makes of the
cancellation. A store client that turns a cancelled call into an error of its own (as
redis-py can when it drops the connection mid-command) once left the renewal running
for ever, and the login that held the lease, with every request waiting on it, hung."""

from __future__ import annotations

import asyncio

from proxy.store.lease import Held, Renewer
from proxy.store.values import Lease, StoreUnavailable


async def test_stopping_ends_the_renewal_even_when_the_store_swallows_the_cancellation() -> None:
    lease = Lease(key="k", owner="o", fence=1, ttl=0.06)
    calls = 0
    in_call = asyncio.Event()

    async def renew(_lease: Lease) -> bool:
        nonlocal calls
        calls += 1
        in_call.set()
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            raise StoreUnavailable("connection dropped") from None
        return True

    held = Held(lease)
    renewer = Renewer(held, renew)
    renewer.start()
    await asyncio.wait_for(in_call.wait(), 5)
    await asyncio.wait_for(renewer.stop(), 5)  # hung for ever before: renewing on
    assert calls == 1
    assert not held.lost  # stopped by its holder, not lost

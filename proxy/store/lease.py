"""Holding a login lease: renewed in the background until released, so a vendor that
takes longer than the lease TTL cannot let a second process log in concurrently."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from proxy.store.values import Lease, StoreUnavailable

RENEWALS_PER_TTL = 3


class Held:
    """A lease being held: ``lost`` turns true (and ``lost_event`` is set) when the lease
    could not be kept. Publishing with a lost lease raises ``LeaseLost``."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.lost_event = asyncio.Event()

    @property
    def lost(self) -> bool:
        return self.lost_event.is_set()


class Renewer:
    """Renews ``held.lease`` every ttl/3 of real time. A renewal the store refuses means
    someone else holds it now; renewals that fail for a whole TTL (store unreachable)
    mean it may have expired. Either way the holder is told through ``held``."""

    def __init__(self, held: Held, renew: Callable[[Lease], Awaitable[bool]]) -> None:
        self._held = held
        self._renew = renew
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"store-lease-{self._held.lease.key}")

    async def stop(self) -> None:
        if self._task is not None:
            # The task may be inside a store call that turns the cancellation into an
            # error of its own (redis-py can, dropping the connection): ``_stopping``
            # then ends the loop, which would otherwise renew on for ever.
            self._stopping = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        lease = self._held.lease
        loop = asyncio.get_running_loop()
        kept_until = loop.time() + lease.ttl
        while loop.time() < kept_until:
            await asyncio.sleep(lease.ttl / RENEWALS_PER_TTL)
            started = loop.time()
            try:
                renewed = await self._renew(lease)
            except StoreUnavailable:
                renewed = None  # try again at the next tick, while the lease may still stand
            if self._stopping:
                return
            if renewed is False:
                break
            if renewed:
                kept_until = started + lease.ttl
        self._held.lost_event.set()

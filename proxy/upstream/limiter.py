"""A per-route cap on requests in flight to the vendor, with a bounded FIFO queue.

Requests beyond the cap wait their turn, first come first served, for at most the queue
timeout; then they are refused with an exception the caller chooses (the proxy answers
503 ``route_busy`` with ``Retry-After``). A waiter whose client goes away (its task is
cancelled) leaves the queue at once and takes no slot.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress

BusyFactory = Callable[[str, float], BaseException]
"""Builds the refusal from a sentence and a suggested Retry-After in seconds."""


class ConcurrencyLimiter:
    """At most ``limit`` holders of a slot at a time; the rest queue in arrival order.

    ``max_queue`` bounds the queue: an arrival that finds it full is refused at once.
    ``on_wait`` is told how long each admitted request waited (0 if it did not queue).
    """

    def __init__(
        self,
        limit: int,
        busy: BusyFactory,
        *,
        max_queue: int = 1000,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, not {max_queue}")
        self.limit = limit
        self.max_queue = max_queue
        self._busy = busy
        self.on_wait = on_wait
        self._in_use = 0
        # A waiter's future is resolved when a slot is handed to it: the slot is counted
        # as in use from that moment, so no newcomer can take it first.
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def queued(self) -> int:
        return len(self._waiters)

    @asynccontextmanager
    async def slot(self, timeout: float) -> AsyncIterator[None]:
        """Hold a slot for the block; wait at most ``timeout`` seconds for one."""
        await self._acquire(timeout)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, timeout: float) -> None:
        # While anyone waits, every slot is taken (a freed slot goes straight to the
        # head of the queue), so a free slot means nobody is ahead of this request.
        if self._in_use < self.limit:
            self._in_use += 1
            self._observe(0.0)
            return
        # Suggest coming back after about as long as a waiter would have waited.
        retry_after = max(1.0, timeout)
        if timeout <= 0 or len(self._waiters) >= self.max_queue:
            raise self._busy(
                f"all {self.limit} upstream slots are in use and "
                f"{len(self._waiters)} requests are queued",
                retry_after,
            )
        loop = asyncio.get_running_loop()
        started = loop.time()
        granted: asyncio.Future[None] = loop.create_future()
        self._waiters.append(granted)
        try:
            async with asyncio.timeout(timeout):
                await granted
        except BaseException as exc:
            was_granted = granted.done() and not granted.cancelled()
            if was_granted and isinstance(exc, TimeoutError):
                pass  # the slot came just as time ran out: take it
            elif was_granted:
                self._release()  # cancelled just after the handover: pass the slot on
                raise
            else:
                granted.cancel()
                with suppress(ValueError):  # a release may have dropped it already
                    self._waiters.remove(granted)
                if isinstance(exc, TimeoutError):
                    raise self._busy(
                        f"no upstream slot came free within {timeout:g} s "
                        f"(limit {self.limit} concurrent requests)",
                        retry_after,
                    ) from None
                raise
        self._observe(loop.time() - started)

    def _release(self) -> None:
        self._in_use -= 1
        while self._waiters and self._in_use < self.limit:
            waiter = self._waiters.popleft()
            if waiter.done():  # cancelled; its task is on its way out
                continue
            self._in_use += 1
            waiter.set_result(None)

    def _observe(self, waited: float) -> None:
        if self.on_wait is not None:
            self.on_wait(waited)

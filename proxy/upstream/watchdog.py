"""``read_timeout`` for proxied calls: one sweeper per process instead of a timer per read.

aiohttp's ``sock_read`` re-arms a timer on every socket read; a timer per request
(``asyncio.timeout``) was no cheaper. Here an exchange registers a deadline (a dict
insert), pushes it back when a body chunk moves (a float assignment), and a single task
wakes every ``TICK`` seconds to cancel the exchanges past their deadline. A timeout
fires at most ``TICK`` late, which is nothing next to read timeouts of seconds to minutes.
"""

from __future__ import annotations

import asyncio
import math
from types import TracebackType

TICK = 0.05


class Watch:
    """One exchange's deadline. Use as ``with watch: ...``, once or several times.

    When the deadline passes, the task is cancelled and the ``with`` block raises
    ``TimeoutError`` instead of ``CancelledError``.
    """

    __slots__ = ("_loop", "_owner", "deadline", "fired", "seconds", "task")

    def __init__(self, owner: Watchdog, seconds: float) -> None:
        self._owner = owner
        self._loop = owner.loop
        self.seconds = seconds
        self.deadline = math.inf  # armed by __enter__
        self.fired = False
        task = asyncio.current_task()
        assert task is not None
        self.task = task

    def extend(self) -> None:
        """Bytes moved: the upstream gets ``seconds`` again."""
        self.deadline = self._loop.time() + self.seconds

    def pause(self) -> None:
        """Waiting on something that is not the upstream (e.g. a slow client)."""
        self.deadline = math.inf

    def __enter__(self) -> Watch:
        """Arm (or re-arm: one watch serves an exchange's send and its response)."""
        self.deadline = self._loop.time() + self.seconds
        self._owner.register(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._owner.unregister(self)
        if self.fired and exc_type is asyncio.CancelledError:
            self.task.uncancel()
            raise TimeoutError from None


class Watchdog:
    def __init__(self) -> None:
        self._watches: set[Watch] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def watch(self, seconds: float) -> Watch:
        return Watch(self, seconds)

    def register(self, watch: Watch) -> None:
        self._watches.add(watch)
        if self._sweeper is None:
            self._sweeper = self.loop.create_task(self._sweep())

    def unregister(self, watch: Watch) -> None:
        self._watches.discard(watch)

    async def _sweep(self) -> None:
        try:
            while self._watches:  # stops when idle; the next watch starts it again
                await asyncio.sleep(TICK)
                now = self.loop.time()
                for watch in list(self._watches):
                    if now >= watch.deadline and not watch.fired:
                        watch.fired = True
                        watch.task.cancel()
        finally:
            self._sweeper = None

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)

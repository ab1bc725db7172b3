"""Wall clocks that tests can move.

Session expiry runs on the wall clock (it must survive a laptop's sleep), so the proxy
and the sandbox both read time through a ``Clock``; tests hand in a ``ManualClock`` and
advance it instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time


class Clock:
    """The real wall clock."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock(Clock):
    """A wall clock that starts at the real time and only moves when told to."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        """Time passes at once: a test sees exactly how long the proxy chose to wait."""
        self._now += seconds
        await asyncio.sleep(0)

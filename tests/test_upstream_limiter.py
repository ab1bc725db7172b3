"""The per-route concurrency cap: a FIFO queue that is bounded, times out, and survives
clients that go away while they wait."""

from __future__ import annotations

import asyncio
import random
from contextlib import AbstractAsyncContextManager

import pytest
from helpers import wait_for

from proxy.upstream.limiter import ConcurrencyLimiter


class Busy(Exception):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Harness:
    """Tasks that take a slot, note when they got it, and hold it until told to let go."""

    def __init__(self, limiter: ConcurrencyLimiter) -> None:
        self.limiter = limiter
        self.order: list[str] = []
        self.holding: set[str] = set()
        self.most_at_once = 0
        self.release: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def _hold(self, name: str, timeout: float) -> None:
        async with self.limiter.slot(timeout):
            self.order.append(name)
            self.holding.add(name)
            self.most_at_once = max(self.most_at_once, len(self.holding))
            try:
                await self.release[name].wait()
            finally:
                self.holding.discard(name)

    async def start(self, name: str, timeout: float = 5.0) -> asyncio.Task[None]:
        """Start ``name``; return once it holds a slot or stands in the queue."""
        self.release[name] = asyncio.Event()
        before = (len(self.holding), self.limiter.queued)
        task = asyncio.create_task(self._hold(name, timeout))
        self.tasks[name] = task
        await wait_for(
            lambda: task.done() or (len(self.holding), self.limiter.queued) != before,
            what=f"{name} to take a slot or queue",
        )
        return task

    async def finish(self, name: str) -> None:
        self.release[name].set()
        await self.tasks[name]


def limiter(limit: int, **kwargs: object) -> ConcurrencyLimiter:
    return ConcurrencyLimiter(limit, Busy, **kwargs)  # type: ignore[arg-type]


async def test_within_the_limit_nobody_waits() -> None:
    waits: list[float] = []
    harness = Harness(limiter(3, on_wait=waits.append))
    for name in "abc":
        await harness.start(name)
    assert harness.limiter.in_use == 3 and harness.limiter.queued == 0
    assert waits == [0.0, 0.0, 0.0]
    for name in "abc":
        await harness.finish(name)
    assert harness.limiter.in_use == 0


@pytest.mark.parametrize("limit", [1, 2, 3, 5])
async def test_waiters_are_served_in_arrival_order(limit: int) -> None:
    waits: list[float] = []
    harness = Harness(limiter(limit, on_wait=waits.append))
    holders = [f"h{i}" for i in range(limit)]
    waiters = [f"w{i}" for i in range(8)]
    for name in holders + waiters:
        await harness.start(name)
    assert harness.limiter.queued == len(waiters)
    for name in holders + waiters:
        await harness.finish(name)
    assert harness.order == holders + waiters
    assert harness.most_at_once == limit
    assert len(waits) == limit + len(waiters) and all(w >= 0 for w in waits)
    assert (harness.limiter.in_use, harness.limiter.queued) == (0, 0)


async def test_a_newcomer_cannot_take_a_slot_handed_to_a_waiter() -> None:
    harness = Harness(limiter(1))
    await harness.start("a")
    await harness.start("b")
    harness.release["a"].set()
    await wait_for(lambda: harness.tasks["a"].done(), what="a to finish")
    # a is gone and b has not run yet, but the slot is already b's.
    newcomer = harness.limiter.slot(5)
    c = asyncio.create_task(newcomer.__aenter__())
    await wait_for(lambda: harness.limiter.queued == 1 or c.done(), what="c to queue")
    assert not c.done()
    await wait_for(lambda: "b" in harness.holding, what="b to run")
    await harness.finish("b")
    await c  # c got the slot after b
    assert harness.order == ["a", "b"] and harness.limiter.in_use == 1
    await newcomer.__aexit__(None, None, None)
    assert harness.limiter.in_use == 0


async def test_a_wait_past_the_timeout_is_refused_and_leaves_the_queue() -> None:
    waits: list[float] = []
    harness = Harness(limiter(1, on_wait=waits.append))
    await harness.start("a")
    with pytest.raises(Busy) as refused:
        async with harness.limiter.slot(0.05):
            raise AssertionError("got a slot that was taken")
    assert refused.value.retry_after == 1.0  # never less than a second
    assert "within 0.05 s" in str(refused.value)
    assert (harness.limiter.in_use, harness.limiter.queued) == (1, 0)
    assert waits == [0.0]  # a refusal is not an admission
    await harness.finish("a")
    async with harness.limiter.slot(0):
        assert harness.limiter.in_use == 1


async def test_timeout_zero_refuses_at_once_without_queueing() -> None:
    harness = Harness(limiter(1))
    await harness.start("a")
    with pytest.raises(Busy, match="all 1 upstream slots are in use"):
        async with harness.limiter.slot(0):
            pass
    assert harness.limiter.queued == 0
    await harness.finish("a")


async def test_the_queue_is_bounded() -> None:
    harness = Harness(limiter(2, max_queue=3))
    for name in ["a", "b", "q1", "q2", "q3"]:
        await harness.start(name)
    assert harness.limiter.queued == 3
    with pytest.raises(Busy, match="3 requests are queued") as refused:
        async with harness.limiter.slot(30):
            pass
    assert refused.value.retry_after == 30.0
    assert harness.limiter.queued == 3
    for name in ["a", "b", "q1", "q2", "q3"]:
        await harness.finish(name)
    assert harness.order == ["a", "b", "q1", "q2", "q3"]


async def test_a_waiter_that_goes_away_leaves_the_queue_without_a_slot() -> None:
    harness = Harness(limiter(1))
    for name in ["a", "b", "c", "d"]:
        await harness.start(name)
    harness.tasks["c"].cancel()
    with pytest.raises(asyncio.CancelledError):
        await harness.tasks["c"]
    assert (harness.limiter.in_use, harness.limiter.queued) == (1, 2)
    for name in ["a", "b", "d"]:
        await harness.finish(name)
    assert harness.order == ["a", "b", "d"]
    assert (harness.limiter.in_use, harness.limiter.queued) == (0, 0)


Slot = AbstractAsyncContextManager[None]


def end_holders_block(lim: ConcurrencyLimiter) -> None:
    """What leaving a holder's ``async with`` does, but synchronously, so that the test
    controls what runs before the next waiter's task wakes up."""
    lim._release()


async def hold(lim: ConcurrencyLimiter) -> Slot:
    """A slot entered by hand; keep it referenced, as dropping it would end its block."""
    slot = lim.slot(5)
    await slot.__aenter__()
    return slot


async def queue_up(lim: ConcurrencyLimiter, timeout: float) -> tuple[Slot, asyncio.Task[None]]:
    before = lim.queued
    slot = lim.slot(timeout)
    waiter = asyncio.create_task(slot.__aenter__())
    await wait_for(lambda: lim.queued > before or waiter.done(), what="a waiter to queue")
    assert not waiter.done()
    return slot, waiter


async def test_cancelled_right_after_the_handover_passes_the_slot_on() -> None:
    lim = limiter(1)
    _held = await hold(lim)
    _b_slot, b = await queue_up(lim, 5)
    _c_slot, c = await queue_up(lim, 5)
    end_holders_block(lim)  # the slot is b's now
    b.cancel()  # and b's client goes away before b gets to run
    with pytest.raises(asyncio.CancelledError):
        await b
    await c
    assert (lim.in_use, lim.queued) == (1, 0)
    end_holders_block(lim)
    assert lim.in_use == 0


async def test_a_waiter_cancelled_before_it_leaves_still_loses_its_place() -> None:
    """Cancelled, then a slot comes free before the waiter's task gets to run."""
    lim = limiter(1)
    _held = await hold(lim)
    _b_slot, b = await queue_up(lim, 5)
    _c_slot, c = await queue_up(lim, 5)
    b.cancel()
    end_holders_block(lim)  # b is still in the queue, on its way out
    with pytest.raises(asyncio.CancelledError):
        await b
    await c
    assert (lim.in_use, lim.queued) == (1, 0)


async def test_cancelled_after_the_handover_with_nobody_waiting_frees_the_slot() -> None:
    lim = limiter(1)
    _held = await hold(lim)
    _b_slot, b = await queue_up(lim, 5)
    end_holders_block(lim)
    b.cancel()
    with pytest.raises(asyncio.CancelledError):
        await b
    assert (lim.in_use, lim.queued) == (0, 0)
    async with lim.slot(0):
        pass


async def test_a_slot_that_arrives_as_time_runs_out_is_kept() -> None:
    """The timeout fires after the handover but before the waiter runs: it keeps the slot."""
    loop = asyncio.get_running_loop()
    waits: list[float] = []
    lim = limiter(1, on_wait=waits.append)
    _held = await hold(lim)
    late_slot = lim.slot(0.05)
    late = asyncio.create_task(late_slot.__aenter__())
    await asyncio.sleep(0)  # the waiter queues, and nothing timed runs before this resumes
    assert lim.queued == 1
    deadline = loop.time() + 0.06
    while loop.time() < deadline:  # hold the loop past the waiter's deadline
        pass
    # Handed over before the (now due) timeout runs, which runs before the waiter wakes.
    loop.call_soon(end_holders_block, lim)
    await late
    assert (lim.in_use, lim.queued) == (1, 0)
    assert len(waits) == 2


async def test_an_error_in_the_block_gives_the_slot_back() -> None:
    lim = limiter(1)
    with pytest.raises(RuntimeError):
        async with lim.slot(1):
            raise RuntimeError("upstream failed")
    assert lim.in_use == 0


@pytest.mark.parametrize("limit", [1, 2, 4])
async def test_many_clients_never_exceed_the_limit(limit: int) -> None:
    lim = limiter(limit)
    rng = random.Random(limit)
    inside = 0
    most = 0
    served = 0

    async def client() -> None:
        nonlocal inside, most, served
        async with lim.slot(10):
            inside += 1
            most = max(most, inside)
            for _ in range(rng.randrange(3)):
                await asyncio.sleep(0)
            inside -= 1
            served += 1

    async with asyncio.timeout(10):
        await asyncio.gather(*(client() for _ in range(200)))
    assert (served, most) == (200, limit)
    assert (lim.in_use, lim.queued) == (0, 0)


@pytest.mark.parametrize(("limit", "max_queue"), [(0, 1), (1, -1)])
def test_nonsense_limits_are_refused(limit: int, max_queue: int) -> None:
    with pytest.raises(ValueError):
        limiter(limit, max_queue=max_queue)

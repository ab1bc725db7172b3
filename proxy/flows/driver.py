"""Running a flow: the one loop that answers a flow generator's steps.

The flow yields a ``Secret`` (answered with its value) or a ``LoginRequest`` (answered
with a ``LoginResponse``) until it returns its ``Session``. Who resolves secrets and who
performs calls is the caller's: the session manager passes real I/O, tests pass canned
answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import TypeVar

from proxy.core.secrets import Secret
from proxy.flows.base import LoginRequest, LoginResponse, Reply, Step

SecretSource = Callable[[Secret], Awaitable[str]]
Caller = Callable[[LoginRequest], Awaitable[LoginResponse]]


T = TypeVar("T")


async def drive(gen: Generator[Step, Reply, T], *, secret: SecretSource, call: Caller) -> T:
    """Feed ``gen`` until it returns (a flow: its session); its exceptions pass through."""
    reply: Reply | None = None
    try:
        while True:
            step = gen.send(reply) if reply is not None else next(gen)
            reply = await secret(step) if isinstance(step, Secret) else await call(step)
    except StopIteration as stop:
        result: T = stop.value
        return result

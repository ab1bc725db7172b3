"""The session layer's values: a session in use (``Lease``), what is shown of a route's
session (``SessionStatus``), when a session ends, where a stored session came from, and
where the layer reports what it did (``Observer``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from proxy.flows.base import Session
from proxy.ops.logs import Registration
from proxy.sessions.payload import Stored
from proxy.store import Origin

Register = Callable[..., Registration]  # masks values in logs until released
Idle = tuple[float | None, str]  # an idle timeout and where it came from: vendor, config, default

HOST = socket.gethostname()


class Observer(Protocol):
    """Where the session layer reports what it did (``ops.metrics.Metrics``)."""

    def login(self, route: str, result: str, seconds: float) -> None: ...
    def store_op(self, op: str, seconds: float, ok: bool) -> None: ...
    def store_fallback(self, route: str) -> None: ...
    def session_source(self, route: str, source: str) -> None: ...


class Unobserved:
    """An ``Observer`` that keeps nothing (tests, ``check --login``)."""

    def login(self, route: str, result: str, seconds: float) -> None:
        pass

    def store_op(self, op: str, seconds: float, ok: bool) -> None:
        pass

    def store_fallback(self, route: str) -> None:
        pass

    def session_source(self, route: str, source: str) -> None:
        pass


def session_end(session: Session, last_used: float, idle_timeout: float | None) -> float:
    """When ``session`` ends if unused after ``last_used``: its fixed ends (JWT exp...) or,
    for a sliding session, ``idle_timeout`` after its last use, whichever comes first."""
    ends = [t for t in (session.hard_expiry, session.token_expiry) if t is not None]
    fixed = min(ends) if ends else float("inf")
    if session.sliding and idle_timeout is not None:
        return min(fixed, last_used + idle_timeout)
    return fixed


@dataclass(eq=False, slots=True)
class Lease:
    """A session in use, with the wall-clock time it was last used (sliding expiry).

    It holds its session's secrets in the log redactor until it is retired.
    """

    session: Session
    logged_in_at: float
    last_used: float
    idle_timeout: float | None
    held: Registration
    idle_source: str = "default"  # where idle_timeout came from: vendor, config, default
    key: str = ""  # the store key of the credentials it was made with
    version: str | None = None  # the stored record's; None: this process's alone
    source: str = "login"  # "login" (here), "another_process" or "restart"
    origin: Origin | None = None  # the process that logged in, when it came from the store
    written: float = 0.0  # the last use written back to the store
    used_here: bool = False  # a call with it succeeded in this process
    _fixed_end: float = field(init=False)  # the earliest absolute end (JWT exp, ...)
    _idle: float | None = field(init=False)  # the sliding timeout, if it applies

    def __post_init__(self) -> None:
        self._fixed_end = session_end(self.session, 0.0, None)
        self._idle = self.idle_timeout if self.session.sliding else None

    @property
    def stored(self) -> Stored:
        """The session and what the vendor said of it, as the store keeps them."""
        return Stored(self.session, self.idle_timeout if self.idle_source == "vendor" else None)

    def expires_at(self) -> float:
        """On every request's path: two comparisons."""
        if self._idle is None:
            return self._fixed_end
        end = self.last_used + self._idle
        return end if end < self._fixed_end else self._fixed_end


@dataclass(slots=True)
class SessionStatus:
    """What ``/-/sessions`` and metrics show: never a secret."""

    state: str
    logged_in_at: float | None = None
    expires_at: float | None = None
    last_error: str | None = None
    retry_at: float | None = None  # when a rejection (else a backoff) in force ends
    org: str | None = None
    upstream: str | None = None
    idle_timeout: float | None = None
    idle_timeout_source: str = "default"  # vendor | config | default
    logins_last_hour: int = 0  # logins this process made: another's are in its own counts
    logins_last_day: int = 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def source_of(origin: Origin) -> str:
    """Where a stored session came from, as seen by this process."""
    if origin.host == HOST:
        if origin.pid == os.getpid():
            return "login"
        if not _alive(origin.pid):
            return "restart"
    return "another_process"

"""How often a route logs in, and how long the vendor keeps its sessions.

Each Ivanti login may take a concurrent licence and every login is a chance to lock an
account, so a route that logs in more often than its idle timeout explains (something
is killing its sessions) is worth a warning. And an IICS org admin may change the idle
timeout: after a login the session layer asks the vendor once (``Flow.org_idle_timeout``)
and runs the idle clock on the answer (stored with the session, for the other processes).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable

import structlog

from proxy.core.errors import ProxyError
from proxy.core.secrets import Secret
from proxy.flows.base import Flow, LoginRequest, LoginResponse, Session
from proxy.flows.driver import drive

log = structlog.get_logger("auth_proxy.sessions")

HOUR, DAY = 3600.0, 86400.0
WARN_EVERY = 600.0  # seconds between two warnings for one route
KEPT = 10_000  # login times remembered per route: a day of one every nine seconds

Executor = Callable[[LoginRequest], Awaitable[LoginResponse]]


class LoginLog:
    """The times of a route's logins (not renewals) in this process: counts per hour and
    day, a warning. A session taken from the store is not counted: it is the login of the
    process that made it, and counted there."""

    def __init__(self, route: str) -> None:
        self.route = route
        self._times: deque[float] = deque(maxlen=KEPT)
        self._warned = -math.inf

    def record(self, now: float, idle_timeout: float | None) -> None:
        self._times.append(now)
        while self._times and self._times[0] < now - DAY:
            self._times.popleft()
        last_hour = self.count(now, HOUR)
        # A session in use lives on; one left idle ends after idle_timeout. So logins
        # beyond one per idle_timeout (plus the first) mean sessions are being killed.
        expected = 1 + (math.ceil(HOUR / idle_timeout) if idle_timeout else 0)
        if last_hour > expected and now - self._warned >= WARN_EVERY:
            self._warned = now
            log.warning(
                "frequent_logins",
                route=self.route,
                logins_last_hour=last_hour,
                expected_at_most=expected,
                hint="something may be ending the vendor sessions (a logout, a kill)",
            )

    def count(self, now: float, window: float) -> int:
        return sum(1 for t in self._times if t > now - window)


async def org_idle_timeout(flow: Flow, session: Session, execute: Executor) -> float | None:
    """The vendor's idle timeout for ``session`` in seconds, or None; never fails a login."""

    async def no_secret(source: Secret) -> str:
        raise LookupError("the probe asks for no secret")

    try:
        return await drive(flow.org_idle_timeout(session), secret=no_secret, call=execute)
    except (ProxyError, LookupError) as exc:
        log.info("org_idle_timeout_unknown", reason=type(exc).__name__)
        return None

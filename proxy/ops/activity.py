"""Recent activity for the status page (README, "Status page"): rolling counts that stay
the same size however long the process runs.

``MinuteCounts`` keeps one small dict per minute in a ring of fixed length; a count "in
the last hour" adds up the minutes it covers (the current minute included, so it is
exact to the minute). ``LoginHistory`` is a route's last login attempts and its
attempts per outcome over a day; ``Traffic`` is the routes' requests, replays,
throttled answers and errors by code over the last hour. Both are per process.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

MINUTE = 60.0
HOUR_MINUTES = 60
DAY_MINUTES = 24 * 60
RECENT_ATTEMPTS = 20


class MinuteCounts:
    """Counts by label per wall-clock minute, for the last ``minutes`` minutes."""

    __slots__ = ("_buckets", "_current", "_minute")

    def __init__(self, minutes: int) -> None:
        self._buckets: deque[tuple[int, dict[str, int]]] = deque(maxlen=minutes)
        self._minute = -1
        self._current: dict[str, int] = {}

    def __len__(self) -> int:
        """The minutes kept (at most ``minutes``)."""
        return len(self._buckets)

    def add(self, now: float, label: str) -> None:
        """One more ``label`` at ``now``: on the request path, so a few operations."""
        minute = int(now // MINUTE)
        if minute != self._minute:
            self._minute = minute
            self._current = {}
            self._buckets.append((minute, self._current))
        current = self._current
        current[label] = current.get(label, 0) + 1

    def totals(self, now: float, minutes: int) -> dict[str, int]:
        """The counts of the last ``minutes`` minutes (this one included), by label."""
        first = int(now // MINUTE) - minutes + 1
        out: dict[str, int] = {}
        for minute, counts in reversed(self._buckets):
            if minute < first:
                break
            for label, n in counts.items():
                out[label] = out.get(label, 0) + n
        return out


@dataclass(frozen=True, slots=True)
class Attempt:
    """One login or renewal: when it ended, its outcome, how long it took, its error
    code ("" when it succeeded). Never a secret, never the vendor's text."""

    at: float
    result: str  # ok, renewed, rejected, failed
    seconds: float
    code: str


class LoginHistory:
    """A route's login attempts in this process: the last ``RECENT_ATTEMPTS``, and how
    many ended each way per minute over a day."""

    __slots__ = ("_counts", "_recent")

    def __init__(self) -> None:
        self._recent: deque[Attempt] = deque(maxlen=RECENT_ATTEMPTS)
        self._counts = MinuteCounts(DAY_MINUTES)

    def record(self, now: float, result: str, seconds: float, code: str = "") -> None:
        self._recent.append(Attempt(now, result, seconds, code))
        self._counts.add(now, result)

    def recent(self) -> list[Attempt]:
        """The last attempts, newest first."""
        return list(reversed(self._recent))

    def outcomes(self, now: float, minutes: int) -> dict[str, int]:
        return self._counts.totals(now, minutes)


REQUESTS = "requests"
REPLAYED = "replayed"
THROTTLED = "throttled"
ERROR = "error:"  # followed by the proxy's error code (or upstream_5xx)


class Traffic:
    """Requests per route over the last hour: the request path adds, the page reads."""

    __slots__ = ("_routes",)

    def __init__(self) -> None:
        self._routes: dict[str, MinuteCounts] = {}

    def request(
        self, now: float, route: str, status: int, code: str | None, replayed: bool, throttled: int
    ) -> None:
        counts = self._routes.get(route)
        if counts is None:
            counts = self._routes[route] = MinuteCounts(HOUR_MINUTES)
        counts.add(now, REQUESTS)
        if code is not None:
            counts.add(now, ERROR + code)
        elif status >= 500:
            counts.add(now, ERROR + "upstream_5xx")
        if replayed:
            counts.add(now, REPLAYED)
        if throttled:
            counts.add(now, THROTTLED)

    def totals(self, route: str, now: float, minutes: int) -> dict[str, int]:
        counts = self._routes.get(route)
        return {} if counts is None else counts.totals(now, minutes)

    def retain(self, routes: set[str]) -> None:
        """Forget routes a reload removed (bounded by the config, not by uptime)."""
        for name in self._routes.keys() - routes:
            del self._routes[name]

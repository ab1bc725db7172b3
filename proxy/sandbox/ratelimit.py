"""A vendor rate limit that a test switches on for one fake app."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from email.utils import formatdate

from aiohttp import web


@dataclass
class RateLimit:
    """A vendor rate limit on one fake app, on while it sits in ``SandboxState.rate_limits``.

    Both triggers are deterministic under a ``ManualClock``. ``refuse_next`` refuses that
    many requests outright, each with ``Retry-After: retry_after`` (``None`` sends none),
    then lets everything through. ``requests`` per ``per`` seconds is a token bucket on
    the sandbox clock: it holds ``requests`` tokens, gains one every ``per / requests``
    seconds, and a request finding it empty is refused with ``Retry-After`` saying when
    the next token comes. Refusals answer ``status`` (429, or 503 as IICS also does); with
    ``http_date`` the ``Retry-After`` is an HTTP-date on the sandbox clock. Login
    endpoints are never limited. ``refused`` counts refusals.
    """

    refuse_next: int = 0
    retry_after: float | None = 1.0
    requests: int | None = None
    per: float = 60.0
    status: int = 429
    http_date: bool = False
    refused: int = 0
    _full_at: float = field(default=-math.inf, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.requests is not None and (self.requests < 1 or self.per <= 0):
            raise ValueError("a token bucket needs requests >= 1 and per > 0")
        if self.status not in (429, 503):
            raise ValueError(f"a rate limit answers 429 or 503, not {self.status}")

    def refusal(self, now: float) -> web.Response | None:
        """The throttle answer to a request arriving at ``now``, or ``None`` to serve it."""
        if self.refuse_next > 0:
            self.refuse_next -= 1
            wait: float | None = self.retry_after
        else:
            wait = self._bucket_wait(now)
            if wait == 0:
                return None
        self.refused += 1
        headers: dict[str, str] = {}
        if wait is not None:
            # Whole seconds, rounded up: coming back at the time said must succeed.
            if self.http_date:
                headers["Retry-After"] = formatdate(math.ceil(now + wait), usegmt=True)
            else:
                headers["Retry-After"] = str(math.ceil(wait))
        body = {"error": {"code": "RATE_LIMITED", "message": "Too many requests."}}
        return web.json_response(body, status=self.status, headers=headers)

    def _bucket_wait(self, now: float) -> float:
        """Take a token: 0 if there was one, else the seconds until the next one."""
        if self.requests is None:
            return 0
        # Kept as GCRA, the same bucket by another bookkeeping: one "full again" time
        # moved by whole intervals, so that a ManualClock's steps land exactly on them.
        interval = self.per / self.requests
        full_at = max(self._full_at, now)
        early = full_at - now - (self.requests - 1) * interval
        if early > 0:
            return early
        self._full_at = full_at + interval
        return 0

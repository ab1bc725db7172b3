"""When the vendor says "too many requests": how long to wait, and when to stop waiting.

IICS applies dynamic rate limits and answers 429 (or 503 with ``Retry-After``); a client
that retries at once makes it worse. This module decides, for one request, whether to
try again and after how long: the vendor's ``Retry-After`` when it gives one, else a
short capped exponential wait with full jitter, all within a per-request budget. Only
idempotent methods are retried. No I/O: time and randomness are passed in.
"""

from __future__ import annotations

import math
import random as _random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

DEFAULT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_DELAY = 1e9
"""Larger delta-seconds are read as this: far beyond any budget, and finite."""

_OWS = " \t"
_DELTA_SECONDS = re.compile(r"[0-9]+")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH = "(?P<month>" + "|".join(_MONTHS) + ")"
_TIME = r"(?P<hour>\d\d):(?P<minute>\d\d):(?P<second>\d\d)"
_DAY_NAME = "(?:mon|tue|wed|thu|fri|sat|sun)"
_LONG_DAY_NAME = "(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
# The three HTTP-date forms a recipient must accept (RFC 9110, section 5.6.7).
_IMF_FIXDATE = re.compile(
    rf"{_DAY_NAME}, (?P<day>\d\d) {_MONTH} (?P<year>\d{{4}}) {_TIME} GMT", re.I | re.A
)
_RFC850_DATE = re.compile(
    rf"{_LONG_DAY_NAME}, (?P<day>\d\d)-{_MONTH}-(?P<year>\d\d) {_TIME} GMT", re.I | re.A
)
_ASCTIME_DATE = re.compile(
    rf"{_DAY_NAME} {_MONTH} (?P<day>[ \d]\d) {_TIME} (?P<year>\d{{4}})", re.I | re.A
)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait, from a ``Retry-After`` value; ``None`` if absent or invalid.

    The value is delta-seconds (``120``) or an HTTP-date, read against ``now`` (Unix
    time); a date in the past means "now" (0). Never raises.
    """
    if value is None:
        return None
    text = value.strip(_OWS)
    if _DELTA_SECONDS.fullmatch(text):
        # int() refuses very long digit strings; anything this long is "forever" anyway.
        return MAX_DELAY if len(text) > 9 else float(int(text))
    moment = _http_date(text, now)
    return None if moment is None else max(0.0, moment - now)


def _http_date(text: str, now: float) -> float | None:
    match = _IMF_FIXDATE.fullmatch(text) or _ASCTIME_DATE.fullmatch(text)
    two_digit_year = False
    if match is None:
        match = _RFC850_DATE.fullmatch(text)
        two_digit_year = True
    if match is None:
        return None
    year = int(match["year"])
    if two_digit_year:
        # The year with these last two digits from 49 years back to 50 ahead: one more
        # than 50 years ahead is taken to be in the past.
        earliest = datetime.fromtimestamp(now, UTC).year - 49
        year = earliest + (year - earliest) % 100
    try:
        moment = datetime(
            year,
            _MONTHS.index(match["month"].lower()) + 1,
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            min(int(match["second"]), 59),  # a leap second (60) is read as :59
            tzinfo=UTC,
        )
    except ValueError:  # 31 Feb, hour 25, year 0, ...
        return None
    return moment.timestamp()


def backoff(
    attempt: int,
    *,
    base: float = 0.5,
    cap: float = 8.0,
    random: Callable[[], float] = _random.random,
) -> float:
    """The wait before retry ``attempt`` (0 first) when the vendor gave no Retry-After.

    Full jitter: uniform over ``[0, min(cap, base * 2**attempt))``, so that clients
    throttled together do not come back together.
    """
    ceiling = cap if attempt >= 64 else min(cap, base * 2.0**attempt)
    return random() * ceiling


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """A route's throttle settings. ``max_wait`` is the most one request may spend waiting
    in total (0 turns retrying off); only ``methods`` are ever retried."""

    max_wait: float = 30.0
    methods: frozenset[str] = DEFAULT_METHODS
    max_retries: int = 10
    """Bounds the attempts even when the vendor keeps saying ``Retry-After: 0``."""
    backoff_base: float = 0.5
    backoff_cap: float = 8.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_wait) and self.max_wait >= 0):
            raise ValueError(f"max_wait must be a number of seconds >= 0, not {self.max_wait}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, not {self.max_retries}")
        if not 0 < self.backoff_base <= self.backoff_cap:
            raise ValueError("backoff_base must be > 0 and no larger than backoff_cap")
        object.__setattr__(self, "methods", frozenset(m.upper() for m in self.methods))

    @property
    def enabled(self) -> bool:
        return self.max_wait > 0 and self.max_retries > 0

    def retries(self, method: str) -> bool:
        """Whether a ``method`` request may be retried at all (idempotent, and on)."""
        return self.enabled and method.upper() in self.methods

    def budget(
        self,
        method: str,
        *,
        now: Callable[[], float],
        random: Callable[[], float] = _random.random,
    ) -> ThrottleBudget:
        return ThrottleBudget(self, method, now=now, random=random)


class ThrottleBudget:
    """One request's allowance for waiting out the vendor's throttling.

    After each upstream answer, ``next_wait(status, headers)`` says how many seconds to
    wait before trying again, or ``None``: give up and hand the client the vendor's last
    answer unchanged. Gives up at once for a method that is not retried, for an answer
    that is not throttling (429, or 503 *with* a valid ``Retry-After``), when the
    retries are used up, and when the vendor asks for a wait beyond what is left of the
    budget (waiting and then failing anyway helps no one). Without a ``Retry-After`` the
    jittered wait is cut to what is left.
    """

    def __init__(
        self,
        policy: ThrottlePolicy,
        method: str,
        *,
        now: Callable[[], float],
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.policy = policy
        self.applies = policy.retries(method)
        self.waited = 0.0
        self.retries = 0
        self._now = now
        self._random = random

    @property
    def remaining(self) -> float:
        return max(0.0, self.policy.max_wait - self.waited)

    def next_wait(self, status: int, headers: Mapping[str, str]) -> float | None:
        if not self.applies or status not in (429, 503):
            return None
        if self.retries >= self.policy.max_retries or self.remaining <= 0:
            return None
        wait = parse_retry_after(header(headers, "Retry-After"), self._now())
        if wait is None:
            if status == 503:  # without Retry-After a 503 is an outage, not throttling
                return None
            jittered = backoff(
                self.retries,
                base=self.policy.backoff_base,
                cap=self.policy.backoff_cap,
                random=self._random,
            )
            wait = min(jittered, self.remaining)
        elif wait > self.remaining:
            return None
        self.waited += wait
        self.retries += 1
        return wait


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The first ``name`` header, matched case-insensitively even in a plain dict."""
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)

"""Throttle handling as pure logic: Retry-After parsing, the jittered wait, the budget."""

from __future__ import annotations

import email.utils
import itertools
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.upstream.throttle import (
    MAX_DELAY,
    ThrottlePolicy,
    backoff,
    parse_retry_after,
)

NOW = 1_750_000_000.0  # 2025-06-15T15:06:40Z
LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


def imf(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


def at(timestamp: float, fmt: str) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime(fmt)


# --------------------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        ("120", 120.0),
        (" \t7 ", 7.0),
        ("007", 7.0),
        ("999999999", 999_999_999.0),
        ("1" + "0" * 30, MAX_DELAY),
        ("9" * 5000, MAX_DELAY),  # longer than int() accepts
        (imf(NOW + 90), 90.0),
        (imf(NOW - 3600), 0.0),  # a date in the past: go now
        ("Sun, 15 Jun 2025 15:08:10 GMT", 90.0),
        ("sun, 15 JUN 2025 15:08:10 gmt", 90.0),
        ("Sunday, 15-Jun-25 15:08:10 GMT", 90.0),  # RFC 850
        ("Sun Jun 15 15:08:10 2025", 90.0),  # asctime
        ("Sun Jun  1 00:00:00 2025", 0.0),  # asctime, space-padded day
        ("Mon, 30 Jun 2025 23:59:60 GMT", 1_751_327_999.0 - NOW),  # a leap second
    ],
)
def test_retry_after_values(value: str, seconds: float) -> None:
    assert parse_retry_after(value, NOW) == seconds


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "-1",
        "+5",
        "1.5",
        "1e3",
        "٣",  # a non-ASCII digit
        "5 seconds",
        "Sun, 15 Jun 2025 15:08:10",  # no zone
        "Sun, 15 Jun 2025 15:08:10 +0000",  # not GMT
        "Sun, 31 Feb 2025 15:08:10 GMT",  # no such day
        "Sun, 15 Jun 2025 25:08:10 GMT",
        "Sun, 15 Jun 0000 15:08:10 GMT",
        "Sun, 15 Foo 2025 15:08:10 GMT",
        "Funday, 15-Jun-25 15:08:10 GMT",
        "2025-06-15T15:08:10Z",
    ],
)
def test_invalid_retry_after_is_none(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


def year_start(year: int) -> float:
    return datetime(year, 1, 1, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("now_year", "value", "meant_year"),
    [
        (2025, "Saturday, 01-Jan-94 00:00:00 GMT", 1994),
        (2025, "Saturday, 01-Jan-75 00:00:00 GMT", 2075),  # 50 years ahead: still future
        (2025, "Thursday, 01-Jan-76 00:00:00 GMT", 1976),  # 51 ahead: the past
        (2099, "Friday, 01-Jan-00 00:00:00 GMT", 2100),  # across the century
        (2070, "Thursday, 01-Jan-70 00:00:00 GMT", 2070),
    ],
)
def test_rfc850_two_digit_years(now_year: int, value: str, meant_year: int) -> None:
    now = datetime(now_year, 12, 31, 23, 59, tzinfo=UTC).timestamp()
    assert parse_retry_after(value, now) == max(0.0, year_start(meant_year) - now)


@given(st.integers(min_value=0, max_value=10**40))
def test_any_delta_seconds_is_read_as_that_many(seconds: int) -> None:
    assert parse_retry_after(str(seconds), NOW) == min(float(seconds), MAX_DELAY)


@given(
    st.floats(min_value=0, max_value=LATEST),
    st.integers(min_value=0, max_value=int(LATEST)),
)
def test_any_imf_date_is_read_exactly(now: float, moment: int) -> None:
    assert parse_retry_after(imf(moment), now) == max(0.0, moment - now)


@given(st.integers(min_value=0, max_value=int(LATEST)))
def test_the_three_date_forms_agree(moment: int) -> None:
    asctime = at(moment, "%a %b ") + f"{datetime.fromtimestamp(moment, UTC).day:2d}"
    asctime += at(moment, " %H:%M:%S %Y")
    now = float(moment - 5)
    assert parse_retry_after(imf(moment), now) == 5.0
    assert parse_retry_after(asctime, now) == 5.0
    rfc850 = at(moment, "%A, %d-%b-%y %H:%M:%S GMT")
    # Two digits name the year only within 50 years of now.
    assert parse_retry_after(rfc850, now) == 5.0


@given(st.text(max_size=60), st.floats(min_value=0, max_value=4e9))
def test_parse_never_raises_and_never_goes_negative(value: str, now: float) -> None:
    result = parse_retry_after(value, now)
    assert result is None or 0 <= result <= max(MAX_DELAY, LATEST)


# --------------------------------------------------------------------------- backoff


def test_backoff_is_full_jitter_capped_exponential() -> None:
    assert [backoff(n, random=lambda: 0.999999) for n in range(7)] == pytest.approx(
        [0.5, 1, 2, 4, 8, 8, 8], rel=1e-5
    )
    assert backoff(3, random=lambda: 0.0) == 0.0
    assert backoff(2, base=1, cap=3, random=lambda: 0.5) == 1.5
    assert backoff(10_000, random=lambda: 0.5) == 4.0  # no overflow for huge attempts


# --------------------------------------------------------------------------- budget


def limit(status: int = 429, **headers: str) -> tuple[int, CIMultiDict[str]]:
    return status, CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()})


def budget(policy: ThrottlePolicy | None = None, method: str = "GET", now: float = NOW):
    return (policy or ThrottlePolicy()).budget(method, now=lambda: now, random=lambda: 0.5)


def test_honours_retry_after_until_the_budget_is_spent() -> None:
    spend = budget(ThrottlePolicy(max_wait=30))
    waits = [spend.next_wait(*limit(Retry_After="10")) for _ in range(4)]
    assert waits == [10.0, 10.0, 10.0, None]
    assert (spend.waited, spend.retries) == (30.0, 3)


def test_a_retry_after_beyond_what_is_left_gives_up_at_once() -> None:
    spend = budget(ThrottlePolicy(max_wait=30))
    assert spend.next_wait(*limit(Retry_After="20")) == 20.0
    assert spend.next_wait(*limit(Retry_After="11")) is None
    assert spend.waited == 20.0  # nothing was spent on the refusal
    assert budget(ThrottlePolicy(max_wait=30)).next_wait(*limit(Retry_After="31")) is None


def test_http_date_is_read_against_the_injected_clock() -> None:
    spend = budget(ThrottlePolicy(max_wait=30), now=NOW)
    assert spend.next_wait(*limit(503, Retry_After=imf(NOW + 12))) == 12.0
    assert spend.next_wait(*limit(503, Retry_After=imf(NOW + 19))) is None


def test_without_retry_after_429_waits_jittered_and_503_passes_through() -> None:
    spend = budget(ThrottlePolicy(max_wait=3))
    assert [spend.next_wait(*limit()) for _ in range(4)] == [0.25, 0.5, 1.0, 1.25]
    assert spend.next_wait(*limit()) is None  # all 3 s spent: the last wait was cut to fit
    assert budget().next_wait(*limit(503)) is None
    assert budget().next_wait(*limit(503, Retry_After="soon")) is None


@pytest.mark.parametrize("status", [200, 201, 304, 400, 401, 404, 500, 502, 504])
def test_other_answers_are_never_retried(status: int) -> None:
    assert budget().next_wait(*limit(status, Retry_After="1")) is None


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_non_idempotent_methods_are_never_retried(method: str) -> None:
    assert budget(method=method).next_wait(*limit(Retry_After="1")) is None


def test_methods_are_configurable_and_case_insensitive() -> None:
    policy = ThrottlePolicy(methods=frozenset({"get", "put"}))
    assert budget(policy, "PUT").next_wait(*limit(Retry_After="1")) == 1.0
    assert budget(policy, "head").next_wait(*limit(Retry_After="1")) is None
    assert budget(policy, "get").next_wait(*limit(Retry_After="1")) == 1.0


def test_max_wait_zero_turns_it_off() -> None:
    policy = ThrottlePolicy(max_wait=0)
    assert not policy.enabled and not policy.retries("GET")
    assert budget(policy).next_wait(*limit(Retry_After="0")) is None


def test_retries_are_bounded_even_when_the_vendor_says_zero() -> None:
    spend = budget(ThrottlePolicy(max_retries=3))
    waits = list(itertools.islice(iter(lambda: spend.next_wait(*limit(Retry_After="0")), None), 10))
    assert waits == [0.0, 0.0, 0.0]


def test_header_lookup_ignores_case_even_in_a_plain_dict() -> None:
    assert budget().next_wait(429, {"retry-after": "4"}) == 4.0
    assert budget().next_wait(429, {"RETRY-AFTER": "4"}) == 4.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_wait": -1},
        {"max_wait": float("inf")},
        {"max_wait": float("nan")},
        {"max_retries": -1},
        {"backoff_base": 0},
        {"backoff_base": 9, "backoff_cap": 8},
    ],
)
def test_policy_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ThrottlePolicy(**kwargs)  # type: ignore[arg-type]


@given(
    st.lists(
        st.one_of(
            st.none(),
            st.integers(min_value=0, max_value=60).map(str),
            st.integers(min_value=-60, max_value=60).map(lambda s: imf(NOW + s)),
        ),
        max_size=30,
    ),
    st.floats(min_value=0, max_value=1, exclude_max=True),
    st.integers(min_value=0, max_value=120),
)
def test_the_total_wait_never_exceeds_max_wait(
    values: list[str | None], jitter: float, max_wait: int
) -> None:
    policy = ThrottlePolicy(max_wait=max_wait)
    spend = policy.budget("GET", now=lambda: NOW, random=lambda: jitter)
    total = 0.0
    for value in values:
        wait = spend.next_wait(429, {} if value is None else {"Retry-After": value})
        if wait is None:
            break
        assert wait >= 0
        total += wait
    assert total <= max_wait
    assert spend.retries <= policy.max_retries

"""A ``Session`` as the bytes the session store keeps (JSON; the store encrypts them),
with the idle timeout the vendor gave for it, so that every process taking the session
runs the idle clock the process that logged in learned.

A payload written by another version of the proxy, or damaged, reads as no session: the
caller logs in instead of failing.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from proxy.flows.base import Session

FORMAT = 1


class Stored(NamedTuple):
    session: Session
    vendor_idle: float | None  # the org's idle timeout, if the vendor said (seconds)


def _pairs(value: Any) -> tuple[tuple[str, str], ...]:
    return tuple((str(name), str(text)) for name, text in value)


def _time(value: Any) -> float | None:
    return None if value is None else float(value)


def encode(session: Session, vendor_idle: float | None = None) -> bytes:
    return json.dumps(
        {
            "v": FORMAT,
            "vendor_idle": vendor_idle,
            "headers": session.headers,
            "upstream": session.upstream,
            "alt_upstreams": session.alt_upstreams,
            "default_headers": session.default_headers,
            "hard_expiry": session.hard_expiry,
            "token_expiry": session.token_expiry,
            "sliding": session.sliding,
            "org": session.org,
            "user": session.user,
            "secrets": session.secrets,
            "data": dict(session.data),
        },
        separators=(",", ":"),
    ).encode()


def decode(payload: bytes) -> Stored | None:
    try:
        data = json.loads(payload)
        if data.get("v") != FORMAT:
            return None
        session = Session(
            headers=_pairs(data["headers"]),
            upstream=str(data["upstream"]),
            alt_upstreams=_pairs(data["alt_upstreams"]),
            default_headers=_pairs(data["default_headers"]),
            hard_expiry=_time(data["hard_expiry"]),
            token_expiry=_time(data["token_expiry"]),
            sliding=bool(data["sliding"]),
            org=data["org"],
            user=data["user"],
            secrets=tuple(str(s) for s in data["secrets"]),
            data=dict(data["data"]),
        )
        # Absent from a payload written before the proxy asked the vendor: unknown.
        return Stored(session, _time(data.get("vendor_idle")))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None

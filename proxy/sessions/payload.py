"""A ``Session`` as the bytes the session store keeps (JSON; the store encrypts them).

A payload written by another version of the proxy, or damaged, reads as no session: the
caller logs in instead of failing.
"""

from __future__ import annotations

import json
from typing import Any

from proxy.flows.base import Session

FORMAT = 1


def _pairs(value: Any) -> tuple[tuple[str, str], ...]:
    return tuple((str(name), str(text)) for name, text in value)


def _time(value: Any) -> float | None:
    return None if value is None else float(value)


def encode(session: Session) -> bytes:
    return json.dumps(
        {
            "v": FORMAT,
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


def decode(payload: bytes) -> Session | None:
    try:
        data = json.loads(payload)
        if data.get("v") != FORMAT:
            return None
        return Session(
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
    except (ValueError, TypeError, KeyError, AttributeError):
        return None

"""Masking secrets in text: the rules shared by the log redactor and by the messages
built from a vendor's answer (which may quote what it was sent).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "****"
SECRET_KEYS = frozenset(
    {
        "password",
        "api_key",
        "apikey",
        "token",
        "access_token",
        "client_secret",
        "secret",
        "authorization",
        "proxy-authorization",
        "icsessionid",
        "infa-session-id",
        "ids-session-id",
        "session_id",
        "sessionid",
        "cookie",
        "set-cookie",
        "saml_token",
        "oauth_token",
        "jwt",
        "jwt_token",
        "security_token",
        "sf_session_id",
    }
)
USERINFO = re.compile(r"(?<=://)[^/@\s:]+:[^/@\s]+@")
QUERY_PARAM = re.compile(r"([?&]([^=&?\s\"']+)=)[^&\s\"']*")
MIN_SECRET = 4
_TRUNCATED = "…"  # marks vendor text cut short, so a cut-off secret can still be found


def _normal(name: str) -> str:
    """A field, header or parameter name without case or separators (INFA-SESSION-ID)."""
    return name.lower().replace("-", "").replace("_", "")


_SECRET_NAMES = frozenset(_normal(k) for k in SECRET_KEYS)
_SECRET_SUFFIXES = ("token", "secret", "password", "sessionid", "apikey")
# Names too generic for log fields (an event's ``code`` is an error code), but in a
# query string they carry a secret (an OAuth ``code``, a ``sid``, a ``key``).
_SECRET_PARAMS = _SECRET_NAMES | {"code", "nonce", "sid", "key"}


def is_secret_name(name: str) -> bool:
    name = _normal(name)
    return name in _SECRET_NAMES or name.endswith(_SECRET_SUFFIXES)


def mask_param(match: re.Match[str]) -> str:
    name = _normal(match.group(2))
    if name in _SECRET_PARAMS or name.endswith(_SECRET_SUFFIXES):
        return match.group(1) + MASK
    return match.group(0)


def forms(value: str) -> set[str]:
    """``value`` as it may be quoted back: verbatim, JSON-escaped, URL-encoded."""
    return {
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        quote(value, safe=""),
        quote(value, safe="/"),
        quote_plus(value),
    }


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the cut marked so ``scrub`` can see it."""
    return text if len(text) <= limit else text[:limit] + _TRUNCATED


def scrub(text: str, values: Iterable[str]) -> str:
    """``text`` with every form of ``values`` masked, including one cut off by ``clip``.

    For messages built from a vendor's answer, which may quote what it was sent. Unlike
    the redactor it masks values of any length: it only sees the few a login handled.
    """
    found = sorted({f for v in values if v for f in forms(v)}, key=len, reverse=True)
    for form in found:
        text = text.replace(form, MASK)
    if _TRUNCATED in text:
        for form in found:
            for end in range(len(form) - 1, 0, -1):
                cut = form[:end] + _TRUNCATED
                if cut in text:
                    text = text.replace(cut, MASK + _TRUNCATED)
                    break
    return text

"""How the vendor may read a request path, for the decisions the proxy takes on it.

The proxy forwards the raw path, but the vendor's server reads it after decoding and
normalising, so a decision taken on the raw bytes can be sidestepped: ``/user/%6Cogout``,
``/user//logout``, ``/user/x/../logout`` and ``/user/logout;jsessionid=x`` are all a
logout to a Java servlet container. The vendor's exact rules are not known, so every
plausible reading counts:

- *strict*: path parameters (``;…``) dropped from each segment, as servlet containers do
  before decoding; percent-escapes of unreserved characters decoded (RFC 3986 §2.3);
  ``//`` runs collapsed; ``.`` and ``..`` segments resolved (RFC 3986 §5.2.4).
- *loose*: every escape decoded, repeatedly (a front end may decode before the
  application does, so ``%2F`` can be a slash and ``%25`` a second round), ``\\`` read as
  ``/``, a decoded ``?`` or ``#`` ending the path, each segment trimmed of spaces; then
  as above.

Each reading is reduced to a *route key*: lowercased, without a trailing slash, and
without a ``.suffix`` on its last segment, because the vendor's routing may ignore case,
a trailing slash and a suffix (Spring's suffix-pattern matching).
"""

from __future__ import annotations

import re
import string
from urllib.parse import unquote

from proxy.core.errors import BadRequest

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_END_OF_PATH = re.compile(r"[?#]")
_MAX_DECODES = 3  # rounds of decoding a loose reading allows for; more is not plausible


def vendor_paths(path: str) -> tuple[str, ...]:
    """The route keys the vendor may read ``path`` as (raw, starting with ``/``).

    Raises ``BadRequest`` when a reading's ``..`` segments climb above the start of
    ``path``: forwarded, such a path would reach something outside the route's base.
    """
    if is_plain(path):
        return (route_key(path),)
    strict = route_key(_resolve([_decode_unreserved(s.split(";", 1)[0]) for s in path.split("/")]))
    loose = route_key(_resolve([s.split(";", 1)[0].strip() for s in _decode_all(path).split("/")]))
    return (strict,) if strict == loose else (strict, loose)


def is_plain(path: str) -> bool:
    """True when nothing in ``path`` can be read two ways: the common, fast case."""
    return (
        "%" not in path
        and ";" not in path
        and "//" not in path
        and "/." not in path
        and "\\" not in path
    )


def route_key(path: str) -> str:
    """``path`` as a lenient router compares it: case, trailing slash and suffix ignored."""
    key = path.lower()
    if "." not in key and key[-1:] != "/":
        return key
    key = key.rstrip("/") or "/"
    dot = key.find(".", key.rfind("/") + 2)  # a name that starts with a dot has no suffix
    return key if dot == -1 else key[:dot]


def _decode_unreserved(segment: str) -> str:
    if "%" not in segment:
        return segment
    return _ESCAPE.sub(_unreserved, segment)


def _unreserved(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else match.group(0)


def _decode_all(path: str) -> str:
    for _ in range(_MAX_DECODES):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    return _END_OF_PATH.split(path, 1)[0].replace("\\", "/")


def _resolve(segments: list[str]) -> str:
    """``/`` and ``segments`` joined, without empty and ``.`` ones, each ``..`` applied."""
    out: list[str] = []
    for segment in segments:
        if segment in ("", "."):
            continue
        if segment != "..":
            out.append(segment)
        elif out:
            out.pop()
        else:
            raise BadRequest("the request path climbs out of the route with '..' segments")
    return "/" + "/".join(out)

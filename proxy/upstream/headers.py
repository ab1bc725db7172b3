"""Which headers cross the proxy, both ways (README, "How a request is handled").

Hop-by-hop headers (RFC 9110 §7.6.1 and those named in ``Connection``) are dropped both
ways; the route's and the session's headers replace the client's; ``Location`` pointing
at the upstream is pointed back at the proxy; a ``Set-Cookie`` carrying the vendor
session never reaches the client.
"""

from __future__ import annotations

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy, istr

from proxy.upstream.route import RouteRuntime

# RFC 9110 §7.6.1, plus the non-standard names clients still send.
# Lowercase: header names are compared case-insensitively, as ``name.lower()``.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)
_NOT_FORWARDED = HOP_BY_HOP | {"host"}
_LOCATION_HEADERS = ("location", "content-location")
_NO_TOKENS: frozenset[str] = frozenset()
_PLAIN_CONNECTION = frozenset({"keep-alive", "close"})
REQUEST_ID_HEADER = istr("X-Request-ID")
_ALLOW_ORIGIN = istr("Access-Control-Allow-Origin")
_ALLOW_CREDENTIALS = istr("Access-Control-Allow-Credentials")
_VARY = istr("Vary")


def request_headers(
    incoming: CIMultiDictProxy[str],
    route: RouteRuntime,
    injected: tuple[tuple[str, str], ...],
    defaults: tuple[tuple[str, str], ...],
    request_id: str | None = None,
) -> CIMultiDict[str]:
    """The headers sent upstream: the client's, minus hop-by-hop and the ones we set.

    ``request_id`` is sent as ``X-Request-ID`` (in place of the client's, which it is
    when the client's was acceptable), so the proxy's logs and the vendor's can be matched.
    """
    drop = route.drop_headers
    conn = _connection_tokens(incoming)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        lower = name.lower()
        if lower in _NOT_FORWARDED or lower in drop or lower in conn:
            continue
        out.add(name, value)
    if request_id:
        out[REQUEST_ID_HEADER] = request_id
    for name, value in defaults:
        if name not in out:
            out[name] = value
    for name, value in route.static_headers:
        out[name] = value
    for name, value in injected:
        out[name] = value
    return out


def _connection_tokens(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    values = headers.getall("Connection", ())
    if not values or (len(values) == 1 and values[0].lower() in _PLAIN_CONNECTION):
        return _NO_TOKENS  # nothing beyond the hop-by-hop names already dropped
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


def copy_response_headers(
    upstream: aiohttp.ClientResponse,
    out: CIMultiDict[str],
    base: str,
    route_base: str | None,
    secrets: tuple[str, ...],
) -> None:
    """The upstream's headers into ``out`` for the client.

    Hop-by-hop headers are dropped; ``Location`` pointing at the upstream is rewritten
    (unless ``route_base`` is None: in forward-proxy mode the client already addresses
    the vendor by name); a ``Set-Cookie`` carrying the vendor session is dropped, so the
    client never holds it.
    """
    conn = _connection_tokens(upstream.headers)
    for name, value in upstream.headers.items():
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in conn:
            continue
        if lower in _LOCATION_HEADERS and route_base is not None:
            value = rewrite_location(value, base, route_base)
        elif lower == "set-cookie" and any(secret in value for secret in secrets):
            continue
        out.add(name, value)


def rewrite_location(value: str, base: str, route_base: str) -> str:
    """Point a redirect at the proxy when it points at the upstream base."""
    if value.startswith("/") and not value.startswith("//"):
        origin = base.split("/", 3)
        value = "/".join(origin[:3]) + value
    if value == base or value.startswith(base + "/") or value.startswith(base + "?"):
        return route_base + value[len(base) :]
    return value


def allow_origin(headers: CIMultiDict[str], origin: str) -> None:
    """Make an answer readable by an allowed browser ``origin`` (README, "Letting a browser
    app use the proxy"), replacing the vendor's own CORS answer. Never
    ``Access-Control-Allow-Credentials``: the session the proxy adds is the credential.
    """
    headers[_ALLOW_ORIGIN] = origin
    headers.popall(_ALLOW_CREDENTIALS, None)
    varies = {
        name.strip().lower() for value in headers.getall(_VARY, ()) for name in value.split(",")
    }
    if "origin" not in varies:
        headers.add(_VARY, "Origin")

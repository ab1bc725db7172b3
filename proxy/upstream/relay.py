"""Forwarding one request upstream and streaming the answer back (SPEC §5).

Vendor-neutral: it gets a session's headers and upstream base from the route's
``RouteSessions`` and knows nothing about Informatica or Ivanti. The path is short:
filter headers → inject → send (body streamed, or kept when small enough to replay)
→ on an auth refusal renew once and replay → stream the response back.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, istr
from yarl import URL

from proxy.core.errors import ClientAborted, UpstreamTimeout, UpstreamUnreachable
from proxy.ops.logs import VERBOSITY
from proxy.sessions.manager import Lease
from proxy.upstream.client import error_reason
from proxy.upstream.route import RouteRuntime
from proxy.upstream.watchdog import Watch

log = structlog.get_logger("auth_proxy.forward")

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
_REQUEST_ID = istr("X-Request-ID")
CHUNK = 256 * 1024
SMALL_BODY = 128 * 1024  # responses up to this size are read whole and sent in one write


@dataclass(slots=True)
class Outcome:
    """What the access log reports about the upstream side of a request."""

    upstream_seconds: float = 0.0
    replayed: bool = False
    responding: bool = False  # the response's headers went to the client

    def phase(self, request: web.BaseRequest) -> str:
        """What the client was doing when it went away (see ``ClientAborted``)."""
        if self.responding:
            return "download"
        return "waiting" if request.content.is_eof() else "upload"


def request_headers(
    incoming: CIMultiDictProxy[str],
    route: RouteRuntime,
    injected: tuple[tuple[str, str], ...],
    defaults: tuple[tuple[str, str], ...],
    request_id: str | None = None,
) -> CIMultiDict[str]:
    """The headers sent upstream: the client's, minus hop-by-hop and the ones we set.

    ``request_id`` is sent as ``X-Request-ID`` when the client sent none, so the proxy's
    access line and the vendor's logs can be matched.
    """
    drop = route.drop_headers
    conn = _connection_tokens(incoming)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        lower = name.lower()
        if lower in _NOT_FORWARDED or lower in drop or lower in conn:
            continue
        out.add(name, value)
    if request_id and _REQUEST_ID not in out:
        out[_REQUEST_ID] = request_id
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


class Body:
    """A request body: kept in memory when it may need a replay, else streamed once.

    A client that hangs up mid-body cancels the whole request (aiohttp's
    ``handler_cancellation``, set in app.py), so a broken read never surfaces here.
    """

    def __init__(self, request: web.BaseRequest, limit: int) -> None:
        self._request = request
        self._limit = limit
        self.kept: bytes | None = None
        self._prefix: list[bytes] = []
        self.empty = not request.can_read_body

    async def prepare(self) -> None:
        if self.empty:
            self.kept = b""
            return
        length = self._request.content_length
        if length is not None and length > self._limit:
            return  # streamed as it arrives
        # Keep it if it ends within the limit, else stream on from what we have read. Not
        # ``request.read()``: that applies aiohttp's own cap (client_max_size, 1 MiB).
        size = 0
        content = self._request.content
        while size <= self._limit:
            chunk = await content.readany()
            if not chunk:
                self.kept = b"".join(self._prefix)
                self._prefix = []
                return
            self._prefix.append(chunk)
            size += len(chunk)

    @property
    def replayable(self) -> bool:
        return self.kept is not None

    def data(self, deadline: Watch) -> bytes | AsyncIterator[bytes] | None:
        if self.kept is not None:
            return self.kept if self.kept or not self.empty else None
        return self._stream(deadline)

    async def _stream(self, deadline: Watch) -> AsyncIterator[bytes]:
        prefix, self._prefix = self._prefix, []
        for chunk in prefix:
            yield chunk
        async for chunk in self._request.content.iter_chunked(CHUNK):
            deadline.extend()  # a long upload is progress, not a stalled upstream
            yield chunk


async def forward(
    request: web.BaseRequest,
    route: RouteRuntime,
    rest: str,
    query: str,
    route_base: str | None,
    outcome: Outcome,
    *,
    request_id: str | None = None,
    upstream_base: str | None = None,
) -> web.StreamResponse:
    """Send ``request`` upstream with the route's session and stream the answer back.

    ``upstream_base`` replaces the session's upstream (forward-proxy mode: the origin the
    client named); ``route_base`` None leaves ``Location`` headers alone.
    """
    sessions = route.sessions
    body = Body(request, route.retry_body_limit)
    await body.prepare()
    lease = await sessions.acquire()
    watch = route.client.watchdog.watch(route.client.settings.read_timeout)
    upstream = await _send(
        request, route, lease, rest, query, body, outcome, watch, request_id, upstream_base
    )
    if upstream.status in route.reauth_on:
        if body.replayable:
            upstream.release()
            lease = await sessions.reauth(lease)
            outcome.replayed = True
            log.info("replaying_after_reauth", route=route.name, status=upstream.status)
            upstream = await _send(
                request, route, lease, rest, query, body, outcome, watch, request_id, upstream_base
            )
            if upstream.status in route.reauth_on:
                sessions.invalidate(lease)
            else:
                sessions.touch(lease)
        else:
            sessions.invalidate(lease)
    else:
        sessions.touch(lease)
    return await _stream_back(
        request, route, upstream, lease, rest, route_base, outcome, watch, upstream_base
    )


async def _send(
    request: web.BaseRequest,
    route: RouteRuntime,
    lease: Lease,
    rest: str,
    query: str,
    body: Body,
    outcome: Outcome,
    watch: Watch,
    request_id: str | None = None,
    upstream_base: str | None = None,
) -> aiohttp.ClientResponse:
    session = lease.session
    base = upstream_base or session.base_for(rest)
    url = URL(base + rest + ("?" + query if query else ""), encoded=True)
    headers = request_headers(
        request.headers, route, session.headers, session.default_headers, request_id
    )
    client = route.client
    if VERBOSITY.debug:  # header values are masked by the log redactor
        log.debug(
            "upstream_request",
            route=route.name,
            method=request.method,
            url=str(url),
            headers=dict(headers),
        )
    proxy, proxy_auth = client.proxy_for(url)
    started = time.perf_counter()
    try:
        with watch:
            response = await client.session.request(
                request.method,
                url,
                headers=headers,
                data=body.data(watch),
                ssl=client.ssl,
                timeout=client.timeout,
                allow_redirects=False,
                proxy=proxy,
                proxy_auth=proxy_auth,
            )
    except TimeoutError:
        raise UpstreamTimeout(
            f"{url.host} did not answer within {client.settings.read_timeout:g}s",
            route=route.name,
        ) from None
    except aiohttp.ClientError as exc:
        raise UpstreamUnreachable(
            f"{url.host} could not be reached ({error_reason(exc)})", route=route.name
        ) from None
    finally:
        outcome.upstream_seconds += time.perf_counter() - started
    return response


async def _stream_back(
    request: web.BaseRequest,
    route: RouteRuntime,
    upstream: aiohttp.ClientResponse,
    lease: Lease,
    rest: str,
    route_base: str | None,
    outcome: Outcome,
    watch: Watch,
    upstream_base: str | None = None,
) -> web.StreamResponse:
    try:
        base = upstream_base or lease.session.base_for(rest)
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        copy_response_headers(upstream, response.headers, base, route_base, lease.session.secrets)
        length = upstream.content_length
        try:
            if length is not None and length <= SMALL_BODY:
                # Read it whole: headers and body then leave in a single write.
                with watch:
                    payload = await upstream.read()
                outcome.responding = True
                await response.prepare(request)
                await response.write_eof(payload)
                return response
            outcome.responding = True
            await response.prepare(request)
            content = upstream.content
            with watch:
                while True:
                    watch.extend()
                    chunk = await content.read(CHUNK)
                    if not chunk:
                        break
                    watch.pause()  # a slow client is not a stalled upstream
                    await response.write(chunk)
            await response.write_eof()
        except ConnectionResetError:
            # A write to the client's closing connection (aiohttp's
            # ClientConnectionResetError), just before its hang-up cancels us. Reads from
            # the upstream never raise it: aiohttp reports ClientPayloadError,
            # ServerDisconnectedError or ClientOSError.
            raise ClientAborted("download") from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            if not response.prepared:
                host = upstream.url.host
                if isinstance(exc, TimeoutError):
                    raise UpstreamTimeout(
                        f"{host} stalled while sending its response", route=route.name
                    ) from None
                raise UpstreamUnreachable(
                    f"{host} broke off its response ({error_reason(exc)})", route=route.name
                ) from None
            # Headers are gone; the only honest signal left is a cut connection, so the
            # client cannot take a truncated body for a complete one.
            log.warning("upstream_failed_mid_body", route=route.name, error=type(exc).__name__)
            if request.transport is not None:
                request.transport.abort()
        return response
    finally:
        upstream.release()

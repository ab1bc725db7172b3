"""Forwarding one request upstream and streaming the answer back.

Vendor-neutral: the session's headers and upstream base come from the route's
``RouteSessions``; what an answer means for the session (a 401: re-login and replay?)
is the session layer's to say (``RouteSessions.settle``). The path is short: keep the
body if it may need a replay → lease a session → send → settle, maybe replay once →
stream the answer back.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable

import aiohttp
import structlog
from aiohttp import hdrs, web
from yarl import URL

from proxy.core.errors import ClientAborted, UpstreamTimeout, UpstreamUnreachable
from proxy.ops.logs import VERBOSITY
from proxy.sessions.lease import Lease
from proxy.upstream.body import CHUNK, Body
from proxy.upstream.exchange import Exchange
from proxy.upstream.failures import error_reason
from proxy.upstream.headers import copy_response_headers, request_headers
from proxy.upstream.limiter import ConcurrencyLimiter
from proxy.upstream.odata import rewrite_links
from proxy.upstream.route import RouteRuntime
from proxy.upstream.watchdog import Watch

log = structlog.get_logger("auth_proxy.forward")

SMALL_BODY = 128 * 1024  # answers up to this size are read whole and sent in one write
LINKS_LIMIT = 4 * 1024 * 1024  # JSON answers up to this size get their OData links rewritten
THROTTLED = frozenset({429, 503})
_JSON_TYPES = ("application/json", "application/odata+json")


def forward(ex: Exchange, route: RouteRuntime) -> Awaitable[web.StreamResponse]:
    """Send ``ex``'s request upstream with the route's session; stream the answer back.

    With ``max_concurrent``, the whole exchange holds one of the route's slots. Returns
    the exchange's coroutine rather than awaiting it, to keep the request's coroutine
    chain short (every resumption walks each frame in it).
    """
    if route.limiter is None:
        return _exchange(ex, route)
    return _limited(ex, route, route.limiter)


async def _limited(
    ex: Exchange, route: RouteRuntime, limiter: ConcurrencyLimiter
) -> web.StreamResponse:
    async with limiter.slot(route.queue_timeout):
        return await _exchange(ex, route)


async def _exchange(ex: Exchange, route: RouteRuntime) -> web.StreamResponse:
    sessions = route.sessions
    body = Body(ex.request, route.retry_body_limit)
    await body.prepare()
    if body.replayable:
        lease = await sessions.acquire()
    else:  # no second chance after a 401: make sure of the session first
        lease, renewed = await sessions.acquire_fresh()
        if renewed:
            route.events.preflight_renewal(route.name)
    watch = route.client.watchdog.watch(route.client.settings.read_timeout)
    upstream = await _send(ex, route, lease, body, watch)
    renewal = sessions.settle(lease, upstream.status, replayable=body.replayable)
    if renewal is not None:
        upstream.release()
        lease = await renewal
        log.info("replaying_after_reauth", route=route.name, status=upstream.status)
        ex.replayed = True
        upstream = await _send(ex, route, lease, body, watch)
        sessions.settle_replay(lease, upstream.status)
    if upstream.status in THROTTLED and body.replayable:
        upstream = await _wait_out_throttling(ex, route, lease, body, watch, upstream)
    return await _stream_back(ex, route, upstream, lease, watch)


async def _wait_out_throttling(
    ex: Exchange,
    route: RouteRuntime,
    lease: Lease,
    body: Body,
    watch: Watch,
    upstream: aiohttp.ClientResponse,
) -> aiohttp.ClientResponse:
    """Retry an idempotent request the vendor throttled, within the route's budget.

    A throttled answer is never a session failure: the session is kept, not renewed.
    When the budget says stop, the vendor's last answer goes to the client unchanged.
    """
    budget = route.throttle.budget(ex.request.method, now=route.clock.now)
    while upstream.status in THROTTLED:
        wait = budget.next_wait(upstream.status, upstream.headers)
        route.events.throttled(route.name, retried=wait is not None)
        ex.throttled += 1
        if wait is None:
            break
        upstream.release()
        log.info("throttled", route=route.name, status=upstream.status, wait=round(wait, 3))
        await route.clock.sleep(wait)
        upstream = await _send(ex, route, lease, body, watch)
    return upstream


def _base(ex: Exchange, lease: Lease) -> str:
    return ex.origin or lease.session.base_for(ex.rest)


async def _send(
    ex: Exchange, route: RouteRuntime, lease: Lease, body: Body, watch: Watch
) -> aiohttp.ClientResponse:
    request, session, client = ex.request, lease.session, route.client
    url = URL(_base(ex, lease) + ex.rest + ("?" + ex.query if ex.query else ""), encoded=True)
    headers = request_headers(
        request.headers, route, session.headers, session.default_headers, ex.request_id
    )
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
            upstream = await client.session.request(
                request.method,
                url,
                headers=headers,
                data=body.data(watch),
                # A plain-http upstream needs no TLS context; leaving it out keeps
                # aiohttp's pooled-connection key cheap to compute.
                ssl=client.ssl if url.scheme == "https" else True,
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
        ex.upstream_seconds += time.perf_counter() - started
    ex.upstream_status = upstream.status
    return upstream


async def _stream_back(
    ex: Exchange,
    route: RouteRuntime,
    upstream: aiohttp.ClientResponse,
    lease: Lease,
    watch: Watch,
) -> web.StreamResponse:
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    try:
        secrets = lease.session.secrets
        copy_response_headers(upstream, response.headers, _base(ex, lease), ex.public_base, secrets)
        ex.decorate(response.headers)
        await _copy_body(ex, upstream, response, watch, _base(ex, lease))
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
        if ex.request.transport is not None:
            ex.request.transport.abort()
    finally:
        upstream.release()
    return response


async def _copy_body(
    ex: Exchange,
    upstream: aiohttp.ClientResponse,
    response: web.StreamResponse,
    watch: Watch,
    base: str,
) -> None:
    length = upstream.content_length
    public = ex.public_base
    if length is not None and (
        length <= SMALL_BODY
        or (length <= LINKS_LIMIT and public is not None and _has_links(upstream))
    ):
        # Read it whole: headers and body then leave in a single write.
        with watch:
            payload = await upstream.read()
        if public is not None and _mentions(payload, base) and _has_links(upstream):
            rewritten = rewrite_links(payload, base, public)
            if rewritten is not None:
                payload = rewritten
                response.headers[hdrs.CONTENT_LENGTH] = str(len(payload))
        ex.responding = True
        await response.prepare(ex.request)
        await response.write_eof(payload)
        ex.bytes_out = len(payload)
        return
    ex.responding = True
    await response.prepare(ex.request)
    content = upstream.content
    with watch:
        while True:
            watch.extend()
            chunk = await content.read(CHUNK)
            if not chunk:
                break
            watch.pause()  # a slow client is not a stalled upstream
            await response.write(chunk)
            ex.bytes_out += len(chunk)
    await response.write_eof()


def _has_links(upstream: aiohttp.ClientResponse) -> bool:
    """A JSON answer, not compressed, that may carry OData links to the vendor."""
    return upstream.content_type in _JSON_TYPES and hdrs.CONTENT_ENCODING not in upstream.headers


def _mentions(payload: bytes, base: str) -> bool:
    """Whether the body names the upstream host at all (a link does, plainly or with
    JSON's ``\\/``): a cheap test that spares most answers the JSON scan."""
    return _host_bytes(base) in payload


@functools.lru_cache(maxsize=256)
def _host_bytes(base: str) -> bytes:
    return base.split("://", 1)[-1].split("/", 1)[0].encode()

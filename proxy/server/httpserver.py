"""aiohttp's low-level HTTP server, with errors answered in the proxy's JSON error format.

Requests that never reach the handler (a malformed request line, oversized or broken
headers) and unexpected handler crashes get the same JSON error body and
``X-Auth-Proxy-Error`` header as every other proxy error, are logged once through
structlog (never with the offending bytes, which may hold a credential), and leave the
server serving. A crash is handled in its request's task: its log line and its answer
carry the request's id.

Slow clients cannot hold connections open for long: a request's line and headers must
arrive within ``HEADER_TIMEOUT`` of its first byte (of the connection's start, for the
first request), and an idle keep-alive connection is closed after ``KEEPALIVE_TIMEOUT``.
Responses to an allowed browser origin get their CORS headers here, whoever made them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import http_exceptions, web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from proxy.core.errors import BadRequest, ProxyError
from proxy.ops.logs import REQUEST_ID
from proxy.server.responses import error_response
from proxy.upstream.headers import REQUEST_ID_HEADER

log = structlog.get_logger("auth_proxy.http")

HEADER_TIMEOUT = 10.0
KEEPALIVE_TIMEOUT = 75.0  # aiohttp's own default is an hour


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, http_exceptions.LineTooLong):
        return "a request line or header field is too long"
    if isinstance(exc, http_exceptions.BadStatusLine | http_exceptions.BadHttpMethod):
        return "the request line is malformed"
    if isinstance(exc, http_exceptions.InvalidHeader):
        return "a request header is malformed"
    if isinstance(exc, http_exceptions.InvalidURLError):
        return "the request target is malformed"
    return "the request is not valid HTTP"


class ProxyRequestHandler(RequestHandler):
    def __init__(
        self, manager: web.Server, *, header_timeout: float = HEADER_TIMEOUT, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # of the last request whose head arrived

    # A request head is awaited from the connection's start, and from the first byte
    # after the previous request's body; aiohttp only bounds a connection's idle time.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        starts_head = self._head_timer is None and self._awaiting_head()
        heads = self._request_count
        super().data_received(data)
        if self._request_count != heads:  # a head arrived, or failed to parse
            self._stop_head_timer()
            self._body = self._messages[-1][1] if self._messages else None
        elif starts_head:  # armed only for a head split across reads: most come whole
            self._arm_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _awaiting_head(self) -> bool:
        if self._force_close or self._close or self._upgraded or self._payload_parser is not None:
            return False
        return self._body is None or self._body.is_eof()

    def _arm_head_timer(self) -> None:
        self._head_timer = asyncio.get_running_loop().call_later(
            self._header_timeout, self._head_timed_out
        )

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._request_in_progress:
            return  # a pipelined head; the keep-alive timeout bounds it after this answer
        log.info("header_timeout", seconds=self._header_timeout)
        self.force_close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; closing the connection")
        error: ProxyError
        if status >= 500:
            log.error("internal_error", path=request.path, exc_info=exc)
            error = ProxyError("the proxy failed unexpectedly; see its log", code="internal")
        else:
            reason = _describe(exc)
            log.warning("bad_request", reason=reason, error=type(exc).__name__ if exc else None)
            error = BadRequest(reason)
        response = error_response(error)
        request_id = REQUEST_ID.get()
        if request_id is not None:
            response.headers[REQUEST_ID_HEADER] = request_id
        response.force_close()
        return response


class ProxyHttpServer(web.Server):
    """``web.Server`` whose connections use ``ProxyRequestHandler``."""

    def __init__(
        self,
        handler: Any,
        *,
        header_timeout: float = HEADER_TIMEOUT,
        handler_cancellation: bool = False,
        **handler_settings: Any,
    ):
        super().__init__(
            handler,
            handler_cancellation=handler_cancellation,
            **handler_settings,
        )
        self.header_timeout = header_timeout
        # Kept here rather than read back from aiohttp's private attributes.
        self.handler_settings = handler_settings

    def __call__(self) -> RequestHandler:
        return ProxyRequestHandler(
            self,
            loop=asyncio.get_running_loop(),
            header_timeout=self.header_timeout,
            **self.handler_settings,
        )

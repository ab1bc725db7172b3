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
from typing import Any, cast

import structlog
from aiohttp import http_exceptions, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
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
    """aiohttp's connection protocol, with a bound on how long a request head may take.

    It keeps its own view of the connection, from aiohttp's public hooks only: a
    request's handling runs from its head's arrival (``head_arrived``, called by the
    server's request factory) to the end of its answer (``log_access``); its body may
    still be arriving after that.
    """

    def __init__(
        self, manager: web.Server, *, header_timeout: float = HEADER_TIMEOUT, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._handling = False
        self._body: StreamReader | None = None  # of the last request whose head arrived

    # A request head is awaited from the connection's start, and from the first byte
    # after the previous request's body; aiohttp only bounds a connection's idle time.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Armed only for a head split across reads: most arrive whole (ending in a blank
        # line), and their handling starts before the timer could matter.
        if self._head_timer is None and b"\r\n\r\n" not in data and self._awaiting_head():
            self._arm_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def head_arrived(self, body: StreamReader) -> None:
        self._handling = True
        self._body = body
        self._stop_head_timer()

    def log_access(
        self, request: web.BaseRequest, response: web.StreamResponse, time: float | None
    ) -> None:
        self._handling = False  # called by aiohttp once each answer has been sent
        super().log_access(request, response, time)

    def _awaiting_head(self) -> bool:
        return not self._handling and (self._body is None or self._body.is_eof())

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
        if self._handling:
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
            request_factory=self._make_proxy_request,
            handler_cancellation=handler_cancellation,
            **handler_settings,
        )
        self.loop = asyncio.get_running_loop()
        self.header_timeout = header_timeout
        # Kept here rather than read back from aiohttp's private attributes.
        self.handler_settings = handler_settings

    def _make_proxy_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        """aiohttp calls this as it starts handling each request (or a head that failed
        to parse): the connection's head timer stops here."""
        cast(ProxyRequestHandler, protocol).head_arrived(payload)
        return web.BaseRequest(message, payload, protocol, writer, task, self.loop)

    def __call__(self) -> RequestHandler:
        return ProxyRequestHandler(
            self,
            loop=self.loop,
            header_timeout=self.header_timeout,
            **self.handler_settings,
        )

"""aiohttp's low-level HTTP server, with errors answered in the SPEC §7 format.

Requests that never reach the handler (a malformed request line, oversized or broken
headers) and unexpected handler crashes get the same JSON error body and
``X-Auth-Proxy-Error`` header as every other proxy error, are logged once through
structlog (never with the offending bytes, which may hold a credential), and leave the
server serving.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler

from proxy.errors import BadRequest, ProxyError

log = structlog.get_logger("auth_proxy.http")


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


class _Handler(RequestHandler):
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
        response = error.to_response()
        response.force_close()
        return response


class ProxyHttpServer(web.Server):
    """``web.Server`` whose connections use ``_Handler``."""

    def __call__(self) -> RequestHandler:
        kwargs: dict[str, Any] = self._kwargs
        return _Handler(self, loop=self._loop, **kwargs)

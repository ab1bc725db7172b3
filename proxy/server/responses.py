"""Proxy errors as HTTP answers: the one place a ``ProxyError`` becomes bytes on the wire.

The body is ``{"error": {"code", "message", "route"}}`` with the header
``X-Auth-Proxy-Error`` (README, "Errors from the proxy"). The message passes through the
log redactor on its way out, as a last guard against a secret quoted by a vendor.
"""

from __future__ import annotations

import http
import json
import math

from aiohttp import web

from proxy.core.errors import ProxyError
from proxy.ops.logs import REDACTOR


def _body(error: ProxyError) -> bytes:
    message = REDACTOR.text(error.message)
    return json.dumps(
        {"error": {"code": error.code, "message": message, "route": error.route}}
    ).encode()


def _headers(error: ProxyError) -> dict[str, str]:
    headers = {"X-Auth-Proxy-Error": error.code}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return headers


def error_response(error: ProxyError) -> web.Response:
    return web.Response(
        status=error.status,
        body=_body(error),
        content_type="application/json",
        headers=_headers(error),
    )


def error_bytes(error: ProxyError) -> bytes:
    """The same answer as raw HTTP/1.1, for a connection aiohttp does not own (CONNECT)."""
    body = _body(error)
    fields = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        **_headers(error),
        "Connection": "close",
    }
    head = f"HTTP/1.1 {error.status} {http.HTTPStatus(error.status).phrase}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    return (head + "\r\n").encode() + body

"""CORS for the browser origins listed in ``allowed_origins``.

The guard refuses every other origin before this is reached. For an allowed origin the
proxy speaks CORS itself rather than leaving it to the vendor, whose policy is about
the vendor's own origin: a browser app at that origin must be able to call the proxy.

- A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered here,
  204, and never forwarded.
- Every response to an allowed origin names it in ``Access-Control-Allow-Origin`` and
  varies on ``Origin`` (``upstream.headers.allow_origin``, applied by the pipeline and by
  the relay to whatever answer the request gets).
"""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict, istr

REQUEST_METHOD = istr("Access-Control-Request-Method")
REQUEST_HEADERS = istr("Access-Control-Request-Headers")
REQUEST_PRIVATE_NETWORK = istr("Access-Control-Request-Private-Network")
# Everything a route forwards; TRACE and TRACK are refused.
METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
MAX_AGE = "600"  # seconds a browser may reuse the answer to a preflight


def is_preflight(request: web.BaseRequest) -> bool:
    return request.method == "OPTIONS" and REQUEST_METHOD in request.headers


def preflight(request: web.BaseRequest) -> web.Response:
    """The answer to a preflight from an allowed origin (``allow`` adds the origin)."""
    headers = CIMultiDict(
        {
            "Access-Control-Allow-Methods": METHODS,
            "Access-Control-Max-Age": MAX_AGE,
            "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        }
    )
    requested = request.headers.get(REQUEST_HEADERS)
    if requested:
        headers["Access-Control-Allow-Headers"] = requested
    if request.headers.get(REQUEST_PRIVATE_NETWORK) == "true":
        # Chrome asks before a public page may reach a loopback address.
        headers["Access-Control-Allow-Private-Network"] = "true"
    return web.Response(status=204, headers=headers)

"""What went wrong talking to the vendor, in one sentence: the one map from client errors.

The login side (``client.RouteClient.execute``) and the relay (``relay``) both describe
a failed exchange with ``failure``; only the error type they raise differs.
"""

from __future__ import annotations

import aiohttp


def error_reason(exc: BaseException) -> str:
    """The exception's type, with the operating system's words when there are any."""
    text = type(exc).__name__
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, OSError) and os_error.strerror:
        text += f": {os_error.strerror}"
    return text


def failure(exc: BaseException) -> str:
    """How an exchange failed, as the end of a sentence: "timed out", "failed (...)"."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"failed TLS verification ({error_reason(exc)})"
    return f"failed ({error_reason(exc)})"

"""The one family of errors the proxy answers with, and their HTTP form (the README:
"Errors from the proxy").

Every failure a client can observe is a ``ProxyError``: a stable code, the HTTP status
that goes with it, and one sentence a user can act on. Messages never carry secrets:
the code that raises them only formats vendor error codes/texts and host names, the
session manager scrubs a login's secrets from a vendor text that quotes them, and the
response passes the message through the log redactor as well.
"""

from __future__ import annotations

STATUS_BY_CODE: dict[str, int] = {
    "no_route": 404,
    "client_unauthorized": 401,
    "login_rejected": 502,
    "login_failed": 502,
    "login_backoff": 503,
    "untrusted_upstream": 502,
    "upstream_unreachable": 502,
    "upstream_timeout": 504,
    "forbidden": 403,
    "bad_request": 400,
    "method_not_allowed": 405,
    "draining": 503,
    "route_busy": 503,
    "rate_limited": 429,
    "client_aborted": 499,  # nginx's convention; never sent, the client has gone
}


class ProxyError(Exception):
    """An error answered to the client as ``{"error": {"code", "message", "route"}}``."""

    code = "internal"

    def __init__(
        self,
        message: str,
        *,
        route: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.route = route
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        return STATUS_BY_CODE.get(self.code, 500)

    def for_route(self, route: str) -> ProxyError:
        """The same error, attributed to ``route`` (flows raise without knowing it)."""
        if self.route is None:
            self.route = route
        return self


class NoRoute(ProxyError):
    code = "no_route"


class ClientUnauthorized(ProxyError):
    code = "client_unauthorized"


class Forbidden(ProxyError):
    code = "forbidden"


class BadRequest(ProxyError):
    code = "bad_request"


class MethodNotAllowed(ProxyError):
    code = "method_not_allowed"


class LoginRejected(ProxyError):
    """The vendor refused the credentials (a 4xx, a SOAP INVALID_LOGIN, ...).

    Never retried automatically: repeated bad logins lock accounts.
    """

    code = "login_rejected"


class LoginFailed(ProxyError):
    """The login could not complete: network error, 5xx, or an answer we cannot use."""

    code = "login_failed"


class LoginBackoff(ProxyError):
    code = "login_backoff"


class UntrustedUpstream(ProxyError):
    code = "untrusted_upstream"


class UpstreamUnreachable(ProxyError):
    code = "upstream_unreachable"


class UpstreamTimeout(ProxyError):
    code = "upstream_timeout"


class Draining(ProxyError):
    code = "draining"


class RouteBusy(ProxyError):
    """The route's ``max_concurrent`` requests are at the vendor and the queue wait ran out."""

    code = "route_busy"


class RateLimited(ProxyError):
    """A client went over its own ``rate`` (``client_auth``); ``retry_after`` says when
    its next request may come."""

    code = "rate_limited"


class ClientAborted(ProxyError):
    """The client went away mid-request: logged and counted, never answered.

    ``phase`` is what the client was doing: ``upload`` (sending its body), ``waiting``
    (for a session or the upstream's answer) or ``download`` (receiving the response).
    """

    code = "client_aborted"

    def __init__(self, phase: str, *, route: str | None = None) -> None:
        super().__init__(f"the client went away during the {phase}", route=route)
        self.phase = phase

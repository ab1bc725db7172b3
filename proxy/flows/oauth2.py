"""OAuth 2.0 client-credentials grant (RFC 6749 §4.4), as a sub-flow of other logins.

``loginOAuth`` takes a single-use JWT, so this runs on every IICS login: no token is
cached or reused.
"""

from __future__ import annotations

import base64
from collections.abc import Generator
from typing import Any
from urllib.parse import quote_plus, urlencode

from proxy.config import ClientCredentials
from proxy.core.errors import LoginFailed, LoginRejected
from proxy.flows.base import (
    LoginRequest,
    LoginResponse,
    Reply,
    Step,
    call,
    host_of,
    require_str,
    secret,
    vendor_error_text,
)

WHAT = "OAuth token endpoint"
# RFC 6749 §5.2 errors about who the client is, as opposed to what it asked for.
_CLIENT_ERRORS = frozenset({"invalid_client", "unauthorized_client"})


def basic_credentials(client_id: str, client_secret: str) -> str:
    """``Basic`` value per RFC 6749 §2.3.1: both parts form-urlencoded before base64."""
    raw = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(raw.encode()).decode("ascii")


def token_request(cc: ClientCredentials, client_secret: str) -> LoginRequest:
    form = {"grant_type": "client_credentials"}
    if cc.scope:
        form["scope"] = cc.scope
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Accept": "application/json",
    }
    if cc.auth_method == "basic":
        headers["Authorization"] = basic_credentials(cc.client_id, client_secret)
    else:
        form["client_id"] = cc.client_id
        form["client_secret"] = client_secret
    return LoginRequest("POST", cc.token_url, headers, urlencode(form).encode(), purpose="token")


def client_credentials_token(cc: ClientCredentials) -> Generator[Step, Reply, str]:
    """A fresh access token from the token endpoint; errors name the RFC 6749 code."""
    client_secret = yield from secret(cc.client_secret)
    response = yield from call(token_request(cc, client_secret))
    _check(response, cc.token_url)
    return require_str(response.json(WHAT), "access_token", WHAT)


def _check(response: LoginResponse, token_url: str) -> None:
    if response.ok:
        return
    detail = vendor_error_text(response)
    if 400 <= response.status < 500:
        whom = "the client" if _error_code(response) in _CLIENT_ERRORS else "the token request"
        raise LoginRejected(f"{WHAT} {host_of(token_url)} rejected {whom} ({detail})")
    raise LoginFailed(f"{WHAT} {host_of(token_url)} failed ({detail})")


def _error_code(response: LoginResponse) -> Any:
    try:
        return response.json(WHAT).get("error")
    except (LoginFailed, AttributeError):
        return None

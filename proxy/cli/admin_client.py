"""Calling the running proxy's admin endpoints from the command line (``clear``,
``logout``): at the address its config listens on, with its first client token that
may call them."""

from __future__ import annotations

import asyncio
import http.client
import json
import urllib.error
import urllib.request
from typing import Any

from proxy.cli.run import local_address
from proxy.config import ClientAuth, Config
from proxy.core.errors import ProxyError

ADMIN_TIMEOUT = 10.0


class AdminCallError(Exception):
    """The call could not be made or was refused; ``str()`` is the line to print.
    ``unreachable``: no proxy answers at the config's address."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def _admin_token(auth: ClientAuth) -> str:
    """The first client token that may call the admin endpoints (a plain token, or a
    named client with ``admin: true``)."""
    for i, identity in enumerate(auth.identities()):
        if identity.token is not None and identity.scope.admin:
            try:
                return asyncio.run(identity.token.resolve())
            except ProxyError as exc:
                raise AdminCallError(f"client_auth.tokens[{i}]: {exc.message}") from None
    raise AdminCallError(
        "no client_auth token may call the admin endpoints: give one client admin: true"
    )


def post_admin(config: Config, path: str) -> dict[str, Any]:
    """``POST path`` to the proxy ``config`` describes; its JSON answer."""
    where = local_address(config)
    if where is None:
        raise AdminCallError("listen.port is 0 (any free port): no fixed address")
    headers = {"X-Auth-Proxy": "1"}  # state-changing endpoints refuse requests without it
    if config.client_auth is not None:
        headers["Proxy-Authorization"] = f"Bearer {_admin_token(config.client_auth)}"
    request = urllib.request.Request(f"http://{where}{path}", method="POST", headers=headers)
    # No proxy from the environment: this call is for the local proxy itself.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=ADMIN_TIMEOUT) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as exc:
        with exc:
            try:
                message = json.load(exc)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {exc.code}"
        raise AdminCallError(f"the proxy on {where} refused: {message}") from None
    except (OSError, http.client.HTTPException, ValueError):
        raise AdminCallError(
            f"no proxy answers on {where} (is it running?)", unreachable=True
        ) from None
    if not isinstance(answer, dict):
        raise AdminCallError(f"no proxy answers on {where} (is it running?)", unreachable=True)
    return answer

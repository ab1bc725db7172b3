"""``auth-proxy clear ROUTE``: lift a route's login lockout in the running proxy."""

from __future__ import annotations

import asyncio
import http.client
import json
import sys
import urllib.error
import urllib.request

from proxy.cli.run import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, local_address
from proxy.config import Config
from proxy.core.errors import ProxyError

CLEAR_TIMEOUT = 10.0


def clear_command(config: Config, route: str) -> int:
    """``POST /-/sessions/<route>/clear`` to the proxy this config describes."""
    names = [r.name for r in config.routes]
    if route not in names:
        print(f"auth-proxy: unknown route {route} (routes: {', '.join(names)})", file=sys.stderr)
        return EXIT_USAGE
    where = local_address(config)
    if where is None:
        print("auth-proxy: listen.port is 0 (any free port): no fixed address", file=sys.stderr)
        return EXIT_RUNTIME
    headers = {"X-Auth-Proxy": "1"}  # the clear endpoint refuses requests without it
    if config.client_auth is not None:
        try:
            token = asyncio.run(config.client_auth.tokens[0].resolve())
        except ProxyError as exc:
            print(f"auth-proxy: client_auth.tokens[0]: {exc.message}", file=sys.stderr)
            return EXIT_RUNTIME
        headers["Proxy-Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"http://{where}/-/sessions/{route}/clear", method="POST", headers=headers
    )
    # No proxy from the environment: this call is for the local proxy itself.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=CLEAR_TIMEOUT) as response:
            lifted = json.load(response)["lockout"]
    except urllib.error.HTTPError as exc:
        with exc:
            try:
                message = json.load(exc)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {exc.code}"
        print(f"auth-proxy: the proxy on {where} refused: {message}", file=sys.stderr)
        return EXIT_RUNTIME
    except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError):
        print(f"auth-proxy: no proxy answers on {where} (is it running?)", file=sys.stderr)
        return EXIT_RUNTIME
    print(f"{route}: login lockout lifted" if lifted else f"{route}: no login lockout to lift")
    return EXIT_OK

"""``auth-proxy logout [ROUTE...]``: end routes' sessions at the vendor and remove them
from the session store.

The running proxy does it (``POST /-/sessions/<route>/logout``). When none runs, a
session kept in a persistent store (``local``, ``redis``) is logged out from the store.
"""

from __future__ import annotations

import asyncio
import sys

from proxy.cli.admin_client import AdminCallError, post_admin
from proxy.cli.run import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE
from proxy.config import Config
from proxy.ops.logs import setup_logging
from proxy.server.admin import logout_route
from proxy.server.app import ProxyServer


def logout_command(config: Config, routes: list[str]) -> int:
    names = [r.name for r in config.routes]
    unknown = [name for name in routes if name not in names]
    if unknown:
        print(
            f"auth-proxy: unknown route {', '.join(unknown)} (routes: {', '.join(names)})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    chosen = list(dict.fromkeys(routes)) or names
    try:
        for route in chosen:
            had = post_admin(config, f"/-/sessions/{route}/logout").get("session")
            print(f"{route}: logged out" if had else f"{route}: no session to log out")
    except AdminCallError as exc:
        if not exc.unreachable or config.session_store.type == "memory":
            print(f"auth-proxy: {exc}", file=sys.stderr)
            return EXIT_RUNTIME
        # Log lines would mix with the answer: only errors, and to stderr.
        setup_logging("error", "console", stream=sys.stderr)
        return asyncio.run(from_store(config, chosen))
    return EXIT_OK


async def from_store(config: Config, names: list[str]) -> int:
    """No proxy runs: log the stored sessions of ``names`` out, as the proxy would."""
    server = ProxyServer(config)
    try:
        await server.open_stores()
        routes = server.runtime.routes
        for name in names:
            had = await logout_route(routes.values(), routes[name])
            print(
                f"{name}: logged out (stored session)" if had else f"{name}: no session to log out"
            )
    finally:
        await server.stop(drain_timeout=0)
    return EXIT_OK

"""``auth-proxy clear ROUTE``: lift a route's login lockout in the running proxy."""

from __future__ import annotations

import sys

from proxy.cli.admin_client import AdminCallError, post_admin
from proxy.cli.run import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE
from proxy.config import Config


def clear_command(config: Config, route: str) -> int:
    """``POST /-/sessions/<route>/clear`` to the proxy this config describes."""
    names = [r.name for r in config.routes]
    if route not in names:
        print(f"auth-proxy: unknown route {route} (routes: {', '.join(names)})", file=sys.stderr)
        return EXIT_USAGE
    try:
        lifted = post_admin(config, f"/-/sessions/{route}/clear").get("lockout")
    except AdminCallError as exc:
        print(f"auth-proxy: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    print(f"{route}: login lockout lifted" if lifted else f"{route}: no login lockout to lift")
    return EXIT_OK

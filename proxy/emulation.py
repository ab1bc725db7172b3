"""The proxy's own answers to clients that log in or out by themselves (SPEC §6).

A legacy tool pointed at the route base still calls ``.../user/login`` and then follows
the ``serverUrl`` it gets back. The route's flow builds a vendor-shaped answer from the
real session — URLs pointing back at the proxy, a placeholder session id — so the tool
works unchanged and never sees the real session. Logouts are answered without touching
the shared session; ``logoutall`` is refused.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from proxy.runtime import RouteRuntime


def emulated_kind(route: RouteRuntime, method: str, rest: str) -> str | None:
    if method != "POST":
        return None
    return route.sessions.flow.emulated_paths.get(rest.rstrip("/") or "/")


async def answer(route: RouteRuntime, kind: str, public_base: str | None) -> web.Response:
    flow = route.sessions.flow
    # Logouts need no session; a login answer is built from the real one (logging in
    # first, so a rejected login reaches the tool at its own login call).
    session = None if "logout" in kind else (await route.sessions.acquire()).session
    emulated = flow.emulate(kind, session, public_base)
    body = b"" if emulated.body is None else json.dumps(emulated.body).encode()
    return web.Response(status=emulated.status, body=body, content_type="application/json")

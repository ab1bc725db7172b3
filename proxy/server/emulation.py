"""The proxy's own answers to clients that log in or out by themselves.

See the README, "Tools that log in by themselves".

A legacy tool pointed at the route base still calls ``.../user/login`` and then follows
the ``serverUrl`` it gets back. The route's flow builds a vendor-shaped answer from the
real session — URLs pointing back at the proxy, a placeholder session id — so the tool
works unchanged and never sees the real session. Logouts are answered without touching
the shared session; ``logoutall`` is refused. Paths are matched as the vendor may read
them (``proxy.server.paths``), so an encoded, dotted or differently cased logout is caught too.
"""

from __future__ import annotations

import json

from aiohttp import web

from proxy.server.paths import is_plain, route_key, vendor_paths
from proxy.upstream.route import RouteRuntime

# Kept from the vendor whatever the method: its router may not look at the method, and
# a call that ends the shared session must never get through.
SESSION_ENDING = ("logoutall", "logout")


def emulated_kind(route: RouteRuntime, method: str, rest: str) -> str | None:
    """The kind of call the proxy answers itself for ``rest``, or None to forward it.

    ``rest`` is matched as the vendor may read it (``proxy.server.paths``); when its readings
    differ, the most protective kind wins. Logins are answered for POST only: another
    method opens no session. Raises ``BadRequest`` for a path climbing out of the route,
    on every route, since this runs before any request is forwarded.
    """
    paths = route.sessions.flow.emulated_paths
    if is_plain(rest):
        kind = paths.get(route_key(rest))
    else:
        kind = _most_protective([paths.get(key) for key in vendor_paths(rest)])
    if kind is None or (method != "POST" and kind not in SESSION_ENDING):
        return None
    return kind


def _most_protective(kinds: list[str | None]) -> str | None:
    for kind in SESSION_ENDING:
        if kind in kinds:
            return kind
    return next((kind for kind in kinds if kind is not None), None)


async def answer(route: RouteRuntime, kind: str, public_base: str | None) -> web.Response:
    flow = route.sessions.flow
    # Logouts need no session; a login answer is built from the real one (logging in
    # first, so a rejected login reaches the tool at its own login call).
    session = None if "logout" in kind else (await route.sessions.acquire()).session
    emulated = flow.emulate(kind, session, public_base)
    body = b"" if emulated.body is None else json.dumps(emulated.body).encode()
    return web.Response(status=emulated.status, body=body, content_type="application/json")

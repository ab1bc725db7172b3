"""Admin endpoints under the reserved ``/-/`` prefix (README, "Endpoints").

``/-/healthz``, ``/-/readyz``, ``/-/metrics``, ``/-/sessions`` and the status page (``/-/``,
with ``/-/status.json``) are read-only and never show a secret. ``POST /-/reload``,
``POST /-/sessions/<route>/clear`` and ``POST /-/sessions/<route>/logout`` change state, so
only operators may call them: loopback clients, or clients that ``client_auth`` names
with admin rights; always with a request no HTML form can send
(``guard.check_state_change``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from proxy.core.errors import BadRequest, Forbidden, MethodNotAllowed, NoRoute
from proxy.core.hosts import is_loopback
from proxy.ops.logs import REDACTOR
from proxy.ops.metrics import CONTENT_TYPE
from proxy.server import status_page
from proxy.server.guard import check_state_change
from proxy.server.responses import error_response
from proxy.server.state import ServerState
from proxy.server.status import status_view
from proxy.upstream.route import RouteRuntime


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return (
        dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


SESSIONS = "/-/sessions/"
STATUS = "/-/"
STATUS_PATHS = frozenset({STATUS, "/-/status.json", *status_page.ASSETS})
CLEAR = "/clear"
LOGOUT = "/logout"
# /-/sessions asks the store who holds each login lease; an unreachable store answers
# within its own timeout, and the page must not wait longer than that.
DESCRIBE_TIMEOUT = 3.0


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(data).encode(), content_type="application/json"
    )


_OPERATORS = (
    "is only accepted from a loopback address, or from a client_auth client with admin rights"
)


def _refused_change(
    request: web.BaseRequest, action: str, what: str, operator: bool
) -> web.Response | None:
    """The answer refusing a state-changing call, or None when it may go ahead."""
    if request.method != "POST":
        return _post_only(f"use POST to {what}")
    if not operator:
        return error_response(Forbidden(f"{action} {_OPERATORS}"))
    check_state_change(request)  # raises; rendered by the request handler
    return None


def _post_only(message: str) -> web.Response:
    response = error_response(MethodNotAllowed(message))
    response.headers["Allow"] = "POST"
    return response


class Admin:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def handle(
        self, request: web.BaseRequest, path: str, *, admin_client: bool = False
    ) -> web.StreamResponse:
        """``admin_client``: the request came from a client that ``client_auth``
        authenticated and that may use the admin endpoints (an operator, wherever it is)."""
        operator = admin_client or is_loopback(request.remote or "")
        if path == "/-/healthz":
            return _json({"status": "ok"})
        if path == "/-/readyz":
            if self.state.draining:
                return _json({"status": "draining"}, 503)
            return _json({"status": "ready"})
        if path == "/-/sessions":
            return _json(await self.sessions())
        if path in STATUS_PATHS:
            return self.status(request, path, operator)
        if path == "/-/metrics":
            return web.Response(
                body=self.state.metrics.render(), headers={"Content-Type": CONTENT_TYPE}
            )
        if path == "/-/reload":
            return await self.reload(request, operator)
        if path.startswith(SESSIONS) and path.endswith(CLEAR):
            return await self.clear(request, path[len(SESSIONS) : -len(CLEAR)], operator)
        if path.startswith(SESSIONS) and path.endswith(LOGOUT):
            return await self.logout(request, path[len(SESSIONS) : -len(LOGOUT)], operator)
        return error_response(NoRoute(f"no admin endpoint {path}"))

    def status(self, request: web.BaseRequest, path: str, operator: bool) -> web.StreamResponse:
        """The status page, its script and style, and its data (README, "Status page")."""
        if request.method not in ("GET", "HEAD"):
            response = error_response(MethodNotAllowed("the status page is read with GET"))
            response.headers["Allow"] = "GET, HEAD"
            return response
        found = status_page.asset(path)
        if found is not None:
            return found
        # The clear buttons only where clearing is accepted (see ``_state_change``).
        view = status_view(self.state, can_clear=operator)
        view = status_page.with_texts(view)
        return status_page.page(view) if path == STATUS else status_page.data(view)

    async def reload(self, request: web.BaseRequest, operator: bool) -> web.StreamResponse:
        refused = _refused_change(request, "reload", "reload the config", operator)
        if refused is not None:
            return refused
        # Shielded: a client hanging up cancels its handler, and must not stop a reload
        # half-way (client tokens loaded, config not swapped).
        result = await asyncio.shield(self.state.reload())
        if not result.ok:
            return error_response(BadRequest(f"config not reloaded: {result.error}"))
        return _json(
            {
                "status": "reloaded",
                "kept": result.kept,
                "relogin": result.relogin,
                "added": result.added,
                "removed": result.removed,
                "restart_needed": result.restart_needed,
            }
        )

    def _state_change(
        self, request: web.BaseRequest, route: str, action: str, what: str, operator: bool
    ) -> RouteRuntime | web.StreamResponse:
        """The route a state-changing call is for, or the answer refusing the call."""
        refused = _refused_change(request, action, what, operator)
        if refused is not None:
            return refused
        rt = self.state.runtime.routes.get(route)
        if rt is None:
            return error_response(NoRoute(f"no route named {route!r}"))
        return rt

    async def clear(
        self, request: web.BaseRequest, route: str, operator: bool
    ) -> web.StreamResponse:
        """Lift one route's login rejection (in every process sharing the store): the
        operator says "try again"."""
        rt = self._state_change(request, route, "clear", "clear a lockout", operator)
        if not isinstance(rt, RouteRuntime):
            return rt
        lifted = await asyncio.shield(rt.sessions.clear_lockout())
        return _json({"status": "cleared", "route": route, "lockout": lifted})

    async def logout(
        self, request: web.BaseRequest, route: str, operator: bool
    ) -> web.StreamResponse:
        """End one route's session at the vendor and remove it from the store."""
        rt = self._state_change(request, route, "logout", "log a session out", operator)
        if not isinstance(rt, RouteRuntime):
            return rt
        had = await asyncio.shield(logout_route(self.state.runtime.routes.values(), rt))
        return _json({"status": "logged_out", "route": route, "session": had})

    async def sessions(self) -> dict[str, Any]:
        routes = list(self.state.runtime.routes.items())
        try:
            described = await asyncio.wait_for(
                asyncio.gather(*(rt.sessions.describe() for _, rt in routes)), DESCRIBE_TIMEOUT
            )
        except TimeoutError:
            described = [{"store": rt.sessions.store_kind} for _, rt in routes]
        out: dict[str, Any] = {}
        for (name, rt), store in zip(routes, described, strict=True):
            st = rt.sessions.status()
            out[name] = {
                "type": rt.config.auth.type,
                "state": st.state,
                "logged_in_at": _iso(st.logged_in_at),
                "expires_at": _iso(st.expires_at),
                "last_error": None if st.last_error is None else REDACTOR.text(st.last_error),
                "org": st.org,
                "upstream": st.upstream,
                "idle_timeout": st.idle_timeout,
                "idle_timeout_source": st.idle_timeout_source,
                "logins_last_hour": st.logins_last_hour,
                "logins_last_day": st.logins_last_day,
                **store,
            }
        return out


async def logout_route(routes: Iterable[RouteRuntime], rt: RouteRuntime) -> bool:
    """Log ``rt``'s session out and make every route sharing it stop using it; True if
    there was a session."""
    key = rt.sessions.held_key or await rt.sessions.key()
    had = await rt.sessions.logout()
    if key is not None:
        for other in routes:
            if other is not rt:
                other.sessions.forget(key)
    return had

"""Admin endpoints under the reserved ``/-/`` prefix (README, "Endpoints").

``/-/healthz``, ``/-/readyz``, ``/-/metrics`` and ``/-/sessions`` are read-only and never
show a secret. ``POST /-/reload`` and ``POST /-/sessions/<route>/clear`` change state, so
only loopback clients may call them, with a request no HTML form can send
(``guard.check_state_change``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

from aiohttp import web

from proxy.core.errors import BadRequest, Forbidden, MethodNotAllowed, NoRoute
from proxy.core.hosts import is_loopback
from proxy.ops.logs import REDACTOR
from proxy.ops.metrics import CONTENT_TYPE
from proxy.server.guard import check_state_change
from proxy.server.responses import error_response
from proxy.server.state import ServerState


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return (
        dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


SESSIONS = "/-/sessions/"
CLEAR = "/clear"


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(data).encode(), content_type="application/json"
    )


def _post_only(message: str) -> web.Response:
    response = error_response(MethodNotAllowed(message))
    response.headers["Allow"] = "POST"
    return response


class Admin:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def handle(self, request: web.BaseRequest, path: str) -> web.StreamResponse:
        if path == "/-/healthz":
            return _json({"status": "ok"})
        if path == "/-/readyz":
            if self.state.draining:
                return _json({"status": "draining"}, 503)
            return _json({"status": "ready"})
        if path == "/-/sessions":
            return _json(self.sessions())
        if path == "/-/metrics":
            return web.Response(
                body=self.state.metrics.render(), headers={"Content-Type": CONTENT_TYPE}
            )
        if path == "/-/reload":
            return await self.reload(request)
        if path.startswith(SESSIONS) and path.endswith(CLEAR):
            return self.clear(request, path[len(SESSIONS) : -len(CLEAR)])
        return error_response(NoRoute(f"no admin endpoint {path}"))

    async def reload(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method != "POST":
            return _post_only("use POST to reload the config")
        if not is_loopback(request.remote or ""):
            return error_response(Forbidden("reload is only accepted from a loopback address"))
        check_state_change(request)  # raises; rendered by the request handler
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

    def clear(self, request: web.BaseRequest, route: str) -> web.StreamResponse:
        """Lift one route's login lockout (in every worker): the operator says "try again"."""
        if request.method != "POST":
            return _post_only("use POST to clear a lockout")
        if not is_loopback(request.remote or ""):
            return error_response(Forbidden("clear is only accepted from a loopback address"))
        check_state_change(request)  # raises; rendered by the request handler
        rt = self.state.runtime.routes.get(route)
        if rt is None:
            return error_response(NoRoute(f"no route named {route!r}"))
        lifted = rt.sessions.clear_lockout()
        return _json({"status": "cleared", "route": route, "lockout": lifted})

    def sessions(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, rt in self.state.runtime.routes.items():
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
            }
        return out

"""What the status page shows (README, "Status page"): one view of every route, as JSON
for the page's refreshes (``GET /-/status.json``) and for its first paint.

Everything comes from this process: the session manager's status, its login history
(``RouteSessions.attempts``), the request counters the pipeline feeds
(``ServerState.traffic``) and the route's queue. Never a secret: the vendor's last
message goes through the log redactor (the session manager has already scrubbed the
attempt's secrets from it), and no session id, token or password is read here.
"""

from __future__ import annotations

import os
from typing import Any

from proxy.ops.activity import (
    DAY_MINUTES,
    ERROR,
    HOUR_MINUTES,
    REPLAYED,
    REQUESTS,
    THROTTLED,
)
from proxy.ops.logs import REDACTOR
from proxy.server.state import ServerState
from proxy.upstream.route import RouteRuntime

RATE_MINUTES = 5  # the request rate is the average of the last five minutes
EXPIRING = 300.0  # an active session this close to its end is shown as expiring
# Shown on the page: what the figures cover.
SCOPE = "this process"


def session_state(state: str, expires_at: float | None, now: float, margin: float) -> str:
    """The page's word for a session: active, expiring, expired, logging_in, backoff,
    rejected or none."""
    if state == "active" and expires_at is not None and expires_at - now <= max(EXPIRING, margin):
        return "expiring"
    if state == "none" and expires_at is not None and expires_at <= now:
        return "expired"
    return state


def _traffic(state: ServerState, name: str, now: float) -> dict[str, Any]:
    hour = state.traffic.totals(name, now, HOUR_MINUTES)
    recent = state.traffic.totals(name, now, RATE_MINUTES)
    requests = hour.get(REQUESTS, 0)
    errors = {k[len(ERROR) :]: n for k, n in hour.items() if k.startswith(ERROR)}
    failed = sum(errors.values())
    return {
        "per_minute": round(recent.get(REQUESTS, 0) / RATE_MINUTES, 1),
        "last_hour": requests,
        "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])),
        "error_rate": round(100.0 * failed / requests, 1) if requests else 0.0,
        "replayed": hour.get(REPLAYED, 0),
        "throttled": hour.get(THROTTLED, 0),
    }


def _queue(rt: RouteRuntime) -> dict[str, int] | None:
    limiter = rt.limiter
    if limiter is None:
        return None
    return {"limit": limiter.limit, "in_use": limiter.in_use, "queued": limiter.queued}


def route_view(state: ServerState, name: str, rt: RouteRuntime, now: float) -> dict[str, Any]:
    st = rt.sessions.status()
    history = rt.sessions.attempts
    message = None if st.last_error is None else REDACTOR.text(st.last_error)
    return {
        "name": name,
        "type": rt.config.auth.type,
        "upstream": st.upstream,
        "state": session_state(st.state, st.expires_at, now, rt.config.auth.refresh_margin),
        "retry_at": st.retry_at,
        "message": message,
        "logged_in_at": st.logged_in_at,
        "expires_at": st.expires_at,
        "idle_timeout": st.idle_timeout,
        "idle_timeout_source": st.idle_timeout_source,
        "logins": {
            "hour": history.outcomes(now, HOUR_MINUTES),
            "day": history.outcomes(now, DAY_MINUTES),
        },
        "attempts": [
            {"at": a.at, "result": a.result, "seconds": round(a.seconds, 3), "code": a.code}
            for a in history.recent()
        ],
        "traffic": _traffic(state, name, now),
        "queue": _queue(rt),
    }


def status_view(state: ServerState, *, can_clear: bool) -> dict[str, Any]:
    """The whole page's data; ``can_clear``: the viewer may use the clear buttons."""
    now = state.clock.now()
    routes = state.runtime.routes
    state.traffic.retain(set(routes))
    return {
        "now": now,
        "pid": os.getpid(),
        "scope": SCOPE,
        "draining": state.draining,
        "can_clear": can_clear,
        "routes": [route_view(state, name, rt, now) for name, rt in routes.items()],
    }

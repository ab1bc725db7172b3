"""The status page at ``/-/`` (README, "Status page"): one server-rendered HTML page, its
script and style sheet, and the JSON its script fetches every few seconds.

The page's words are made here once, for the first paint and for the JSON alike (the
``text`` of each route): the script only puts them in place with ``textContent``, so
nothing the server sends is ever parsed as HTML, and the HTML itself is escaped here.
No external asset; a strict Content-Security-Policy (scripts and styles from the proxy
only, no inline code), no framing (the clear button cannot be clickjacked), no caching.
"""

from __future__ import annotations

import html
import json
import time
from importlib import resources
from string import Template
from typing import Any

from aiohttp import web

from proxy.server.status import SCOPE

_STATIC = resources.files("proxy.server") / "static"
PAGE = Template(_STATIC.joinpath("status.html").read_text("utf-8"))
CARD = Template(_STATIC.joinpath("card.html").read_text("utf-8"))
ASSETS = {
    "/-/status.js": (_STATIC.joinpath("status.js").read_bytes(), "text/javascript"),
    "/-/status.css": (_STATIC.joinpath("status.css").read_bytes(), "text/css"),
    "/-/favicon.svg": (_STATIC.joinpath("favicon.svg").read_bytes(), "image/svg+xml"),
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STATE_WORDS = {
    "active": "active",
    "expiring": "expiring",
    "expired": "expired",
    "logging_in": "logging in",
    "backoff": "backing off",
    "rejected": "rejected",
    "none": "no session",
}
DASH = "—"


def clock_time(ts: float | None, now: float) -> str:
    """HH:MM:SS in the proxy's local time; with the date when it is not today."""
    if ts is None:
        return DASH
    local = time.localtime(ts)
    if time.strftime("%Y-%m-%d", local) != time.strftime("%Y-%m-%d", time.localtime(now)):
        return time.strftime("%Y-%m-%d %H:%M:%S", local)
    return time.strftime("%H:%M:%S", local)


def duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {what}" for what, n in counts.items()) or "none"


def _state_text(route: dict[str, Any], now: float) -> str:
    words = STATE_WORDS.get(route["state"], route["state"])
    if route["state"] in ("rejected", "backoff") and route["retry_at"] is not None:
        return f"{words} until {clock_time(route['retry_at'], now)}"
    return words


def _idle_text(route: dict[str, Any]) -> str:
    idle = route["idle_timeout"]
    if idle is None:
        return "none"
    source = {"vendor": "learned from the org", "config": "from the config"}.get(
        route["idle_timeout_source"], "default"
    )
    return f"{duration(idle)} ({source})"


def _traffic_texts(traffic: dict[str, Any]) -> dict[str, str]:
    errors = traffic["errors"]
    return {
        "requests": f"{traffic['per_minute']:g}/min, {traffic['last_hour']} in the last hour",
        "errors": (
            f"{traffic['error_rate']:g}%: {_counts(errors)}" if errors else "none in the last hour"
        ),
        "replayed": str(traffic["replayed"]),
        "throttled": str(traffic["throttled"]),
    }


def texts(route: dict[str, Any], now: float) -> dict[str, Any]:
    """The words the page shows for one route (see ``status.route_view``)."""
    queue = route["queue"]
    return {
        "state": _state_text(route, now),
        "message": route["message"] or "",
        "type": route["type"],
        "upstream": route["upstream"] or DASH,
        "logged_in_at": clock_time(route["logged_in_at"], now),
        "expires_at": clock_time(route["expires_at"], now)
        if route["expires_at"] is not None or route["logged_in_at"] is None
        else "never",
        "idle": _idle_text(route),
        "logins_hour": _counts(route["logins"]["hour"]),
        "logins_day": _counts(route["logins"]["day"]),
        **_traffic_texts(route["traffic"]),
        "queue": "no max_concurrent"
        if queue is None
        else f"{queue['in_use']} of {queue['limit']} slots in use, {queue['queued']} waiting",
        "attempts": [
            [clock_time(a["at"], now), a["result"], f"{a['seconds']:.2f} s", a["code"] or DASH]
            for a in route["attempts"]
        ],
    }


def with_texts(view: dict[str, Any]) -> dict[str, Any]:
    """``status.status_view`` with the page's words added: what ``/-/status.json`` sends."""
    now = view["now"]
    view["updated"] = clock_time(now, now)
    for route in view["routes"]:
        route["text"] = texts(route, now)
        route["clearable"] = route["state"] in ("rejected", "backoff")
    return view


def _card(route: dict[str, Any], can_clear: bool) -> str:
    text = route["text"]
    esc = {k: html.escape(v) for k, v in text.items() if isinstance(v, str)}
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
        for row in text["attempts"]
    )
    name = html.escape(route["name"])
    button = ""
    if can_clear:
        hidden = "" if route["clearable"] else " hidden"
        button = f'<button type="button" data-clear="{name}"{hidden}>Clear lockout</button>'
    return CARD.substitute(
        esc,
        name=name,
        state=html.escape(route["state"]),
        state_text=esc["state"],
        attempts=rows,
        button=button,
    )


def page(view: dict[str, Any]) -> web.Response:
    """The first paint: every route's card, rendered from the same data as the JSON."""
    can_clear = view["can_clear"]
    body = PAGE.substitute(
        updated=html.escape(view["updated"]),
        tz=html.escape(time.strftime("%Z") or "local time"),
        pid=view["pid"],
        scope=html.escape(SCOPE),
        can_clear="true" if can_clear else "false",
        cards="\n".join(_card(route, can_clear) for route in view["routes"]),
    )
    return _answer(body.encode(), "text/html")


def data(view: dict[str, Any]) -> web.Response:
    return _answer(json.dumps(view).encode(), "application/json")


def asset(path: str) -> web.Response | None:
    """The page's script or style sheet, or None for another path."""
    found = ASSETS.get(path)
    return None if found is None else _answer(*found)


def _answer(body: bytes, content_type: str) -> web.Response:
    response = web.Response(body=body, content_type=content_type, charset="utf-8")
    response.headers.update(SECURITY_HEADERS)
    return response

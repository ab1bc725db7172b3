"""``auth-proxy check --login``: log each route in once, report what the login found.

It goes through the same session manager and flows as serving does (a ``ProxyServer``
that never listens), so a route that passes here logs in the same way under load. The
sessions it opens are logged out before it returns.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

from proxy.config import Config
from proxy.core.errors import ProxyError
from proxy.ops.logs import REDACTOR
from proxy.server.app import ProxyServer


@dataclass(slots=True)
class LoginReport:
    route: str
    auth_type: str
    upstream: str | None = None
    org: str | None = None
    expires_at: float | None = None  # None: the session does not expire
    error: ProxyError | None = None


async def check_logins(config: Config, names: list[str]) -> list[LoginReport]:
    """Log in each named route once (concurrently); reports in the order of ``names``."""
    server = ProxyServer(config)
    try:
        return list(await asyncio.gather(*(_login(server, name) for name in names)))
    finally:
        await server.stop(drain_timeout=0)


async def _login(server: ProxyServer, name: str) -> LoginReport:
    rt = server.runtime.routes[name]
    report = LoginReport(name, rt.config.auth.type)
    try:
        lease = await rt.sessions.acquire()
    except ProxyError as exc:
        report.error = exc.for_route(name)
        return report
    report.upstream = lease.session.upstream
    report.org = lease.session.org
    expires = lease.expires_at()
    report.expires_at = None if expires == float("inf") else expires
    return report


def _iso(ts: float) -> str:
    return (
        dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def report_table(reports: list[LoginReport]) -> list[str]:
    rows = [("ROUTE", "TYPE", "UPSTREAM", "ORG", "SESSION EXPIRES")]
    for r in reports:
        if r.error is not None:
            rows.append((r.route, r.auth_type, "-", "-", f"FAILED ({r.error.code})"))
            continue
        expires = "never" if r.expires_at is None else _iso(r.expires_at)
        rows.append((r.route, r.auth_type, r.upstream or "-", r.org or "-", expires))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def failure_lines(reports: list[LoginReport]) -> list[str]:
    """One line per failed route: its name, the error code and message (never a secret)."""
    return [
        f"login failed for route {r.route}: {r.error.code}: {REDACTOR.text(r.error.message)}"
        for r in reports
        if r.error is not None
    ]

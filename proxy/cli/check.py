"""``auth-proxy check``: validate the config, run the start-up checks ``serve`` runs
(``server/preflight.py``: client auth beyond loopback, every secret source, the CA and
state directories, the ports, the listeners' TLS files), print its warnings and the routes
(secrets masked); with ``--login``, log each route in once and report what the login
found. ``--json``: one document on stdout.

The login check goes through the same session manager and flows as serving does (a ``ProxyServer``
that never listens), so a route that passes here logs in the same way under load. The
sessions it opens are logged out before it returns.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from proxy.cli.run import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, install_uvloop
from proxy.config import SESSION_TUNING_KEYS, Config, ConfigError, Route, default_config_path
from proxy.config.load import load_config
from proxy.core.errors import ProxyError
from proxy.core.secrets import Secret
from proxy.ops.logs import REDACTOR, setup_logging
from proxy.server.app import ProxyServer
from proxy.server.preflight import preflight_report


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


def check_command(config_arg: str | None, login: list[str] | None, *, as_json: bool = False) -> int:
    """Load the config, run serve's start-up checks, print the routes; with ``login``, log in."""
    path = default_config_path(config_arg)
    out: dict[str, Any] = {"config": str(path)}
    try:
        config = load_config(path)
        report = preflight_report(config)
    except ConfigError as exc:
        return _refused(out, list(exc.lines), as_json)
    out["warnings"] = [_line_json(line) for line in report.warnings]
    if not as_json:
        for line in report.warnings:
            print(f"auth-proxy: warning: {line}", file=sys.stderr)
    if report.problems:
        return _refused(out, report.problems, as_json)
    out["listen"] = [f"{host}:{port}" for host, port, _route in config.listeners()]
    out["routes"] = [_route_json(route) for route in config.routes]
    if not as_json:
        for line in describe_routes(config):
            print(line)
    if login is None:
        return _done(out, EXIT_OK, as_json)
    names = list(dict.fromkeys(login)) or [route.name for route in config.routes]
    unknown = [n for n in names if n not in {route.name for route in config.routes}]
    if unknown:
        known = ", ".join(route.name for route in config.routes)
        line = f"--login: unknown route {', '.join(unknown)} (routes: {known})"
        return _refused(out, [line], as_json)
    # Log lines would break the table: only errors, and to stderr.
    setup_logging("error", "console", stream=sys.stderr)
    install_uvloop()
    reports = asyncio.run(check_logins(config, names))
    failures = failure_lines(reports)
    code = EXIT_RUNTIME if failures else EXIT_OK
    if as_json:
        out["logins"] = [_login_json(r) for r in reports]
        return _done(out, code, as_json)
    print()
    for line in report_table(reports):
        print(line)
    for line in failures:
        print(f"auth-proxy: {line}", file=sys.stderr)
    return code


def _refused(out: dict[str, Any], problems: list[str], as_json: bool) -> int:
    """Exit 2 with one problem per line (or per JSON object), each naming its key."""
    if not as_json:
        for line in problems:
            print(f"auth-proxy: config error: {line}", file=sys.stderr)
        return EXIT_USAGE
    out["problems"] = [_line_json(p) for p in problems]
    return _done(out, EXIT_USAGE, as_json)


def _line_json(line: str) -> dict[str, str]:
    """A problem or warning line as ``{"key": ..., "message": ...}``."""
    return dict(zip(("key", "message"), line.split(": ", 1), strict=False))


def _done(out: dict[str, Any], code: int, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"ok": code == EXIT_OK, **out}, indent=2))
    return code


def _route_json(route: Route) -> dict[str, Any]:
    m = route.match
    match: dict[str, Any] = (
        {"prefix": m.prefix}
        if m.prefix
        else {"host": list(m.host)}
        if m.host
        else {"listen": f"{m.listen.host or ''}:{m.listen.port}"}
        if m.listen
        else {}
    )
    return {"name": route.name, "match": match, "auth": dict(_fields(route.auth))}


def _login_json(report: LoginReport) -> dict[str, Any]:
    error = report.error
    return {
        "route": report.route,
        "type": report.auth_type,
        "ok": error is None,
        "upstream": report.upstream,
        "org": report.org,
        "expires_at": None if report.expires_at is None else _iso(report.expires_at),
        "error": None
        if error is None
        else {"code": error.code, "message": REDACTOR.text(error.message)},
    }


def describe_routes(config: Config) -> list[str]:
    listen = f"{config.listen.host}:{config.listen.port}"
    lines = [f"config ok: {len(config.routes)} route(s), listening on {listen}"]
    for route in config.routes:
        m = route.match
        where = (
            f"prefix {m.prefix}"
            if m.prefix
            else f"host {', '.join(m.host)}"
            if m.host
            else f"port {m.listen.port}"
            if m.listen
            else "?"
        )
        lines.append(f"- {route.name}: {where} -> {route.auth.type}")
        lines.extend(f"    {key}: {value}" for key, value in _fields(route.auth) if key != "type")
    return lines


def _fields(model: BaseModel) -> list[tuple[str, str]]:
    """Set fields for display, the vendor's own before the session tuning ones."""
    keys = sorted(type(model).model_fields, key=lambda k: k in SESSION_TUNING_KEYS)
    return [(k, _masked(getattr(model, k))) for k in keys if getattr(model, k) is not None]


def _masked(value: Any) -> str:
    """A config value for display: secrets described by their source, never their value."""
    if isinstance(value, Secret):
        return value.describe()
    if isinstance(value, BaseModel):
        return "{" + ", ".join(f"{k}: {v}" for k, v in _fields(value)) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_masked(v) for v in value) + "]"
    return str(value)

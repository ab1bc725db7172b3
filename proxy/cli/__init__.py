"""Command line: ``auth-proxy [serve|check|clear|demo|sandbox|ca] ...`` (SPEC §2).

Exit codes: 0 ok, 2 invalid config or usage (one line per problem, each naming its key
path, no traceback), 1 runtime failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import signal
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel

from proxy import __version__
from proxy.config import (
    SESSION_TUNING_KEYS,
    Config,
    ConfigError,
    default_config_path,
    is_loopback,
    load_config,
)
from proxy.core.errors import ProxyError
from proxy.core.secrets import Secret
from proxy.ops.logs import setup_logging
from proxy.server.supervisor import LockoutBoard

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2
COMMANDS = ("serve", "check", "clear", "demo", "sandbox", "ca")
CLEAR_TIMEOUT = 10.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auth-proxy",
        description="Local authenticating reverse proxy for Informatica IICS/IDMC and Ivanti.",
    )
    parser.add_argument("--version", action="version", version=f"auth-proxy {__version__}")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the proxy (the default command)")
    serve.add_argument(
        "-c", "--config", help="config file (default: $AUTH_PROXY_CONFIG or ./config.yaml)"
    )

    check = sub.add_parser("check", help="validate the config and print its routes")
    check.add_argument("-c", "--config")
    check.add_argument(
        "--login", nargs="*", metavar="ROUTE", help="also log in once (all routes, or those named)"
    )

    clear = sub.add_parser(
        "clear", help="lift a route's login lockout in the running proxy (all workers)"
    )
    clear.add_argument("route")
    clear.add_argument("-c", "--config")

    demo = sub.add_parser("demo", help="run the sandbox and the proxy in front of it")
    demo.add_argument("--port", type=int, default=8080, help="proxy port (default 8080)")
    demo.add_argument(
        "--forward-proxy",
        action="store_true",
        help="show forward-proxy mode: vendor URLs through CONNECT and a local CA",
    )
    demo.add_argument(
        "--sandbox-port", type=int, default=0, help="first sandbox port (default: any free)"
    )

    sandbox = sub.add_parser("sandbox", help="run the offline vendor imitation alone")
    sandbox.add_argument(
        "--port", type=int, default=9000, help="first of five ports (default 9000)"
    )

    ca = sub.add_parser("ca", help="forward-proxy mode: print the local CA and how to trust it")
    ca.add_argument("-c", "--config")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] not in (*COMMANDS, "-h", "--help", "--version"):
        args_list.insert(0, "serve")
    parser = build_parser()
    args = parser.parse_args(args_list)
    command = args.command or "serve"
    try:
        if command == "serve":
            path = default_config_path(args.config)
            return _serve(load_config(path), path)
        if command == "check":
            return _check(_load(args.config), args.login)
        if command == "clear":
            return _clear(_load(args.config), args.route)
        if command == "demo":
            from proxy.cli.demo import run_demo

            return _run(run_demo(args.port, args.sandbox_port, args.forward_proxy))
        if command == "sandbox":
            from proxy.sandbox.runner import serve_forever

            return _run(serve_forever(args.port))
        if command == "ca":
            from proxy.server.tls import print_ca

            return print_ca(_load(args.config))
    except ConfigError as exc:
        for line in exc.lines:
            print(f"auth-proxy: config error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"auth-proxy: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_RUNTIME
    parser.error(f"unknown command {command}")
    return EXIT_USAGE


def _load(path: str | None) -> Config:
    return load_config(default_config_path(path))


def _run(coro: Any) -> int:
    _install_uvloop()
    with contextlib.suppress(KeyboardInterrupt):
        return int(asyncio.run(coro) or 0)
    return EXIT_OK


def _install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def check_startup(config: Config) -> None:
    """Refuse to listen beyond loopback without client authentication (SPEC §8)."""
    hosts = [config.listen.host] + [
        r.match.listen.host for r in config.routes if r.match.listen and r.match.listen.host
    ]
    exposed = [h for h in hosts if not is_loopback(h)]
    if exposed and config.client_auth is None and not config.allow_unauthenticated:
        raise ConfigError(
            f"listen.host: {exposed[0]} is not a loopback address; configure client_auth "
            "or set allow_unauthenticated: true"
        )


def _serve(config: Config, config_path: Path | None = None) -> int:
    check_startup(config)
    setup_logging(config.log.level, config.log.format)
    if config.workers > 1:
        from proxy.server.supervisor import run_workers

        return run_workers(config, config_path)
    return _run(serve(config, config_path))


async def serve(
    config: Config,
    config_path: Path | None = None,
    *,
    sockets: dict[tuple[str, int], socket.socket] | None = None,
    lockouts: LockoutBoard | None = None,
) -> int:
    from proxy.server.app import ProxyServer

    server = ProxyServer(config, config_path=config_path, lockouts=lockouts)
    await server.start(sockets)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        structlog.get_logger("auth_proxy").info("shutting_down", signal=sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, server.schedule_reload)
    try:
        await stop.wait()
    finally:
        await server.stop()
    return EXIT_OK


def _check(config: Config, login: list[str] | None) -> int:
    for line in describe_routes(config):
        print(line)
    if login is None:
        return EXIT_OK
    from proxy.cli.check import check_logins, failure_lines, report_table

    names = list(dict.fromkeys(login)) or [route.name for route in config.routes]
    unknown = [n for n in names if n not in {route.name for route in config.routes}]
    if unknown:
        known = ", ".join(route.name for route in config.routes)
        print(f"auth-proxy: unknown route {', '.join(unknown)} (routes: {known})", file=sys.stderr)
        return EXIT_USAGE
    # Log lines would break the table: only errors, and to stderr.
    setup_logging("error", "console", stream=sys.stderr)
    _install_uvloop()
    reports = asyncio.run(check_logins(config, names))
    print()
    for line in report_table(reports):
        print(line)
    failures = failure_lines(reports)
    for line in failures:
        print(f"auth-proxy: {line}", file=sys.stderr)
    return EXIT_RUNTIME if failures else EXIT_OK


def _clear(config: Config, route: str) -> int:
    """``POST /-/sessions/<route>/clear`` to the proxy this config describes."""
    names = [r.name for r in config.routes]
    if route not in names:
        print(f"auth-proxy: unknown route {route} (routes: {', '.join(names)})", file=sys.stderr)
        return EXIT_USAGE
    host, port = config.listen.host, config.listen.port
    if port == 0:
        print("auth-proxy: listen.port is 0 (any free port): no fixed address", file=sys.stderr)
        return EXIT_RUNTIME
    if host in ("0.0.0.0", "::", ""):  # listening everywhere: loopback reaches it too
        host = "::1" if host == "::" else "127.0.0.1"
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    headers = {"X-Auth-Proxy": "1"}  # the clear endpoint refuses requests without it
    if config.client_auth is not None:
        try:
            token = asyncio.run(config.client_auth.tokens[0].resolve())
        except ProxyError as exc:
            print(f"auth-proxy: client_auth.tokens[0]: {exc.message}", file=sys.stderr)
            return EXIT_RUNTIME
        headers["Proxy-Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"http://{where}/-/sessions/{route}/clear", method="POST", headers=headers
    )
    # No proxy from the environment: this call is for the local proxy itself.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=CLEAR_TIMEOUT) as response:
            lifted = json.load(response)["lockout"]
    except urllib.error.HTTPError as exc:
        with exc:
            try:
                message = json.load(exc)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {exc.code}"
        print(f"auth-proxy: the proxy on {where} refused: {message}", file=sys.stderr)
        return EXIT_RUNTIME
    except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError):
        print(f"auth-proxy: no proxy answers on {where} (is it running?)", file=sys.stderr)
        return EXIT_RUNTIME
    print(f"{route}: login lockout lifted" if lifted else f"{route}: no login lockout to lift")
    return EXIT_OK


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

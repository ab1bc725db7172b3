"""Command line: ``auth-proxy [serve|check|clear|logout|demo|sandbox|ca] ...`` (SPEC §2).

Exit codes: 0 ok, 2 invalid config or usage (one line per problem, each naming its key
path, no traceback), 1 runtime failure.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from proxy import __version__
from proxy.cli.run import EXIT_RUNTIME, EXIT_USAGE, load, run
from proxy.config import ConfigError, default_config_path
from proxy.config.load import load_config

COMMANDS = ("serve", "check", "clear", "logout", "demo", "sandbox", "ca")


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

    logout = sub.add_parser("logout", help="end routes' sessions (all if none named)")
    logout.add_argument("routes", nargs="*", metavar="ROUTE")
    logout.add_argument("-c", "--config")

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
            from proxy.cli.serve import serve_command

            path = default_config_path(args.config)
            return serve_command(load_config(path), path)
        if command == "check":
            from proxy.cli.check import check_command

            return check_command(load(args.config), args.login)
        if command == "clear":
            from proxy.cli.clear import clear_command

            return clear_command(load(args.config), args.route)
        if command == "logout":
            from proxy.cli.logout import logout_command

            return logout_command(load(args.config), args.routes)
        if command == "demo":
            from proxy.cli.demo import run_demo

            return run(run_demo(args.port, args.sandbox_port, args.forward_proxy))
        if command == "sandbox":
            from proxy.sandbox.runner import serve_forever

            return run(serve_forever(args.port))
        if command == "ca":
            from proxy.server.tls import print_ca

            return print_ca(load(args.config))
    except ConfigError as exc:
        for line in exc.lines:
            print(f"auth-proxy: config error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"auth-proxy: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_RUNTIME
    parser.error(f"unknown command {command}")
    return EXIT_USAGE

"""Command line: ``auth-proxy [-c FILE] COMMAND``, the commands being serve, check, clear,
logout, health, demo, sandbox, ca and completion.

Exit codes: 0 ok, 2 invalid config or usage (one line per problem, each naming its key
path, no traceback), 1 runtime failure.

Every setting flag has an ``AUTH_PROXY_*`` environment variable (``proxy.config.overrides``);
a flag given here sets its variable, so reloads and workers, which read the config file
again, apply it too.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from proxy import __version__
from proxy.cli.run import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, load, require_free, run
from proxy.config import ConfigError
from proxy.config.overrides import CONFIG, LISTEN, LOG_LEVEL, STATE_DIR, Setting

COMMANDS = ("serve", "check", "clear", "logout", "health", "demo", "sandbox", "ca", "completion")
SHELLS = ("bash", "zsh", "tcsh")


Completions = Mapping[str, object]  # shtab's completers by kind ("file", "dir"), if completing


def _add(
    parser: argparse.ArgumentParser,
    setting: Setting,
    *short: str,
    completions: Completions,
    default: object,
) -> None:
    action = parser.add_argument(
        *short,
        setting.flag,
        metavar=setting.metavar,
        default=default,
        help=f"{setting.help} [env {setting.variable}]",
    )
    if setting.completes is not None and setting.completes in completions:
        action.complete = completions[setting.completes]  # type: ignore[attr-defined]


def _config_flags(parser: argparse.ArgumentParser, completions: Completions) -> None:
    """The flags of every command that reads the config file."""
    # SUPPRESS: an absent sub-command flag must not undo a `-c` given before the command.
    for setting in (CONFIG, LISTEN, LOG_LEVEL, STATE_DIR):
        short = ("-c",) if setting is CONFIG else ()
        _add(parser, setting, *short, completions=completions, default=argparse.SUPPRESS)


def _running_proxy_commands(sub: Any, completions: Completions) -> None:
    """The commands that act on the running proxy the config describes."""
    clear = sub.add_parser(
        "clear", help="lift a route's login lockout in the running proxy (all workers)"
    )
    clear.add_argument("route")
    _config_flags(clear, completions)

    health = sub.add_parser(
        "health", help="exit 0 if the proxy this config describes answers /-/healthz"
    )
    health.add_argument(
        "--ready",
        action="store_true",
        help="ask /-/readyz instead: not ready while starting or draining (a readiness probe)",
    )
    _config_flags(health, completions)

    logout = sub.add_parser("logout", help="end routes' sessions (all if none named)")
    logout.add_argument("routes", nargs="*", metavar="ROUTE")
    _config_flags(logout, completions)


def build_parser(completions: Completions | None = None) -> argparse.ArgumentParser:
    """The parser; ``completions`` marks which flags take files or directories (shtab)."""
    completions = completions or {}
    parser = argparse.ArgumentParser(
        prog="auth-proxy",
        description="Local authenticating reverse proxy for Informatica IICS/IDMC and Ivanti.",
    )
    parser.add_argument("--version", action="version", version=f"auth-proxy {__version__}")
    _add(parser, CONFIG, "-c", completions=completions, default=None)
    sub = parser.add_subparsers(dest="command")

    _config_flags(sub.add_parser("serve", help="run the proxy (the default command)"), completions)

    check = sub.add_parser(
        "check", help="run serve's start-up checks without serving, and print the routes"
    )
    _config_flags(check, completions)
    check.add_argument(
        "--login", nargs="*", metavar="ROUTE", help="also log in once (all routes, or those named)"
    )
    check.add_argument("--json", action="store_true", help="one JSON document on stdout")

    _running_proxy_commands(sub, completions)

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
    _config_flags(ca, completions)

    completion = sub.add_parser(
        "completion",
        help="print a shell completion script: eval it, or save it where your shell looks",
    )
    completion.add_argument("shell", choices=SHELLS)
    return parser


def with_default_command(args: Sequence[str]) -> list[str]:
    """``args`` with ``serve`` where the sub-command goes when none is given (after any
    ``-c FILE``, which may come before the sub-command)."""
    out = list(args)
    i = 0
    while i < len(out):
        if out[i] in ("-c", "--config"):
            i += 2
        elif out[i].startswith(("--config=", "-c")):  # --config=FILE, -cFILE
            i += 1
        else:
            break
    if i >= len(out) or out[i] not in (*COMMANDS, "-h", "--help", "--version"):
        out.insert(min(i, len(out)), "serve")
    return out


def export_flags(args: argparse.Namespace) -> None:
    """Each setting flag given becomes its ``AUTH_PROXY_*`` variable (see the module doc)."""
    for setting in (LISTEN, LOG_LEVEL, STATE_DIR):
        value = getattr(args, setting.flag.lstrip("-").replace("-", "_"), None)
        if value is not None:
            os.environ[setting.variable] = value


def _running_proxy_command(command: str, args: argparse.Namespace) -> int | None:
    """Run ``clear``, ``logout`` or ``health``; None for any other command."""
    if command == "clear":
        from proxy.cli.clear import clear_command

        return clear_command(load(args.config), args.route)
    if command == "logout":
        from proxy.cli.logout import logout_command

        return logout_command(load(args.config), args.routes)
    if command == "health":
        from proxy.cli.health import health_command

        return health_command(load(args.config), ready=args.ready)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(with_default_command(sys.argv[1:] if argv is None else argv))
    command = args.command or "serve"
    export_flags(args)
    try:
        if command == "serve":
            from proxy.cli.serve import serve_command

            return serve_command(args.config)
        if command == "check":
            from proxy.cli.check import check_command

            return check_command(args.config, args.login, as_json=args.json)
        if (code := _running_proxy_command(command, args)) is not None:
            return code
        if command == "demo":
            from proxy.cli.demo import run_demo

            require_free("--port", args.port)
            require_free("--sandbox-port", args.sandbox_port, 5)
            return run(run_demo(args.port, args.sandbox_port, args.forward_proxy))
        if command == "sandbox":
            from proxy.sandbox.runner import serve_forever

            require_free("--port", args.port, 5)
            return run(serve_forever(args.port))
        if command == "ca":
            from proxy.server.tls import print_ca

            return print_ca(load(args.config))
        if command == "completion":
            import shtab

            files = {"file": shtab.FILE, "dir": shtab.DIRECTORY}
            print(shtab.complete(build_parser(files), args.shell))
            return 0
    except ConfigError as exc:
        for line in exc.lines:
            print(f"auth-proxy: config error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (``auth-proxy completion bash | head``): not an error.
        # stdout is pointed at /dev/null so the interpreter's final flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"auth-proxy: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_RUNTIME
    parser.error(f"unknown command {command}")
    return EXIT_USAGE

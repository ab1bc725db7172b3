"""Settings from ``AUTH_PROXY_*`` environment variables, over those of the config file.

Each command-line flag of ``serve`` has a variable (the way cloud-sql-proxy has
``CSQL_PROXY_*``), and a flag given on the command line sets its variable: the file is
read again at every reload and by every worker, and the flags must apply each time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_args

from proxy.config.errors import ConfigError
from proxy.config.model import LogSettings


@dataclass(frozen=True, slots=True)
class Setting:
    variable: str
    flag: str
    metavar: str
    help: str
    completes: str | None = None  # "file" or "dir": what shell completion offers


CONFIG = Setting("AUTH_PROXY_CONFIG", "--config", "FILE", "config file (default: ./config.yaml)")
LISTEN = Setting(
    "AUTH_PROXY_LISTEN",
    "--listen",
    "HOST:PORT",
    "listen here instead of listen.host and listen.port, e.g. 0.0.0.0:8080 or [::1]:8080",
)
LOG_LEVEL = Setting(
    "AUTH_PROXY_LOG_LEVEL",
    "--log-level",
    "LEVEL",
    "instead of log.level: " + ", ".join(get_args(LogSettings.model_fields["level"].annotation)),
)
STATE_DIR = Setting(
    "AUTH_PROXY_STATE_DIR",
    "--state-dir",
    "DIR",
    "instead of state_dir: where the forward-proxy CA and the session store are kept",
    "dir",
)
SETTINGS = (CONFIG, LISTEN, LOG_LEVEL, STATE_DIR)


def apply_overrides(data: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The config document ``data`` with the settings ``env`` overrides put in."""
    out = dict(data)
    problems: list[str] = []
    if value := env.get(LISTEN.variable):
        host, port = _host_port(value)
        if port is None:
            problems.append(
                f"{_named(LISTEN)}: {value!r} is not HOST:PORT (e.g. 127.0.0.1:8080, [::1]:8080)"
            )
        else:
            listen = out.get("listen")
            out["listen"] = {**(listen if isinstance(listen, dict) else {}), "host": host}
            out["listen"]["port"] = port
    if value := env.get(LOG_LEVEL.variable):
        levels = get_args(LogSettings.model_fields["level"].annotation)
        if value.lower() not in levels:
            problems.append(f"{_named(LOG_LEVEL)}: {value!r} is not one of {', '.join(levels)}")
        else:
            log = out.get("log")
            out["log"] = {**(log if isinstance(log, dict) else {}), "level": value.lower()}
    if value := env.get(STATE_DIR.variable):
        out["state_dir"] = os.path.abspath(value)  # like -c: relative to where you are
    if problems:
        raise ConfigError(*problems)
    return out


def _named(setting: Setting) -> str:
    return f"{setting.variable} ({setting.flag})"


def _host_port(text: str) -> tuple[str, int | None]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        return "", None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:  # an IPv6 address needs its brackets, or the port is ambiguous
        return "", None
    return host, int(port)

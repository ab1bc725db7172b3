"""From a loaded YAML document to a ``Config``.

``parse_config`` interpolates ``${VAR}`` / ``${VAR:-default}``, validates with pydantic
(unknown keys are errors) and checks what spans several routes (unique names,
unambiguous matches) and the clients (unique names, known routes). Problems are reported
all at once in a ``ConfigError``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from proxy.config.clients import check_clients
from proxy.config.errors import ConfigError, Loc, Problem
from proxy.config.interpolate import interpolate
from proxy.config.model import Config
from proxy.config.problems import problems_of, report


def parse_config(
    data: Any, *, base_dir: Path | str = ".", env: Mapping[str, str] | None = None
) -> Config:
    """Validate an already-loaded YAML document."""
    if not isinstance(data, dict):
        raise ConfigError("(top level): the config must be a mapping")
    problems: list[Problem] = []
    data = interpolate(data, (), os.environ if env is None else env, problems)
    unset = [loc for loc, _ in problems]  # what is below these follows from the variable
    context = {"base_dir": str(base_dir)}
    if isinstance(data.get("state_dir"), str):  # the CA's relative paths hang off it
        context["state_dir"] = os.path.join(base_dir, data["state_dir"])
    try:
        config = Config.model_validate(data, context=context)
    except ValidationError as exc:
        found = problems_of(exc)
    else:
        found = _check_routes(config) + _check_tls(config)
        if config.client_auth is not None:
            names = frozenset(route.name for route in config.routes)
            found += check_clients(config.client_auth, names)
    problems += [p for p in found if not any(p[0][: len(u)] == u for u in unset)]
    if problems:
        raise report(problems, data)
    return config


def _check_routes(config: Config) -> list[Problem]:
    """What spans several routes: unique names, unambiguous matches."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    prefixes: list[tuple[str, int]] = []
    hosts: dict[str, int] = {}
    ports: dict[int, int] = {}
    for i, route in enumerate(config.routes):
        if route.name in seen:
            message = f"{route.name!r} is already used by routes[{seen[route.name]}]"
            problems.append((("routes", i, "name"), message))
        seen.setdefault(route.name, i)
        m = route.match
        at: Loc = ("routes", i, "match")
        if m.prefix is not None:
            for other, j in prefixes:
                if _prefixes_overlap(m.prefix, other):
                    message = f"{m.prefix!r} overlaps routes[{j}] prefix {other!r}"
                    problems.append(((*at, "prefix"), message))
                    break
            prefixes.append((m.prefix, i))
        elif m.host is not None:
            for pattern in m.host:
                if pattern in hosts:
                    message = f"{pattern!r} is already matched by routes[{hosts[pattern]}]"
                    problems.append(((*at, "host"), message))
                hosts.setdefault(pattern, i)
        elif m.listen is not None:
            port = m.listen.port
            if port == config.listen.port:
                problems.append(((*at, "listen", "port"), f"{port} is the main listener's port"))
            elif port in ports:
                message = f"{port} is already used by routes[{ports[port]}]"
                problems.append(((*at, "listen", "port"), message))
            ports.setdefault(port, i)
    return problems


def _check_tls(config: Config) -> list[Problem]:
    """Forward-proxy clients speak plain HTTP to their proxy (``HTTPS_PROXY=http://…``)."""
    if config.forward_proxy.enabled and config.listen.tls is not None:
        return [
            (
                ("listen", "tls"),
                "forward-proxy mode serves the main listener over plain HTTP (clients "
                "reach vendors through CONNECT tunnels); give TLS to routes' own listeners "
                "(match.listen.tls) instead",
            )
        ]
    return []


def _prefixes_overlap(a: str, b: str) -> bool:
    if a == "/" or b == "/":
        return True
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def default_config_path(explicit: str | None) -> Path:
    """The config file to read: ``--config``, else ``$AUTH_PROXY_CONFIG``, else ./config.yaml."""
    return Path(explicit or os.environ.get("AUTH_PROXY_CONFIG") or "config.yaml")

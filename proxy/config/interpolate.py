"""``${VAR}`` and ``${VAR:-default}`` in the strings of a loaded config document."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from proxy.config.errors import Loc, Problem

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def interpolate(node: Any, loc: Loc, env: Mapping[str, str], problems: list[Problem]) -> Any:
    """``node`` with variables substituted; an unset one is a problem and stays as written."""
    if isinstance(node, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            value = env.get(name)
            if value is None or (value == "" and default is not None):
                if default is None:
                    problems.append((loc, f"environment variable {name} is not set"))
                    return m.group(0)
                return default
            return value

        return _VAR.sub(sub, node)
    if isinstance(node, dict):
        return {k: interpolate(v, (*loc, str(k)), env, problems) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, (*loc, i), env, problems) for i, v in enumerate(node)]
    return node

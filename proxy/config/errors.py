"""The config error, and the key paths its lines start with."""

from __future__ import annotations

from collections.abc import Iterable

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]  # a key path and what is wrong there


class ConfigError(Exception):
    """An invalid config: one line per problem, each starting with its key path."""

    def __init__(self, *lines: str) -> None:
        super().__init__(*lines)
        self.lines = lines

    def __str__(self) -> str:
        return "\n".join(self.lines)


def key_path(loc: Iterable[str | int]) -> str:
    """``loc`` as written in an error line: ``routes[1].auth.password``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"

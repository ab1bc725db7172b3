"""Picking the route for a request: by listener port, Host header, or path prefix (the
README: "How a request is handled").

Lookups are dictionary hits, not scans: prefix routes are indexed by their first path
segment, exact host names by name; only ``*.`` wildcard hosts are checked in turn.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")

# (target, prefix, rest): the prefix is the part of the path that the upstream base
# replaces ("" for host/port routes); rest is the path after it, always starting with "/".
# A plain tuple: made on every request (a NamedTuple's constructor costs a call more).
Matched = tuple[T, str, str]


class Router(Generic[T]):
    def __init__(self) -> None:
        self._by_port: dict[int, T] = {}
        self._by_host: dict[str, T] = {}
        self._wildcards: list[tuple[str, T]] = []  # (".example.com", target)
        self._by_segment: dict[str, list[tuple[str, T]]] = {}
        self._root: T | None = None

    def add_port(self, port: int, target: T) -> None:
        self._by_port[port] = target

    def add_hosts(self, patterns: Iterable[str], target: T) -> None:
        for pattern in patterns:
            if pattern.startswith("*."):
                self._wildcards.append((pattern[1:], target))
            else:
                self._by_host[pattern] = target
        # Longest suffix first, so a.b.example.com prefers *.b.example.com.
        self._wildcards.sort(key=lambda item: -len(item[0]))

    def add_prefix(self, prefix: str, target: T) -> None:
        if prefix == "/":
            self._root = target
            return
        segment = prefix[1:].split("/", 1)[0]
        self._by_segment.setdefault(segment, []).append((prefix, target))

    def has_host(self, host: str) -> bool:
        return self.match_host(host) is not None

    def match_host(self, host: str) -> T | None:
        target = self._by_host.get(host)
        if target is not None:
            return target
        for suffix, candidate in self._wildcards:
            if host.endswith(suffix):
                return candidate
        return None

    def match(self, port: int, host: str, path: str) -> Matched[T] | None:
        """``host`` without port, lowercased; ``path`` raw, without the query."""
        if self._by_port and (target := self._by_port.get(port)) is not None:
            return (target, "", path)
        if (
            host
            and (self._by_host or self._wildcards)
            and (target := self.match_host(host)) is not None
        ):
            return (target, "", path)
        end = path.find("/", 1)
        segment = path[1:] if end == -1 else path[1:end]
        for prefix, candidate in self._by_segment.get(segment, ()):
            if path == prefix:
                return (candidate, prefix, "/")
            if path.startswith(prefix) and path[len(prefix)] == "/":
                return (candidate, prefix, path[len(prefix) :])
        if self._root is not None:
            return (self._root, "", path)
        return None

"""Login rejections, kept where every process that logs in with the same account sees them.

A rejected login must not be retried by anyone (accounts lock): ``LocalLockouts`` keeps
them for one process across reloads; ``LockoutBoard`` shares them between worker
processes, one small file per route. Each names the rejected credentials by a keyed
fingerprint, so a lockout for old credentials does not block new ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Lockout:
    until: float
    message: str
    credentials: str  # fingerprint of the rejected credentials: others are not locked out


class LockoutBoard:
    """Login rejections shared between worker processes, one file per route."""

    def __init__(self, directory: Path, key: bytes) -> None:
        self.directory = directory
        self.key = key  # for credential fingerprints

    def _path(self, route: str) -> Path:
        return self.directory / f"{route}.json"

    def get(self, route: str) -> Lockout | None:
        try:
            data = json.loads(self._path(route).read_text())
            return Lockout(float(data["until"]), str(data["message"]), str(data["credentials"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, route: str, lockout: Lockout) -> None:
        tmp = self._path(route).with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(lockout)))
        tmp.replace(self._path(route))  # atomic: readers see the old or the new file

    def clear(self, route: str) -> None:
        self._path(route).unlink(missing_ok=True)


class Lockouts(Protocol):
    """Login rejections by route: ``LocalLockouts``, or the workers' ``LockoutBoard``."""

    key: bytes  # fingerprints are comparable only under the same key

    def get(self, route: str) -> Lockout | None: ...
    def put(self, route: str, lockout: Lockout) -> None: ...
    def clear(self, route: str) -> None: ...


class LocalLockouts:
    """The lockouts of one process; they outlive reloads, which rebuild ``RouteSessions``."""

    def __init__(self) -> None:
        self.key = os.urandom(32)
        self._entries: dict[str, Lockout] = {}

    def get(self, route: str) -> Lockout | None:
        return self._entries.get(route)

    def put(self, route: str, lockout: Lockout) -> None:
        self._entries[route] = lockout

    def clear(self, route: str) -> None:
        self._entries.pop(route, None)

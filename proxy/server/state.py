"""What the pieces of the server share: the live config and the server's condition.

The admin endpoints and the CONNECT handling receive a ``ServerState``, not the server
object: they read the runtime (swapped on reload), the guard, the metrics and whether
the server is draining, and may ask for a reload. ``ProxyServer`` provides it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from proxy.config import Config
from proxy.ops.metrics import Metrics
from proxy.server.guard import Guard
from proxy.server.runtime import Runtime


@dataclass(slots=True)
class ReloadResult:
    """What a reload did, for the log and ``POST /-/reload``."""

    ok: bool
    error: str | None = None
    kept: list[str] = field(default_factory=list)  # sessions survived
    relogin: list[str] = field(default_factory=list)  # auth changed: logged out, fresh login
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)  # settings a reload cannot apply


class ServerState(Protocol):
    runtime: Runtime
    guard: Guard
    metrics: Metrics
    draining: bool

    @property
    def config(self) -> Config: ...

    async def reload_from_file(self) -> ReloadResult: ...

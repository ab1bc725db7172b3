"""What the pieces of the server share: the live config and the server's condition.

The request pipeline, the admin endpoints and the CONNECT handling receive a
``ServerState``, not the server object: the runtime (swapped on reload), the guard, the
metrics, the audit log, whether the server is draining, the requests in flight, and a way
to ask for a reload. ``ProxyServer`` owns it and sets ``reload``.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from proxy.config import Config
from proxy.core.clock import Clock
from proxy.ops.activity import Traffic
from proxy.ops.audit import AuditLog
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


# A client's X-Request-ID is kept when it is short and plain (UUIDs, hex, base64, ULIDs,
# dotted or colon-separated ids); anything else is replaced, so an id can neither break
# a log line nor a header, nor grow a log without bound.
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@~-]{1,128}")


async def _no_reload() -> ReloadResult:
    return ReloadResult(ok=False, error="this server cannot reload")


class ServerState:
    def __init__(self, runtime: Runtime, metrics: Metrics, guard: Guard, clock: Clock) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.traffic = Traffic()  # the routes' recent requests, for the status page
        self.guard = guard
        self.clock = clock
        self.audit: AuditLog | None = None  # log.audit, opened when the server starts
        self.draining = False
        self.reload: Callable[[], Awaitable[ReloadResult]] = _no_reload
        self.inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._id_prefix = os.urandom(6).hex()
        self._id_counter = 0

    @property
    def config(self) -> Config:
        return self.runtime.config

    def request_id(self, sent: str | None) -> str:
        """The request's id: the client's ``X-Request-ID`` (``sent``) if it is acceptable,
        else a new one."""
        if sent is not None and CLIENT_REQUEST_ID.fullmatch(sent):
            return sent
        return self.next_request_id()

    def next_request_id(self) -> str:
        """Unique per process run: a random prefix and a counter (cheaper than uuid4)."""
        self._id_counter += 1
        return f"{self._id_prefix}{self._id_counter:010x}"

    def enter(self, runtime: Runtime) -> None:
        self.inflight += 1
        self._idle.clear()
        runtime.enter()

    def leave(self, runtime: Runtime) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self._idle.set()
        runtime.leave()

    async def drained(self, timeout: float) -> bool:
        """Wait until no request is in flight; False when ``timeout`` ran out first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

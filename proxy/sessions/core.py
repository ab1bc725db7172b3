"""What every part of a route's session handling shares: its settings, its state (the
lease held, the tasks under way, what it has seen of the store) and the operations on
them — making a session the current one, when a session is fresh, timed store calls.

``RouteSessions`` (``manager.py``) is built on ``SessionCore`` through the mixins that
each do one job: ``verdicts.Verdicts`` (credentials, rejections and backoff), ``login``
(running the flow), ``flight`` (one login for every process through the store),
``sync`` (the store's view while a session is in use) and ``ending`` (logout, release,
shutdown).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

import structlog

from proxy.core.clock import Clock
from proxy.flows.base import Flow, Session
from proxy.ops.activity import LoginHistory
from proxy.ops.logs import REDACTOR, Registration
from proxy.sessions.credentials import by_command, store_key
from proxy.sessions.lease import Idle, Lease, Observer, Register, Unobserved, session_end, source_of
from proxy.sessions.pacing import Executor, LoginLog
from proxy.sessions.payload import Stored
from proxy.sessions.stores import SessionStores, memory_stores
from proxy.store import Backoff, Record, Rejection, StoreUnavailable

log = structlog.get_logger("auth_proxy.sessions")

T = TypeVar("T")

SYNC_EVERY = 5.0  # seconds between looks at the store while a session is in use
MAX_STORED = 86400.0  # a session that never expires is kept in the store this long


class SessionCore:
    def __init__(
        self,
        route: str,
        flow: Flow,
        execute: Executor,
        *,
        clock: Clock,
        idle_timeout: float | None,
        idle_timeout_source: str = "default",
        refresh_margin: float,
        login_retry_after: float,
        reauth_on: tuple[int, ...] = (401,),
        on_secret: Register = REDACTOR.add,
        observer: Observer | None = None,
        stores: SessionStores | None = None,
        scope: tuple[str, ...] = (),
    ) -> None:
        self.route = route
        self.flow = flow
        # Answers that mean "this session is no longer valid"; none when a new login
        # cannot cure them (a static API key).
        self.reauth_on = frozenset(reauth_on if flow.can_relogin else ())
        self._execute = execute
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._idle_source = idle_timeout_source  # config, or default: the vendor may say
        self._logins = LoginLog(route)  # this process's logins only
        self.attempts = LoginHistory()  # this process's attempts, for the status page
        self._margin = refresh_margin
        self._retry_after = login_retry_after
        self._register = on_secret
        self._resolved = on_secret()  # what the latest login resolved (a password, ...)
        self._observer: Observer = observer or Unobserved()
        self._place(stores or memory_stores(clock.now), scope)
        self._lease: Lease | None = None
        self._task: asyncio.Task[Lease] | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # logouts of sessions let go
        self._sync_at = float("inf")
        self._refused: str | None = None  # the stored version a 401 condemned
        # What this process has seen of verdicts, by key: the store is asked first, and
        # these hold when it cannot be reached (never retry a rejected login).
        self._rejections: dict[str, Rejection] = {}
        self._backoffs: dict[str | None, Backoff] = {}  # None: the secrets were unreadable
        self._store_ok = True
        self._fresh_try = False
        self.last_error: str | None = None

    def _place(self, stores: SessionStores, scope: tuple[str, ...]) -> None:
        """Where this route's sessions and verdicts are kept, and under which keys."""
        self._stores = stores
        # Static credentials (no login to share) never leave the process; with a shared
        # store, sessions are keyed by credentials alone, else by route too.
        static = not self.flow.can_relogin
        self.shared = stores.shared and not static
        self._store = stores.sessions if self.shared else stores.local
        self._verdicts = stores.local if static else stores.verdicts
        self._scope = scope if self.shared else (*scope, f"route={self.route}")
        # Where the session is stored: shared, under the credentials' key; else per
        # instance, so that a reload that rebuilds a route's sessions logs in afresh
        # while its verdicts (kept under the credentials' key) hold.
        self._instance = "" if self.shared else "/" + secrets.token_hex(8)
        # A {command} route is keyed by its config text: the command runs only to log in.
        auth = self.flow.auth
        self._text_key = (
            store_key(self._verdicts, auth, None, self._scope) if by_command(auth) else None
        )
        self._key: str | None = self._text_key  # None: read the secrets at the next attempt

    @property
    def held_key(self) -> str | None:
        """Where the session held is stored, if there is one."""
        return None if self._lease is None else self._lease.key + self._instance

    @property
    def store_kind(self) -> str:
        return self._stores.kind if self.shared else "memory"

    # ------------------------------------------------------------------ freshness

    def _idle_of(self, stored: Stored | None) -> Idle:
        """The idle timeout this route runs for ``stored``: the configured one, else the
        vendor's (learned by whichever process logged in), else the default."""
        if stored is not None and stored.vendor_idle is not None and self._idle_source != "config":
            return stored.vendor_idle, "vendor"
        return self._idle_timeout, self._idle_source

    def _fresh(self, session: Session, last_used: float, idle: float | None) -> bool:
        end = session_end(session, last_used, idle)
        return end - self._clock.now() > self._margin

    def _stored_until(self, session: Session, last_used: float, idle: float | None) -> float:
        end = session_end(session, last_used, idle)
        return min(end, self._clock.now() + MAX_STORED)

    def _can_renew(self, lease: Lease) -> bool:
        return self._can_renew_session(lease.session, lease.last_used, lease.idle_timeout)

    def _can_renew_session(self, session: Session, last_used: float, idle: float | None) -> bool:
        """Renew (not log in) only when a renewable token runs out before the session."""
        if session.token_expiry is None:
            return False
        now = self._clock.now()
        session_left = session.hard_expiry if session.hard_expiry is not None else float("inf")
        session_left -= now
        if session.sliding and idle is not None:
            session_left = min(session_left, last_used + idle - now)
        return session_left > self._margin

    # ------------------------------------------------------------------ the current lease

    def _lease_for(
        self, stored: Stored, key: str, held: Registration, record: Record | None = None
    ) -> Lease:
        """A lease on ``stored``: as ``record`` has it in the store, else just logged in
        here and not stored (the store could not be reached)."""
        idle, source = self._idle_of(stored)
        if record is None:
            now = self._clock.now()
            return Lease(
                stored.session, now, now, idle, held, idle_source=source, key=key, written=now
            )
        return Lease(
            stored.session,
            record.logged_in_at,
            record.last_used,
            idle,
            held,
            idle_source=source,
            key=key,
            version=record.version,
            source=source_of(record.origin),
            origin=record.origin,
            written=record.last_used,
        )

    def _install(self, made: Stored, key: str, record: Record | None = None) -> Lease:
        """Make ``made`` the current session: logged in here, or (with ``record``) as the
        store has it."""
        lease = self._lease_for(made, key, self._register(*made.session.secrets), record)
        self._replace(lease)
        return lease

    def _take(self, record: Record, stored: Stored, key: str) -> Lease:
        """Make a stored session the current one (or refresh the current one's last use,
        when it is the same version another process has used since)."""
        current = self._lease
        if current is not None and current.version == record.version:
            current.last_used = max(current.last_used, record.last_used)
            current.written = max(current.written, record.last_used)
            return current
        lease = self._install(stored, key, record)
        log.info(
            "session_from_store",
            route=self.route,
            source=lease.source,
            origin_host=record.origin.host,
            origin_pid=record.origin.pid,
        )
        return lease

    def _replace(self, lease: Lease) -> None:
        if self._lease is not None:  # renewed ahead of its end: replaced now
            self._retire(self._lease)
        self._lease = lease
        self._backoffs.pop(lease.key, None)
        self._rejections.pop(lease.key, None)
        self.last_error = None
        self._sync_at = self._clock.now() + SYNC_EVERY if self.shared else float("inf")
        self._observer.session_source(self.route, lease.source)

    def _retire(self, lease: Lease) -> None:
        """``lease`` is no longer the current one: its secrets may leave the redactor."""
        if self._lease is lease:
            self._lease = None
        lease.held.release()

    # ------------------------------------------------------------------ the store

    async def _op(self, name: str, work: Awaitable[T]) -> T:
        """One store operation, timed and counted; an outage is logged once."""
        started = time.perf_counter()
        try:
            result = await work
        except StoreUnavailable:
            self._observer.store_op(name, time.perf_counter() - started, False)
            if self._store_ok:
                self._store_ok = False
                log.warning("session_store_unavailable", route=self.route, op=name)
            raise
        self._observer.store_op(name, time.perf_counter() - started, True)
        if not self._store_ok:
            self._store_ok = True
            log.info("session_store_recovered", route=self.route)
        return result

    def _background(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._tasks.discard)

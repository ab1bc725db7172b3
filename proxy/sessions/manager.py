"""One vendor session per set of credentials, shared through the session store (README,
"Sessions and the session store").

``RouteSessions.acquire()`` is on every request's path, so its fast path is a few
comparisons on the session this process holds in memory. Everything else — consulting
the store, logging in, renewing, backing off — happens in at most one task per route at
a time (single flight in the process: concurrent requests wait on that task through
``asyncio.shield``, so a cancelled client never cancels the login the others wait for),
and that task takes part in the store's single flight across processes and machines
(``proxy.store.single_flight``): of all processes that need the session, one logs in.

The store is consulted on a miss, near expiry, after a 401 and, while the session is in
use, every ``SYNC_EVERY`` seconds (to see another process's renewal and to write back
when the session was last used, for sliding expiry). When the store cannot be reached
the process keeps what it holds and logs in by itself if it must, never retrying
credentials it has seen rejected.

After a login, the org's idle timeout is asked once (``pacing.org_idle_timeout``) and
stored with the session, so every process that takes it runs the same idle clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog

from proxy.core.clock import Clock
from proxy.core.errors import LoginBackoff, LoginFailed, LoginRejected, ProxyError
from proxy.core.masking import scrub
from proxy.core.secrets import Secret
from proxy.flows.base import Flow, FlowGen, LoginRequest, LoginResponse, Session
from proxy.flows.driver import drive
from proxy.ops.logs import REDACTOR, Registration
from proxy.sessions import payload
from proxy.sessions.credentials import Values, by_command, resolve_all, store_key
from proxy.sessions.pacing import DAY, HOUR, LoginLog, org_idle_timeout
from proxy.sessions.payload import Stored
from proxy.sessions.stores import SessionStores, memory_stores
from proxy.store import (
    Backoff,
    Held,
    LeaseLost,
    Origin,
    Record,
    Rejection,
    StoreError,
    StoreUnavailable,
    single_flight,
)

log = structlog.get_logger("auth_proxy.sessions")

Executor = Callable[[LoginRequest], Awaitable[LoginResponse]]
Register = Callable[..., Registration]  # masks values in logs until released
T = TypeVar("T")
Idle = tuple[float | None, str]  # an idle timeout and where it came from: vendor, config, default

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
SYNC_EVERY = 5.0  # seconds between looks at the store while a session is in use
LOGIN_WAIT = 120.0  # the longest a request waits for another process's login
MAX_STORED = 86400.0  # a session that never expires is kept in the store this long
HOST = socket.gethostname()


class Observer(Protocol):
    """Where the session layer reports what it did (``ops.metrics.Metrics``)."""

    def login(self, route: str, result: str, seconds: float) -> None: ...
    def store_op(self, op: str, seconds: float, ok: bool) -> None: ...
    def store_fallback(self, route: str) -> None: ...
    def session_source(self, route: str, source: str) -> None: ...


class _Unobserved:
    def login(self, route: str, result: str, seconds: float) -> None:
        pass

    def store_op(self, op: str, seconds: float, ok: bool) -> None:
        pass

    def store_fallback(self, route: str) -> None:
        pass

    def session_source(self, route: str, source: str) -> None:
        pass


def session_end(session: Session, last_used: float, idle_timeout: float | None) -> float:
    """When ``session`` ends if unused after ``last_used``: its fixed ends (JWT exp...) or,
    for a sliding session, ``idle_timeout`` after its last use, whichever comes first."""
    ends = [t for t in (session.hard_expiry, session.token_expiry) if t is not None]
    fixed = min(ends) if ends else float("inf")
    if session.sliding and idle_timeout is not None:
        return min(fixed, last_used + idle_timeout)
    return fixed


@dataclass(eq=False, slots=True)
class Lease:
    """A session in use, with the wall-clock time it was last used (sliding expiry).

    It holds its session's secrets in the log redactor until it is retired.
    """

    session: Session
    logged_in_at: float
    last_used: float
    idle_timeout: float | None
    held: Registration
    idle_source: str = "default"  # where idle_timeout came from: vendor, config, default
    key: str = ""  # the store key of the credentials it was made with
    version: str | None = None  # the stored record's; None: this process's alone
    source: str = "login"  # "login" (here), "another_process" or "restart"
    origin: Origin | None = None  # the process that logged in, when it came from the store
    written: float = 0.0  # the last use written back to the store
    used_here: bool = False  # a call with it succeeded in this process
    _fixed_end: float = field(init=False)  # the earliest absolute end (JWT exp, ...)
    _idle: float | None = field(init=False)  # the sliding timeout, if it applies

    def __post_init__(self) -> None:
        self._fixed_end = session_end(self.session, 0.0, None)
        self._idle = self.idle_timeout if self.session.sliding else None

    @property
    def stored(self) -> Stored:
        """The session and what the vendor said of it, as the store keeps them."""
        return Stored(self.session, self.idle_timeout if self.idle_source == "vendor" else None)

    def expires_at(self) -> float:
        """On every request's path: two comparisons."""
        if self._idle is None:
            return self._fixed_end
        end = self.last_used + self._idle
        return end if end < self._fixed_end else self._fixed_end


@dataclass(slots=True)
class SessionStatus:
    """What ``/-/sessions`` and metrics show: never a secret."""

    state: str
    logged_in_at: float | None = None
    expires_at: float | None = None
    last_error: str | None = None
    org: str | None = None
    upstream: str | None = None
    idle_timeout: float | None = None
    idle_timeout_source: str = "default"  # vendor | config | default
    logins_last_hour: int = 0  # logins this process made: another's are in its own counts
    logins_last_day: int = 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _source(origin: Origin) -> str:
    """Where a stored session came from, as seen by this process."""
    if origin.host == HOST:
        if origin.pid == os.getpid():
            return "login"
        if not _alive(origin.pid):
            return "restart"
    return "another_process"


class RouteSessions:
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
        self._margin = refresh_margin
        self._retry_after = login_retry_after
        self._register = on_secret
        self._resolved = on_secret()  # what the latest login resolved (a password, ...)
        self._observer: Observer = observer or _Unobserved()
        self._stores = stores or memory_stores(clock.now)
        # Static credentials (no login to share) never leave the process; with a shared
        # store, sessions are keyed by credentials alone, else by route too.
        static = not flow.can_relogin
        self.shared = self._stores.shared and not static
        self._store = self._stores.sessions if self.shared else self._stores.local
        self._verdicts = self._stores.local if static else self._stores.verdicts
        self._scope = scope if self.shared else (*scope, f"route={route}")
        # Where the session is stored: shared, under the credentials' key; else per
        # instance, so that a reload that rebuilds a route's sessions logs in afresh
        # while its verdicts (kept under the credentials' key) hold.
        self._instance = "" if self.shared else "/" + secrets.token_hex(8)
        # A {command} route is keyed by its config text: the command runs only to log in.
        self._text_key = (
            store_key(self._verdicts, flow.auth, None, self._scope)
            if by_command(flow.auth)
            else None
        )
        self._key: str | None = self._text_key  # None: read the secrets at the next attempt
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

    @property
    def held_key(self) -> str | None:
        """Where the session held is stored, if there is one."""
        return None if self._lease is None else self._lease.key + self._instance

    @property
    def store_kind(self) -> str:
        return self._stores.kind if self.shared else "memory"

    # ------------------------------------------------------------------ request path

    async def acquire(self) -> Lease:
        """A lease on a valid session, logging in first when there is none."""
        lease = self._lease
        if lease is not None and lease.key == self._key:
            left = lease.expires_at() - self._clock.now()
            if left > self._margin:
                return lease
            if left > 0:
                # Still usable: renew in the background and serve this request now. A
                # renewal held back (backoff, rejected) leaves the lease in use.
                if self._task is None and not self._held_back():
                    self._start(lease)
                return lease
            self._retire(lease)
            log.info("session_expired", route=self.route)
            # A token that ran out inside a still-valid session is re-minted, not re-logged.
            return await self._shared(lease if self._can_renew(lease) else None)
        # No session, or the credentials are to be read again (a reload): the task
        # checks whether the one held still belongs to them.
        return await self._shared(lease)

    async def acquire_fresh(self) -> tuple[Lease, bool]:
        """A lease for a request whose body cannot be replayed after a 401, and whether it
        was renewed for it: renewed first when near its end, or when its validity is in
        doubt (see ``_doubtful``). The renewal goes through the store: the fleet gets the
        new session, and a session another process has just made is taken, not doubted.
        """
        lease = await self.acquire()
        if not self._doubtful(lease) or self._held_back():
            return lease, False  # held back: a renewal may not start, and the lease looks valid
        try:
            fresh = await asyncio.shield(self._task or self._start(lease, doubted=lease))
        except ProxyError:
            return lease, False
        if fresh is lease:
            return lease, False
        log.info("preflight_renewal", route=self.route)
        return fresh, True

    def _doubtful(self, lease: Lease) -> bool:
        """Near its end; or unused for half its idle timeout (the vendor may have ended
        it); or taken from the store, not used here yet, and not seen in use for
        SYNC_EVERY seconds (its last user may have stopped, a restart, long before the
        vendor ended it; a session another process has just made is not in doubt)."""
        now = self._clock.now()
        if lease.expires_at() - now <= self._margin:
            return True
        quiet = now - lease.last_used
        if lease.source != "login" and not lease.used_here and quiet > SYNC_EVERY:
            return True
        idle = lease.idle_timeout
        return lease.session.sliding and idle is not None and quiet > idle / 2

    def touch(self, lease: Lease) -> None:
        """A proxied call succeeded with ``lease``: the vendor's idle clock restarted."""
        now = self._clock.now()
        lease.last_used = now
        lease.used_here = True
        if now >= self._sync_at:
            self._sync_at = now + SYNC_EVERY
            if self._sync_task is None and lease is self._lease:
                self._sync_task = asyncio.get_running_loop().create_task(self._sync(lease))

    async def settle(self, lease: Lease, status: int, *, replayable: bool) -> Lease | None:
        """What an upstream answer with ``status`` means for the session.

        Returns the lease to replay the request with, or None when the answer stands. A
        status in ``reauth_on`` drops ``lease`` (if still current) and, for a request that
        can be replayed, gets a new session: one re-login however many requests ask.
        """
        if status not in self.reauth_on:
            self.touch(lease)
            return None
        if not replayable:
            self.invalidate(lease)
            return None
        return await self.reauth(lease)

    def settle_replay(self, lease: Lease, status: int) -> None:
        """The answer to a replay: it stands, and a refusal never causes a second login."""
        if status in self.reauth_on:
            self.invalidate(lease)
        else:
            self.touch(lease)

    async def reauth(self, used: Lease) -> Lease:
        """The upstream refused ``used``: drop it (if still current) and get a new one.

        A 401 storm ends in one renewal: later callers find the lease already replaced
        or join the renewal in flight; in other processes, the stored session is deleted
        only if it is still the one refused (compare-and-delete), so they re-login once.
        """
        if self.invalidate(used):
            return await self._shared(used)
        if self._lease is not None:
            return self._lease
        return await self._shared(None)

    def invalidate(self, used: Lease) -> bool:
        """Forget ``used`` if it is still the current lease; True when it was. Its stored
        copy is deleted at the next attempt, if nobody has replaced it by then."""
        if self._lease is not used:
            return False
        self._retire(used)
        self._refused = used.version
        log.info("session_invalidated", route=self.route, reason="upstream refused it")
        return True

    # ------------------------------------------------------------------ single flight

    async def _shared(self, previous: Lease | None) -> Lease:
        task = self._task or self._start(previous)
        return await asyncio.shield(task)

    def _start(self, previous: Lease | None, doubted: Lease | None = None) -> asyncio.Task[Lease]:
        task = asyncio.get_running_loop().create_task(self._run(previous, doubted))
        task.add_done_callback(self._finished)
        self._task = task
        return task

    def _finished(self, task: asyncio.Task[Lease]) -> None:
        self._task = None
        if not task.cancelled():
            task.exception()  # retrieved here so an unawaited failure is not reported twice

    def _held_back(self) -> bool:
        """A verdict this process knows of holds a background renewal back."""
        now = self._clock.now()
        rejection = self._rejections.get(self._key or "")
        backoff = self._backoffs.get(self._key)
        return (rejection is not None and rejection.active(now)) or (
            backoff is not None and backoff.active(now)
        )

    async def _run(self, previous: Lease | None, doubted: Lease | None = None) -> Lease:
        """Get a session for ``previous``'s successor: from the store, or by logging in
        (renewing ``previous`` when its token may be re-minted). ``doubted``: the current
        lease must not be kept as it is, nor its stored copy taken."""
        started = time.perf_counter()
        key, values = await self._credentials(started)
        lease = self._lease
        if lease is not None and lease.key != key:
            # The credentials changed (a reload read a rotated secret): never used again.
            self._retire(lease)
            self._background(self._let_go(lease))
            lease = None
        left = -1.0 if lease is None else lease.expires_at() - self._clock.now()
        if lease is not None and lease is not doubted and left > self._margin:
            return lease  # the reload kept the credentials, and the session with them
        if previous is not None and (previous.key != key or not self._can_renew(previous)):
            previous = None
        doubt = None if doubted is None else doubted.version
        try:
            return await self._through_store(key, values, previous, started, doubt)
        except StoreUnavailable:
            return await self._alone(key, values, previous, started)

    async def _credentials(self, started: float) -> tuple[str, Values]:
        """The key of the credentials this attempt uses, and their secret values.

        Credentials this process saw rejected are not read again (a rotated file counts
        from the next reload, an operator's clear, or the end of the rejection); the
        store is asked whether the rejection still holds (``clear`` lifts it).
        """
        key = self._key
        now = self._clock.now()
        if key is not None:
            seen = self._rejections.get(key)
            if seen is not None and seen.active(now):
                rejection = await self._rejection(key)
                if rejection is not None:
                    raise self._refusal(key, rejection)
        elif (unreadable := self._backoffs.get(None)) is not None and unreadable.active(now):
            raise self._refusal(None, unreadable)
        if self._text_key is not None:
            return self._text_key, {}
        try:
            values = await resolve_all(self.flow.auth)
        except ProxyError as exc:  # an unreadable secret source: backed off in this process
            exc.for_route(self.route)
            await self._failed(None, exc, started)
            raise
        self._key = store_key(self._verdicts, self.flow.auth, values, self._scope)
        self._backoffs.pop(None, None)
        return self._key, values

    async def _rejection(self, key: str) -> Rejection | None:
        """The rejection in force for ``key``: the store's word, else this process's."""
        try:
            rejection = await self._op("rejection", self._verdicts.rejection(key))
        except StoreUnavailable:
            seen = self._rejections.get(key)
            return seen if seen is not None and seen.active(self._clock.now()) else None
        if rejection is None:
            self._rejections.pop(key, None)
        return rejection

    async def _through_store(
        self, key: str, values: Values, base: Lease | None, started: float, doubted: str | None
    ) -> Lease:
        """The session for ``key`` from the store, or from a login this process runs for
        every process that needs it (the store's lease keeps it to one). ``doubted``: a
        stored version not to be taken."""
        store, stored_as = self._store, key + self._instance
        refused, self._refused = self._refused, None
        if refused is not None:
            await self._op("invalidate", store.invalidate(stored_as, refused))
        if self._fresh_try:  # a reload rebuilt these sessions: no backoff holds them back
            self._fresh_try = False
            self._backoffs.pop(key, None)
            await self._op("clear", self._verdicts.clear_backoff(key))
        if not self.shared:  # verdicts kept apart from the session: single_flight cannot see them
            for verdict in await self._op("verdicts", self._verdicts_of(key)):
                raise self._refusal(key, verdict)
        record = await self._op("get", store.get(stored_as))
        stale = refused
        if record is not None and record.version != refused:
            stored = payload.decode(record.payload)
            idle, _ = self._idle_of(stored)
            taken = stored is not None and record.version != doubted
            if taken and stored is not None and self._fresh(stored.session, record.last_used, idle):
                return self._take(record, stored, key)
            stale = record.version
            if (
                stored is not None
                and base is None
                and self._can_renew_session(stored.session, record.last_used, idle)
            ):
                base = self._lease_of(record, stored, key, self._register())  # renewed below
        published: list[str] = []
        fresh: list[Stored] = []

        async def login(held: Held) -> Record:
            made = await self._login(key, values, base, started)
            fresh.append(made)
            record = await store.publish(
                held.lease,
                payload.encode(*made),
                expires_at=self._stored_until(
                    made.session, self._clock.now(), self._idle_of(made)[0]
                ),
            )
            published.append(record.version)
            return record

        try:
            outcome = await self._op(
                "flight",
                single_flight(
                    store,
                    stored_as,
                    login,
                    stale=stale,
                    ttl=self._stores.lease_ttl,
                    timeout=LOGIN_WAIT,
                ),
            )
        except (LeaseLost, StoreUnavailable) as exc:
            if not fresh:
                raise
            # Logged in, but the result could not be shared: used here only.
            log.warning("session_not_shared", route=self.route, reason=type(exc).__name__)
            return self._install(fresh[0], key)
        if isinstance(outcome, Record):
            if published and outcome.version == published[0]:
                await self._cleared_after_login(key)
                return self._install(fresh[0], key, outcome)
            stored = payload.decode(outcome.payload)
            if stored is None:
                raise LoginFailed(
                    "the stored session cannot be read (written by another version of auth-proxy?)",
                    route=self.route,
                )
            return self._take(outcome, stored, key)
        if outcome is None:
            raise LoginFailed(
                f"no session from another process's login within {LOGIN_WAIT:.0f}s",
                route=self.route,
            )
        raise self._refusal(key, outcome)

    async def _verdicts_of(self, key: str) -> list[Rejection | Backoff]:
        now = self._clock.now()
        rejection = await self._verdicts.rejection(key)
        backoff = await self._verdicts.backoff_state(key)
        return [v for v in (rejection, backoff) if v is not None and v.active(now)]

    async def _cleared_after_login(self, key: str) -> None:
        """A login worked: publishing cleared the verdicts kept with the session; verdicts
        kept apart (memory) are cleared here."""
        if not self.shared:
            await self._op("clear", self._verdicts.clear_backoff(key))

    async def _alone(self, key: str, values: Values, base: Lease | None, started: float) -> Lease:
        """The store cannot be reached: log in for this process only, unless this process
        knows the credentials are rejected or backed off."""
        self._observer.store_fallback(self.route)
        log.warning(
            "session_store_unavailable",
            route=self.route,
            store=self._stores.kind,
            fallback="logging in for this process only",
        )
        now = self._clock.now()
        rejection = self._rejections.get(key)
        if rejection is not None and rejection.active(now):
            raise self._refusal(key, rejection)
        backoff = self._backoffs.get(key)
        if backoff is not None and backoff.active(now):
            raise self._refusal(key, backoff)
        return self._install(await self._login(key, values, base, started), key)

    def _refusal(self, key: str | None, verdict: Rejection | Backoff) -> ProxyError:
        """The error for a verdict in force, remembered by this process."""
        self.last_error = verdict.message
        if isinstance(verdict, Rejection):
            if key is not None:
                self._rejections[key] = verdict
            return LoginRejected(verdict.message, route=self.route)
        self._backoffs[key] = verdict
        return LoginBackoff(
            f"the last login failed ({verdict.message}); retrying in a moment",
            route=self.route,
            retry_after=verdict.until - self._clock.now(),
        )

    # ------------------------------------------------------------------ logging in

    async def _login(self, key: str, values: Values, base: Lease | None, started: float) -> Stored:
        """Run the flow (a renewal of ``base``, else a login). A refusal or failure is
        recorded as the store's verdict for ``key`` before it is raised. After a login the
        vendor is asked for its idle timeout; a renewal keeps what was learned."""
        renewing = base is not None
        # Masked while the attempt runs: the session it renews (its lease may be retired
        # already) and every value it resolves, kept afterwards as the route's latest.
        renewed = self._register(*(base.session.secrets if base is not None else ()))
        resolved = self._register()
        try:
            gen = self.flow.renew(base.session) if base is not None else self.flow.login()
            session = await self._drive(gen, values, resolved, renewed)
        except LoginRejected as exc:
            exc.for_route(self.route)
            await self._rejected(key, exc, started)
            raise
        except ProxyError as exc:
            exc.for_route(self.route)
            await self._failed(key, exc, started)
            raise
        except Exception as exc:  # a flow bug must not wedge the route
            log.exception("login_crashed", route=self.route)
            err = LoginFailed(f"login failed unexpectedly ({type(exc).__name__})", route=self.route)
            await self._failed(key, err, started)
            raise err from None
        except asyncio.CancelledError:
            resolved.release()  # logged out: nothing of this attempt is kept
            raise
        finally:
            renewed.release()
            self._resolved.release()
            self._resolved = resolved
        self._backoffs.pop(key, None)
        self.last_error = None
        elapsed = time.perf_counter() - started
        self._observer.login(self.route, "ok", elapsed)
        log.info(
            "session_renewed" if renewing else "login_ok",
            route=self.route,
            seconds=round(elapsed, 3),
            upstream=session.upstream,
            org=session.org,
        )
        if base is not None:
            return Stored(session, base.stored.vendor_idle)
        made = Stored(session, await self._vendor_idle(session))
        self._logins.record(self._clock.now(), self._idle_of(made)[0])
        return made

    async def _vendor_idle(self, session: Session) -> float | None:
        """The org's idle timeout for a session just logged in, unless the config sets one
        (it wins) or the session does not slide; None when the vendor cannot say."""
        if self._idle_source == "config" or not session.sliding:
            return None
        found = await org_idle_timeout(self.flow, session, self._execute)
        if found is not None:
            log.info("org_idle_timeout", route=self.route, seconds=found)
        return found

    def _idle_of(self, stored: Stored | None) -> Idle:
        """The idle timeout this route runs for ``stored``: the configured one, else the
        vendor's (learned by whichever process logged in), else the default."""
        if stored is not None and stored.vendor_idle is not None and self._idle_source != "config":
            return stored.vendor_idle, "vendor"
        return self._idle_timeout, self._idle_source

    async def _rejected(self, key: str, exc: LoginRejected, started: float) -> None:
        until = self._clock.now() + self._retry_after
        self._rejections[key] = Rejection(until, exc.message, key)
        self.last_error = exc.message
        self._observer.login(self.route, "rejected", time.perf_counter() - started)
        log.warning(
            "login_rejected", route=self.route, reason=exc.message, retry_after=self._retry_after
        )
        with contextlib.suppress(StoreUnavailable):  # this process remembers it anyway
            await self._op("reject", self._verdicts.reject(key, until=until, message=exc.message))

    async def _failed(self, key: str | None, exc: ProxyError, started: float) -> None:
        """A transient failure: every process backs off, each time twice as long."""
        prior = self._backoffs.get(key)
        if key is not None:
            with contextlib.suppress(StoreUnavailable):
                prior = await self._op("backoff_state", self._verdicts.backoff_state(key)) or prior
        step = min(BACKOFF_MAX, prior.step * 2 if prior is not None else BACKOFF_FIRST)
        until = self._clock.now() + step
        self._backoffs[key] = Backoff(until, step, exc.message)
        self.last_error = exc.message
        self._observer.login(self.route, exc.code, time.perf_counter() - started)
        log.warning(
            "login_failed", route=self.route, code=exc.code, reason=exc.message, backoff=step
        )
        if key is not None:
            with contextlib.suppress(StoreUnavailable):
                await self._op(
                    "backoff",
                    self._verdicts.backoff(key, until=until, step=step, message=exc.message),
                )

    async def _drive(
        self, gen: FlowGen, values: Values, resolved: Registration, renewed: Registration
    ) -> Session:
        """Run a flow to its session; each secret value it uses is added to ``resolved``."""

        async def secret(source: Secret) -> str:
            value = values.get(source)
            if value is None:
                value = await source.resolve()
            resolved.add(value)
            return value

        async def call(request: LoginRequest) -> LoginResponse:
            log.debug(
                "login_call",
                route=self.route,
                purpose=request.purpose,
                method=request.method,
                url=request.url,
                headers=dict(request.headers),
            )
            return await self._execute(request)

        try:
            return await drive(gen, secret=secret, call=call)
        except ProxyError as exc:
            # A vendor's refusal may quote what it was sent ("password 'x' is wrong"):
            # scrubbed of this attempt's secrets before it is stored, logged or answered,
            # whatever the log redactor happens to hold.
            exc.message = scrub(exc.message, (*resolved.values, *renewed.values))
            exc.args = (exc.message,)
            raise

    # ------------------------------------------------------------------ leases

    def _fresh(self, session: Session, last_used: float, idle: float | None) -> bool:
        end = session_end(session, last_used, idle)
        return end - self._clock.now() > self._margin

    def _stored_until(self, session: Session, last_used: float, idle: float | None) -> float:
        end = session_end(session, last_used, idle)
        return min(end, self._clock.now() + MAX_STORED)

    def _install(self, made: Stored, key: str, record: Record | None = None) -> Lease:
        """Make ``made`` (logged in by this process) the current session."""
        now = self._clock.now()
        idle, source = self._idle_of(made)
        lease = Lease(
            made.session,
            now if record is None else record.logged_in_at,
            now if record is None else record.last_used,
            idle,
            self._register(*made.session.secrets),
            idle_source=source,
            key=key,
            version=None if record is None else record.version,
            origin=None if record is None else record.origin,
            written=now if record is None else record.last_used,
        )
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
        lease = self._lease_of(record, stored, key, self._register(*stored.session.secrets))
        self._replace(lease)
        log.info(
            "session_from_store",
            route=self.route,
            source=lease.source,
            origin_host=record.origin.host,
            origin_pid=record.origin.pid,
        )
        return lease

    def _lease_of(self, record: Record, stored: Stored, key: str, held: Registration) -> Lease:
        idle, source = self._idle_of(stored)
        return Lease(
            stored.session,
            record.logged_in_at,
            record.last_used,
            idle,
            held,
            idle_source=source,
            key=key,
            version=record.version,
            source=_source(record.origin),
            origin=record.origin,
            written=record.last_used,
        )

    def _replace(self, lease: Lease) -> None:
        if self._lease is not None:  # renewed ahead of its end: replaced now
            self._retire(self._lease)
        self._lease = lease
        self._backoffs.pop(lease.key, None)
        self._rejections.pop(lease.key, None)
        self.last_error = None
        self._sync_at = self._clock.now() + SYNC_EVERY if self.shared else float("inf")
        self._observer.session_source(self.route, lease.source)

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

    async def _sync(self, lease: Lease) -> None:
        """Write back the last use (sliding expiry) and look for another process's newer
        session. Runs in the background, at most every SYNC_EVERY seconds of use."""
        try:
            await self._sync_once(lease)
        except StoreError:
            pass  # counted and logged by _op; the session held keeps serving
        finally:
            self._sync_task = None

    async def _sync_once(self, lease: Lease) -> None:
        store, key = self._store, lease.key
        if lease.version is not None and lease.session.sliding and lease.last_used > lease.written:
            used = lease.last_used
            until = self._stored_until(lease.session, used, lease.idle_timeout)
            if await self._op("touch", store.touch(key, lease.version, used, until)):
                lease.written = used
        record = await self._op("get", store.get(key))
        if self._lease is not lease or self._task is not None:
            return  # replaced meanwhile, or a login is under way
        if record is None:
            if lease.version is None:
                await self._restore(lease)
            return
        stored = payload.decode(record.payload)
        if stored is not None and (
            record.version == lease.version
            or self._fresh(stored.session, record.last_used, self._idle_of(stored)[0])
        ):
            self._take(record, stored, key)

    async def _restore(self, lease: Lease) -> None:
        """A session this process logged in while the store was down: shared now."""
        store = self._store
        held = await self._op("acquire", store.acquire(lease.key, self._stores.lease_ttl))
        if held is None:
            return
        async with store.hold(held):
            if await self._op("get", store.get(lease.key)) is not None:
                return
            record = await self._op(
                "publish",
                store.publish(
                    held,
                    payload.encode(*lease.stored),
                    expires_at=self._stored_until(
                        lease.session, lease.last_used, lease.idle_timeout
                    ),
                    logged_in_at=lease.logged_in_at,
                    kind="restored",
                ),
            )
        lease.version, lease.written = record.version, record.last_used
        log.info("session_restored", route=self.route)

    def _background(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ visibility

    def status(self) -> SessionStatus:
        now = self._clock.now()
        lease = self._lease
        if self._task is not None and lease is None:
            state = "logging_in"
        elif lease is not None and lease.expires_at() > now:
            state = "active"
        elif self._verdict_seen(self._rejections, now):
            state = "rejected"
        elif self._verdict_seen(self._backoffs, now):
            state = "backoff"
        else:
            state = "none"
        st = SessionStatus(
            state=state,
            last_error=self.last_error,
            idle_timeout=self._idle_timeout,
            idle_timeout_source=self._idle_source,
            logins_last_hour=self._logins.count(now, HOUR),
            logins_last_day=self._logins.count(now, DAY),
        )
        if lease is not None:
            st.idle_timeout, st.idle_timeout_source = lease.idle_timeout, lease.idle_source
            exp = lease.expires_at()
            st.logged_in_at = lease.logged_in_at
            st.expires_at = None if exp == float("inf") else exp
            st.org = lease.session.org
            st.upstream = lease.session.upstream
        return st

    def _verdict_seen(self, seen: dict[Any, Any], now: float) -> bool:
        """A verdict in force for the current credentials (any, when not read yet)."""
        if self._key is not None:
            verdict = seen.get(self._key)
            return verdict is not None and verdict.active(now)
        return any(v.active(now) for v in seen.values())

    async def describe(self) -> dict[str, Any]:
        """The store's side of ``/-/sessions``: where the session came from, who holds the
        login lease, whether the store answers."""
        lease = self._lease
        holder = None
        reachable = self._store_ok
        if self._key is not None:
            try:
                found = await self._op(
                    "holder", self._store.lease_holder(self._key + self._instance)
                )
            except StoreUnavailable:
                reachable = False
            else:
                reachable = True
                if found is not None:
                    holder = {
                        "host": found.host,
                        "pid": found.pid,
                        "expires_in": round(found.expires_in, 3),
                    }
        origin = lease.origin if lease is not None else None
        return {
            "store": self.store_kind,
            "store_reachable": reachable,
            "source": lease.source if lease is not None else None,
            "origin": None if origin is None else {"host": origin.host, "pid": origin.pid},
            "login_lease": holder,
        }

    # ------------------------------------------------------------------ operators

    def after_reload(self) -> None:
        """A reload built these sessions (the route is new, or its auth or connection
        settings changed): a backoff recorded for its credentials is lifted at its first
        attempt, since the change may be the fix. A rejection still holds."""
        self._fresh_try = True

    def reread_credentials(self) -> None:
        """The config was reloaded: the next request reads the secret sources anew, and a
        session made with other credentials (a rotated secret) is not used again.

        The same values stay rejected; a {command} is not run for this: its text decides.
        """
        self._key = self._text_key

    async def key(self) -> str | None:
        """Where a session for the current credentials (read now if not known) is
        stored, or None if the secrets cannot be read."""
        key = await self._credentials_key()
        return None if key is None else key + self._instance

    async def _credentials_key(self) -> str | None:
        if self._key is None:
            try:
                values = await resolve_all(self.flow.auth)
            except ProxyError:
                return None
            self._key = store_key(self._verdicts, self.flow.auth, values, self._scope)
        return self._key

    async def clear_lockout(self) -> bool:
        """Let the next request log in again (the operator says so); True if rejected.

        The rejection (and any backoff) is lifted in every process sharing the store.
        """
        now = self._clock.now()
        lifted = any(r.active(now) for r in self._rejections.values())
        key = await self._credentials_key()
        if key is not None:
            with contextlib.suppress(StoreUnavailable):
                lifted = await self._op("clear", self._verdicts.clear_rejection(key)) or lifted
                await self._op("clear", self._verdicts.clear_backoff(key))
        self._rejections.clear()
        self._backoffs.clear()
        if lifted:
            log.info("login_lockout_cleared", route=self.route)
        return lifted

    def forget(self, stored_as: str) -> None:
        """Another route logged the session stored as ``stored_as`` out: stop using it."""
        lease = self._lease
        if lease is not None and self.held_key == stored_as:
            self._retire(lease)

    async def logout(self) -> bool:
        """End the session at the vendor and remove it from the store (``auth-proxy
        logout``); True if there was one. Every process holding it finds out at its next
        call (a 401), and logs in once."""
        key = self.held_key or await self.key()
        if key is None:
            return False
        lease = self._lease
        sessions: dict[str | None, Session] = {}
        if lease is not None:
            self._retire(lease)
            sessions[lease.version] = lease.session
        try:
            record = await self._op("get", self._store.get(key))
            if record is not None:
                stored = payload.decode(record.payload)
                if stored is not None:
                    sessions.setdefault(record.version, stored.session)
                await self._op("remove", self._store.remove(key))
        except StoreUnavailable:  # the stored copy stays; the one held here still ends
            log.warning("logout_store_unavailable", route=self.route)
        for session in sessions.values():
            await self._vendor_logout(session)
        return bool(sessions)

    async def shutdown(self) -> None:
        """The process stops. A stored session stays for the next process (and the
        others); with ``memory``, or a session only this process had, it is logged out."""
        lease, self._lease = self._lease, None
        self._stop_tasks()
        self._resolved.release()
        if lease is None:
            return
        try:
            if not (self.shared and lease.version is not None):
                await self._vendor_logout(lease.session)
        finally:
            lease.held.release()

    async def release(self, in_use: bool) -> None:
        """A reload dropped this route or changed its credentials: log its session out
        unless something still uses it (``in_use``: a route of the new config has the
        same credentials)."""
        lease, self._lease = self._lease, None
        self._stop_tasks()
        self._resolved.release()
        if lease is not None:
            await self._let_go(lease, in_use)

    async def _let_go(self, lease: Lease, in_use: bool = False) -> None:
        """Log ``lease`` out if no route here and, as far as the store shows, no other
        process uses it: the stored record is still this version and nobody has written
        a use of it since this process last did."""
        try:
            logout, reason = not in_use, "another route uses it"
            if logout and self.shared and lease.version is not None:
                try:
                    record = await self._op("get", self._store.get(lease.key))
                except StoreUnavailable:
                    record, reason = None, "the store cannot tell who uses it"
                else:
                    reason = "another process uses it"
                logout = (
                    record is not None
                    and record.version == lease.version
                    and record.last_used <= lease.written
                )
                if logout:
                    await self._op("invalidate", self._store.invalidate(lease.key, lease.version))
            log.info(
                "session_released",
                route=self.route,
                logout=logout,
                reason=None if logout else reason,
            )
            if logout:
                await self._vendor_logout(lease.session)
        except StoreUnavailable:
            pass
        finally:
            lease.held.release()

    def _stop_tasks(self) -> None:
        for task in (self._task, self._sync_task):
            if task is not None:
                task.cancel()

    async def _vendor_logout(self, session: Session) -> None:
        """The vendor call that ends ``session``. Errors are logged, not raised."""
        try:
            request = self.flow.logout(session)
            if request is None:
                return
            response = await self._execute(request)
            log.info("logout", route=self.route, status=response.status)
        except Exception as exc:
            log.warning("logout_failed", route=self.route, error=type(exc).__name__)

"""One cached vendor session per route, and the rules that keep accounts safe.

See the README, "Sessions and lockout safety".

``RouteSessions.acquire()`` is on every request's path, so its fast path is a few
comparisons. Everything else — logging in, renewing, backing off — happens in at most
one task per route at a time (single flight): concurrent requests wait on that task
through ``asyncio.shield`` so a cancelled client never cancels the login the others
are waiting for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from proxy.core.clock import Clock
from proxy.core.errors import LoginBackoff, LoginFailed, LoginRejected, ProxyError
from proxy.core.masking import scrub
from proxy.core.secrets import Secret
from proxy.flows.base import Flow, FlowGen, LoginRequest, LoginResponse, Session
from proxy.flows.driver import drive
from proxy.ops.logs import REDACTOR, Registration
from proxy.sessions.credentials import Values, by_command, fingerprint, resolve_all
from proxy.sessions.lockout import LocalLockouts, Lockout, Lockouts
from proxy.sessions.pacing import DAY, HOUR, LoginLog, org_idle_timeout

log = structlog.get_logger("auth_proxy.sessions")

Executor = Callable[[LoginRequest], Awaitable[LoginResponse]]
LoginObserver = Callable[[str, str, float], None]  # route, result, seconds
Register = Callable[..., Registration]  # masks values in logs until released

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0


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
    _fixed_end: float = field(init=False)  # the earliest absolute end (JWT exp, ...)
    _idle: float | None = field(init=False)  # the sliding timeout, if it applies

    def __post_init__(self) -> None:
        ends = [t for t in (self.session.hard_expiry, self.session.token_expiry) if t is not None]
        self._fixed_end = min(ends) if ends else float("inf")
        self._idle = self.idle_timeout if self.session.sliding else None

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
    logins_last_hour: int = 0
    logins_last_day: int = 0


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
        on_login: LoginObserver = lambda _route, _result, _seconds: None,
        lockouts: Lockouts | None = None,
    ) -> None:
        self.route = route
        self._lockouts = lockouts if lockouts is not None else LocalLockouts()
        self.flow = flow
        # Answers that mean "this session is no longer valid"; none when a new login
        # cannot cure them (a static API key).
        self.reauth_on = frozenset(reauth_on if flow.can_relogin else ())
        self._execute = execute
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._idle_source = idle_timeout_source  # config, or default: the vendor may say
        self._logins = LoginLog(route)
        self._margin = refresh_margin
        self._retry_after = login_retry_after
        self._register = on_secret
        self._resolved = on_secret()  # what the latest login resolved (a password, ...)
        self._on_login = on_login
        self._lease: Lease | None = None
        self._task: asyncio.Task[Lease] | None = None
        # A lockout holds for the credentials it rejected. These are fingerprinted when a
        # login attempt reads them (None: not read since the last (re)load), except a
        # {command} route's, which are fingerprinted by their config text.
        self._by_text = (
            fingerprint(self._lockouts.key, flow.auth, None) if by_command(flow.auth) else None
        )
        self._credentials = self._by_text
        self._backoff_until = 0.0
        self._backoff_step = 0.0
        self.last_error: str | None = None

    # ------------------------------------------------------------------ request path

    async def acquire(self) -> Lease:
        """A lease on a valid session, logging in first when there is none."""
        lease = self._lease
        if lease is not None:
            left = lease.expires_at() - self._clock.now()
            if left > self._margin:
                return lease
            if left > 0:
                # Still usable: renew in the background and serve this request now. A
                # renewal that may not start (backoff, rejected) leaves the lease in use.
                with contextlib.suppress(ProxyError):
                    self._start(lease)
                return lease
            self._retire(lease)
            log.info("session_expired", route=self.route)
            # A token that ran out inside a still-valid session is re-minted, not re-logged.
            return await self._shared(lease if self._can_renew(lease) else None)
        return await self._shared(None)

    async def acquire_fresh(self) -> tuple[Lease, bool]:
        """A lease for a request whose body cannot be replayed after a 401, and whether it
        was renewed for it: renewed first when near its end, or when its validity is in
        doubt (unused for half its idle timeout, so the vendor may have ended it).
        """
        lease = self._lease
        if lease is None or not self._doubtful(lease):
            return await self.acquire(), False
        try:
            renewed = await self._shared(lease)
        except ProxyError:  # a renewal that may not start: the lease still looks valid
            return lease, False
        log.info("preflight_renewal", route=self.route)
        return renewed, True

    def _doubtful(self, lease: Lease) -> bool:
        now = self._clock.now()
        if lease.expires_at() - now <= self._margin:
            return True
        idle = lease.idle_timeout
        return lease.session.sliding and idle is not None and now - lease.last_used > idle / 2

    def touch(self, lease: Lease) -> None:
        """A proxied call succeeded with ``lease``: the vendor's idle clock restarted."""
        lease.last_used = self._clock.now()

    def settle(
        self, lease: Lease, status: int, *, replayable: bool
    ) -> Coroutine[Any, Any, Lease] | None:
        """What an upstream answer with ``status`` means for the session.

        None when the answer stands; else the renewal to await, whose lease the request is
        replayed with. A status in ``reauth_on`` drops ``lease`` (if still current) and,
        for a request that can be replayed, gets a new session: one re-login however many
        requests ask. (Not a coroutine itself: the common answer costs no task switch.)
        """
        if status not in self.reauth_on:
            self.touch(lease)
            return None
        if not replayable:
            self.invalidate(lease)
            return None
        return self.reauth(lease)

    def settle_replay(self, lease: Lease, status: int) -> None:
        """The answer to a replay: it stands, and a refusal never causes a second login."""
        if status in self.reauth_on:
            self.invalidate(lease)
        else:
            self.touch(lease)

    async def reauth(self, used: Lease) -> Lease:
        """The upstream refused ``used``: drop it (if still current) and get a new one.

        A 401 storm ends in one renewal: later callers find the lease already replaced
        or join the renewal in flight.
        """
        if self.invalidate(used):
            return await self._shared(used)
        if self._lease is not None:
            return self._lease
        return await self._shared(None)

    def invalidate(self, used: Lease) -> bool:
        """Forget ``used`` if it is still the current lease; True when it was."""
        if self._lease is not used:
            return False
        self._retire(used)
        log.info("session_invalidated", route=self.route, reason="upstream refused it")
        return True

    # ------------------------------------------------------------------ single flight

    async def _shared(self, previous: Lease | None) -> Lease:
        task = self._task or self._start(previous)
        return await asyncio.shield(task)

    def _start(self, previous: Lease | None) -> asyncio.Task[Lease]:
        if self._task is not None:
            return self._task
        if self._credentials is not None:  # else the attempt reads them, then checks
            lockout = self._lockout(self._credentials)
            if lockout is not None:
                raise LoginRejected(lockout.message, route=self.route)
        now = self._clock.now()
        if now < self._backoff_until:
            raise LoginBackoff(
                f"the last login failed ({self.last_error}); retrying in a moment",
                route=self.route,
                retry_after=self._backoff_until - now,
            )
        task = asyncio.get_running_loop().create_task(self._run(previous))
        task.add_done_callback(self._finished)
        self._task = task
        return task

    def _finished(self, task: asyncio.Task[Lease]) -> None:
        self._task = None
        if not task.cancelled():
            task.exception()  # retrieved here so an unawaited failure is not reported twice

    async def _run(self, previous: Lease | None) -> Lease:
        renewing = previous is not None and self._can_renew(previous)
        started = time.perf_counter()
        kind = "renew" if renewing else "login"
        # Masked while the attempt runs: the session it renews (its lease may be retired
        # already) and every value it resolves, kept afterwards as the route's latest.
        renewed = self._register(*(previous.session.secrets if renewing and previous else ()))
        resolved = self._register()
        try:
            values, credentials = await self._read_credentials()
        except ProxyError as exc:  # an unreadable secret source
            exc.for_route(self.route)
            self._fail(exc, started)
            raise
        # Rejected before (by another worker, or before a reload that kept them): not again.
        lockout = self._lockout(credentials)
        if lockout is not None:
            raise LoginRejected(lockout.message, route=self.route)
        try:
            gen = self.flow.renew(previous.session) if renewing and previous else self.flow.login()
            session = await self._drive(gen, values, resolved, renewed)
        except LoginRejected as exc:
            exc.for_route(self.route)
            until = self._clock.now() + self._retry_after
            self._lockouts.put(self.route, Lockout(until, exc.message, credentials))
            self.last_error = exc.message
            self._on_login(self.route, "rejected", time.perf_counter() - started)
            log.warning(
                "login_rejected",
                route=self.route,
                reason=exc.message,
                retry_after=self._retry_after,
            )
            raise
        except ProxyError as exc:
            exc.for_route(self.route)
            self._fail(exc, started)
            raise
        except Exception as exc:  # a flow bug must not wedge the route
            log.exception("login_crashed", route=self.route)
            err = LoginFailed(f"login failed unexpectedly ({type(exc).__name__})", route=self.route)
            self._fail(err, started)
            raise err from None
        except asyncio.CancelledError:
            resolved.release()  # logged out: nothing of this attempt is kept
            raise
        finally:
            renewed.release()
            self._resolved.release()
            self._resolved = resolved
        idle, source = await self._idle_for(session, kind)
        now = self._clock.now()
        if self._lease is not None:  # renewed ahead of its end: replaced now
            self._retire(self._lease)
        held = self._register(*session.secrets)
        self._lease = Lease(session, now, now, idle, held, idle_source=source)
        if kind == "login":
            self._logins.record(now, idle)
        self._backoff_step = 0.0
        self.last_error = None
        elapsed = time.perf_counter() - started
        self._on_login(self.route, "ok", elapsed)
        log.info(
            "login_ok" if kind == "login" else "session_renewed",
            route=self.route,
            seconds=round(elapsed, 3),
            upstream=session.upstream,
            org=session.org,
        )
        return self._lease

    async def _idle_for(self, session: Session, kind: str) -> tuple[float | None, str]:
        """The idle timeout of a new session: the vendor's when it says (asked after a
        login, unless the config sets one), else the configured or default one."""
        if kind == "login" and self._idle_source != "config" and session.sliding:
            found = await org_idle_timeout(self.flow, session, self._execute)
            if found is not None:
                log.info("org_idle_timeout", route=self.route, seconds=found)
                return found, "vendor"
        if kind != "login" and self._lease is not None:  # a renewal keeps what was learned
            return self._lease.idle_timeout, self._lease.idle_source
        return self._idle_timeout, self._idle_source

    async def _read_credentials(self) -> tuple[Values, str]:
        """The secret values this attempt will use, and their fingerprint."""
        if self._by_text is not None:  # a {command} runs when the flow asks for it, only then
            return {}, self._by_text
        values = await resolve_all(self.flow.auth)
        self._credentials = fingerprint(self._lockouts.key, self.flow.auth, values)
        return values, self._credentials

    def _lockout(self, credentials: str | None) -> Lockout | None:
        """The lockout in force for ``credentials`` (None: unknown, so any lockout)."""
        lockout = self._lockouts.get(self.route)
        if lockout is None or self._clock.now() >= lockout.until:
            return None
        if credentials is not None and lockout.credentials != credentials:
            return None
        return lockout

    def _fail(self, exc: ProxyError, started: float) -> None:
        self._backoff_step = min(BACKOFF_MAX, self._backoff_step * 2 or BACKOFF_FIRST)
        self._backoff_until = self._clock.now() + self._backoff_step
        self.last_error = exc.message
        self._on_login(self.route, exc.code, time.perf_counter() - started)
        log.warning(
            "login_failed",
            route=self.route,
            code=exc.code,
            reason=exc.message,
            backoff=self._backoff_step,
        )

    def _can_renew(self, lease: Lease) -> bool:
        """Renew (not log in) only when a renewable token runs out before the session."""
        s = lease.session
        if s.token_expiry is None:
            return False
        now = self._clock.now()
        session_left = (s.hard_expiry if s.hard_expiry is not None else float("inf")) - now
        if s.sliding and self._idle_timeout is not None:
            session_left = min(session_left, lease.last_used + self._idle_timeout - now)
        return session_left > self._margin

    def _retire(self, lease: Lease) -> None:
        """``lease`` is no longer the current one: its secrets may leave the redactor."""
        if self._lease is lease:
            self._lease = None
        lease.held.release()

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

    # ------------------------------------------------------------------ lifecycle

    def status(self) -> SessionStatus:
        now = self._clock.now()
        lease = self._lease
        if self._task is not None and lease is None:
            state = "logging_in"
        elif lease is not None and lease.expires_at() > now:
            state = "active"
        elif self._lockout(self._credentials) is not None:
            state = "rejected"
        elif now < self._backoff_until:
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

    def reread_credentials(self) -> None:
        """The config was reloaded: the next login attempt reads the secret sources anew.

        Rotated values are new credentials, which a lockout does not hold back; the same
        values stay locked out. A {command} is not run for this: its text decides.
        """
        self._credentials = self._by_text

    def clear_lockout(self) -> bool:
        """Let the next request log in again (the operator says so); True if locked out.

        The lockout is lifted in every worker: they share ``Lockouts``.
        """
        lockout = self._lockouts.get(self.route)
        self._lockouts.clear(self.route)
        if lockout is None or self._clock.now() >= lockout.until:
            return False
        log.info("login_lockout_cleared", route=self.route)
        return True

    async def logout(self) -> None:
        """End the vendor session (shutdown, removed route). Errors are logged, not raised."""
        lease, self._lease = self._lease, None
        if self._task is not None:
            self._task.cancel()
        self._resolved.release()
        if lease is None:
            return
        try:
            request = self.flow.logout(lease.session)
            if request is None:
                return
            response = await self._execute(request)
            log.info("logout", route=self.route, status=response.status)
        except Exception as exc:
            log.warning("logout_failed", route=self.route, error=type(exc).__name__)
        finally:
            lease.held.release()

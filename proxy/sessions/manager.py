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
import time
from collections.abc import Coroutine
from typing import Any

import structlog

from proxy.core.errors import ProxyError
from proxy.sessions.core import SYNC_EVERY
from proxy.sessions.ending import Ending
from proxy.sessions.flight import StoreFlight
from proxy.sessions.lease import Lease, SessionStatus
from proxy.sessions.pacing import DAY, HOUR
from proxy.sessions.sync import Syncing
from proxy.store import StoreUnavailable

log = structlog.get_logger("auth_proxy.sessions")


class RouteSessions(StoreFlight, Syncing, Ending):
    """A route's sessions: the request path (``acquire``, ``settle``...), what is shown
    of them, and what operators and reloads do; the parts are in the mixins' modules
    (``core`` lists them)."""

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
        return self._known_verdict(self._key) is not None

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

    # ------------------------------------------------------------------ visibility

    def status(self) -> SessionStatus:
        now = self._clock.now()
        lease = self._lease
        rejected = self._verdict_seen(self._rejections, now)
        backoff = self._verdict_seen(self._backoffs, now)
        if self._task is not None and lease is None:
            state = "logging_in"
        elif lease is not None and lease.expires_at() > now:
            state = "active"
        elif rejected is not None:
            state = "rejected"
        elif backoff is not None:
            state = "backoff"
        else:
            state = "none"
        st = SessionStatus(
            state=state,
            retry_at=rejected if rejected is not None else backoff,
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

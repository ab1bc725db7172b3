"""One login for every process that needs a session: the stored session when it is
fresh, else the store's single flight across processes and machines
(``proxy.store.single_flight``): one process logs in and publishes, the others take its
session (or obey its verdict). When the store cannot be reached, the process logs in for
itself alone, unless it knows the credentials are rejected or backed off.
"""

from __future__ import annotations

import structlog

from proxy.core.errors import LoginFailed
from proxy.sessions import payload
from proxy.sessions.credentials import Values
from proxy.sessions.lease import Lease
from proxy.sessions.login import Login
from proxy.sessions.payload import Stored
from proxy.store import Held, LeaseLost, Record, StoreUnavailable, Verdict, single_flight

log = structlog.get_logger("auth_proxy.sessions")

LOGIN_WAIT = 120.0  # the longest a request waits for another process's login


class StoreFlight(Login):
    async def _through_store(
        self, key: str, values: Values, base: Lease | None, started: float, doubted: str | None
    ) -> Lease:
        """The session for ``key`` from the store, or from a login this process runs for
        every process that needs it (the store's lease keeps it to one). ``doubted``: a
        stored version not to be taken."""
        stored_as = key + self._instance
        refused = await self._before_flight(key, stored_as)
        record = await self._op("get", self._store.get(stored_as))
        stale = refused
        if record is not None and record.version != refused:
            stored = payload.decode(record.payload)
            if stored is not None:
                idle, _ = self._idle_of(stored)
                fresh = self._fresh(stored.session, record.last_used, idle)
                if fresh and record.version != doubted:
                    return self._take(record, stored, key)
                if base is None and self._can_renew_session(stored.session, record.last_used, idle):
                    base = self._lease_for(stored, key, self._register(), record)  # renewed below
            stale = record.version
        return await self._flight(key, values, base, started, stale)

    async def _before_flight(self, key: str, stored_as: str) -> str | None:
        """Before this attempt looks at the store: the stored session a 401 condemned is
        deleted (if nobody has replaced it), a backoff a reload may have cured is lifted,
        and the verdicts kept apart from the sessions (memory) are obeyed. Returns the
        condemned version."""
        refused, self._refused = self._refused, None
        if refused is not None:
            await self._op("invalidate", self._store.invalidate(stored_as, refused))
        if self._fresh_try:  # a reload rebuilt these sessions: no backoff holds them back
            self._fresh_try = False
            self._backoffs.pop(key, None)
            await self._op("clear", self._verdicts.clear_backoff(key))
        if not self.shared:  # verdicts kept apart from the session: single_flight cannot see them
            for verdict in await self._op("verdicts", self._stored_verdicts(key)):
                raise self._refusal(key, verdict)
        return refused

    async def _flight(
        self, key: str, values: Values, base: Lease | None, started: float, stale: str | None
    ) -> Lease:
        """The store's single flight for ``key``: this process logs in and publishes, or
        takes what another process published (a session that is not version ``stale``)."""
        store = self._store
        published: list[str] = []
        fresh: list[Stored] = []

        async def login(held: Held) -> Record:
            made = await self._login(key, values, base, started)
            fresh.append(made)
            until = self._stored_until(made.session, self._clock.now(), self._idle_of(made)[0])
            record = await store.publish(held.lease, payload.encode(*made), expires_at=until)
            published.append(record.version)
            return record

        ttl = self._stores.lease_ttl
        flight = single_flight(
            store, key + self._instance, login, stale=stale, ttl=ttl, timeout=LOGIN_WAIT
        )
        try:
            outcome = await self._op("flight", flight)
        except (LeaseLost, StoreUnavailable) as exc:
            if not fresh:
                raise
            # Logged in, but the result could not be shared: used here only.
            log.warning("session_not_shared", route=self.route, reason=type(exc).__name__)
            return self._install(fresh[0], key)
        if isinstance(outcome, Record) and published and outcome.version == published[0]:
            if not self.shared:  # publishing cleared the verdicts kept with the session only
                await self._op("clear", self._verdicts.clear_backoff(key))
            return self._install(fresh[0], key, outcome)
        return self._outcome(key, outcome)

    def _outcome(self, key: str, outcome: Record | Verdict | None) -> Lease:
        """What another process's login left in the store: its session, or its verdict."""
        if isinstance(outcome, Record):
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
        verdict = self._known_verdict(key)
        if verdict is not None:
            raise self._refusal(key, verdict)
        return self._install(await self._login(key, values, base, started), key)

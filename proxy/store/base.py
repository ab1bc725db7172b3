"""The session store's interface, shared by its backends (memory, local SQLite, Redis).

Everything stored is keyed by a credentials fingerprint (``Store.fingerprint``). Per key
the store holds: the session ``Record`` of the last login, at most one login ``Lease``,
and the fleet-wide verdicts that hold logins back (``Rejection``, ``Backoff``). Every
operation either completes or raises ``StoreUnavailable`` within a bounded time.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from proxy.store.crypto import Sealer
from proxy.store.lease import Held, Renewer
from proxy.store.values import (
    Backoff,
    Holder,
    Lease,
    OriginKind,
    Record,
    Rejection,
    Snapshot,
    StoreUnavailable,
    Verdict,
)

Clock = Callable[[], float]  # wall-clock seconds, like time.time

WAIT_POLL = 0.05  # how often ``wait`` looks again while another process logs in


class Store(abc.ABC):
    """A session store. Backends implement the abstract operations with the same
    semantics; ``wait``, ``hold`` and ``fingerprint`` are built on them here."""

    kind: str  # "memory", "local" or "redis"

    def __init__(self, sealer: Sealer, clock: Clock) -> None:
        self._sealer = sealer
        self._clock = clock
        self._host = socket.gethostname()

    def fingerprint(self, identity: Sequence[str], secrets: Sequence[str]) -> str:
        """The store key for a set of credentials: HMAC-SHA256 (under a key derived from
        the store key) of the identity fields (auth type, login host, user, org/tenant/
        role...) and the secret values. Not reversible; equal in every process sharing
        the store key; different when any secret changes."""
        return self._sealer.fingerprint(identity, secrets)

    # -- sessions -------------------------------------------------------------------

    @abc.abstractmethod
    async def get(self, key: str) -> Record | None:
        """The stored session for ``key``, unless there is none or it has expired."""

    @abc.abstractmethod
    async def publish(
        self,
        lease: Lease,
        payload: bytes,
        *,
        expires_at: float,
        logged_in_at: float | None = None,
        kind: OriginKind = "login",
    ) -> Record:
        """Store a login's result under a new version, only if ``lease`` is still held
        (else ``LeaseLost``: a holder that was taken over must not overwrite). Clears the
        key's rejection and backoff: these credentials work. Does not release the lease."""

    @abc.abstractmethod
    async def invalidate(self, key: str, version: str) -> bool:
        """Delete the session only if it is still ``version`` (the one that got a 401);
        False if it is gone or was replaced by a newer login."""

    @abc.abstractmethod
    async def touch(
        self, key: str, version: str, last_used: float, expires_at: float | None = None
    ) -> bool:
        """Record use of session ``version`` (sliding expiry): ``last_used`` never moves
        back; ``expires_at`` replaces the stored one if given. False if not ``version``.
        Meant to be called at a bounded rate, not per request."""

    @abc.abstractmethod
    async def remove(self, key: str) -> bool:
        """Forget the session (logout), whatever its version; the lease and verdicts stay."""

    # -- the login lease ------------------------------------------------------------

    @abc.abstractmethod
    async def acquire(self, key: str, ttl: float) -> Lease | None:
        """Take the login lease for ``key`` for ``ttl`` seconds of real time, or None if
        another holder has it. Never waits. Each lease gets a higher fence number."""

    @abc.abstractmethod
    async def renew(self, lease: Lease) -> bool:
        """Extend the lease to a full TTL from now; False if it is no longer ours."""

    @abc.abstractmethod
    async def release(self, lease: Lease) -> bool:
        """Give the lease up; False if it was no longer ours (nothing is changed then)."""

    @abc.abstractmethod
    async def lease_holder(self, key: str) -> Holder | None:
        """Who is logging in for ``key`` right now, if anyone."""

    # -- verdicts -------------------------------------------------------------------

    @abc.abstractmethod
    async def reject(
        self, key: str, *, until: float, message: str, credentials: str | None = None
    ) -> Rejection:
        """Hold every login for ``key`` back until ``until``: the vendor refused these
        credentials. ``message`` (encrypted at rest) is what callers are told."""

    @abc.abstractmethod
    async def rejection(self, key: str) -> Rejection | None:
        """The rejection in force for ``key``, if any."""

    @abc.abstractmethod
    async def clear_rejection(self, key: str) -> bool:
        """Lift the rejection; True if one was in force."""

    @abc.abstractmethod
    async def backoff(self, key: str, *, until: float, step: float, message: str) -> Backoff:
        """Hold logins for ``key`` back until ``until`` after a transient failure."""

    @abc.abstractmethod
    async def backoff_state(self, key: str) -> Backoff | None:
        """The last backoff for ``key`` (check ``active(now)``: it is kept past its end
        for a while so the next step can grow from it)."""

    @abc.abstractmethod
    async def clear_backoff(self, key: str) -> bool:
        """Forget the backoff; True if one was stored."""

    # -- waiting for another process ------------------------------------------------

    @abc.abstractmethod
    async def snapshot(self, key: str) -> Snapshot:
        """One consistent read of record, verdicts and whether a lease is held."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and threads; the store is unusable afterwards."""

    async def wait(
        self, key: str, since_version: str | None, timeout: float
    ) -> Record | Verdict | None:
        """Wait for the outcome of another process's login, at most ``timeout`` seconds.

        Returns a session whose version is not ``since_version``, or the rejection or
        backoff in force; None when nobody holds the lease any more without a result
        (the holder died or gave up: try ``acquire``) or on timeout. Looks at once, so
        ``timeout=0`` is a single check."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while True:
            snap = await self.snapshot(key)
            now = self._clock()
            if snap.record is not None and snap.record.version != since_version:
                return snap.record
            if snap.rejection is not None and snap.rejection.active(now):
                return snap.rejection
            if snap.backoff is not None and snap.backoff.active(now):
                return snap.backoff
            remaining = deadline - loop.time()
            if not snap.leased or remaining <= 0:
                return None
            await asyncio.sleep(min(WAIT_POLL, remaining))

    @asynccontextmanager
    async def hold(self, lease: Lease) -> AsyncIterator[Held]:
        """Hold ``lease`` for the duration of the block: renewed every ttl/3 in the
        background, released at the end. If the store is unreachable at the end, the
        lease simply expires after its TTL."""
        held = Held(lease)
        renewer = Renewer(held, self.renew)
        renewer.start()
        try:
            yield held
        finally:
            await renewer.stop()
            with contextlib.suppress(StoreUnavailable):  # its TTL ends it then
                await self.release(lease)

    # -- helpers for backends -------------------------------------------------------

    @property
    def _pid(self) -> int:
        return os.getpid()  # a property: correct in a child after fork

"""The per-process session store: plain dictionaries, for ``session_store: {type: memory}``
and as the fallback when the default state directory is not writable."""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass

from proxy.store.base import Clock, Store
from proxy.store.crypto import Sealer
from proxy.store.values import (
    BACKOFF_KEEP,
    Backoff,
    Holder,
    Lease,
    LeaseLost,
    Origin,
    OriginKind,
    Record,
    Rejection,
    Snapshot,
)


@dataclass(slots=True)
class _Lease:
    owner: str
    fence: int
    deadline: float  # time.monotonic(): only this process ever compares it
    pid: int


class MemoryStore(Store):
    """Everything in this process's memory; nothing is encrypted (the process holds the
    plaintext sessions anyway). All operations are atomic within the event loop."""

    kind = "memory"

    def __init__(self, *, key: bytes | None = None, clock: Clock = time.time) -> None:
        super().__init__(Sealer(key if key is not None else os.urandom(32)), clock)
        self._records: dict[str, Record] = {}
        self._leases: dict[str, _Lease] = {}
        self._fences: dict[str, int] = {}
        self._rejections: dict[str, Rejection] = {}
        self._backoffs: dict[str, Backoff] = {}

    # -- sessions -------------------------------------------------------------------

    async def get(self, key: str) -> Record | None:
        record = self._records.get(key)
        if record is not None and record.expires_at <= self._clock():
            del self._records[key]
            return None
        return record

    async def publish(
        self,
        lease: Lease,
        payload: bytes,
        *,
        expires_at: float,
        logged_in_at: float | None = None,
        kind: OriginKind = "login",
    ) -> Record:
        if self._live_lease(lease.key, lease.owner) is None:
            raise LeaseLost(f"the login lease for {lease.key[:12]}… is no longer held")
        now = self._clock()
        at = now if logged_in_at is None else logged_in_at
        record = Record(
            key=lease.key,
            payload=bytes(payload),
            version=secrets.token_hex(8),
            logged_in_at=at,
            expires_at=expires_at,
            last_used=at,
            origin=Origin(self._host, self._pid, kind),
        )
        self._records[lease.key] = record
        self._rejections.pop(lease.key, None)
        self._backoffs.pop(lease.key, None)
        self._collect(now)
        return record

    async def invalidate(self, key: str, version: str) -> bool:
        record = self._records.get(key)
        if record is None or record.version != version:
            return False
        del self._records[key]
        return True

    async def touch(
        self, key: str, version: str, last_used: float, expires_at: float | None = None
    ) -> bool:
        record = self._records.get(key)
        if record is None or record.version != version:
            return False
        self._records[key] = Record(
            key=record.key,
            payload=record.payload,
            version=record.version,
            logged_in_at=record.logged_in_at,
            expires_at=record.expires_at if expires_at is None else expires_at,
            last_used=max(record.last_used, last_used),
            origin=record.origin,
        )
        return True

    async def remove(self, key: str) -> bool:
        return self._records.pop(key, None) is not None

    # -- the login lease ------------------------------------------------------------

    def _live_lease(self, key: str, owner: str | None = None) -> _Lease | None:
        held = self._leases.get(key)
        if held is None or held.deadline <= time.monotonic():
            return None
        return held if owner is None or held.owner == owner else None

    async def acquire(self, key: str, ttl: float) -> Lease | None:
        if self._live_lease(key) is not None:
            return None
        fence = self._fences.get(key, 0) + 1
        self._fences[key] = fence
        owner = secrets.token_hex(16)
        self._leases[key] = _Lease(owner, fence, time.monotonic() + ttl, self._pid)
        return Lease(key=key, owner=owner, fence=fence, ttl=ttl)

    async def renew(self, lease: Lease) -> bool:
        held = self._live_lease(lease.key, lease.owner)
        if held is None:
            return False
        held.deadline = time.monotonic() + lease.ttl
        return True

    async def release(self, lease: Lease) -> bool:
        if self._live_lease(lease.key, lease.owner) is None:
            return False
        del self._leases[lease.key]
        return True

    async def lease_holder(self, key: str) -> Holder | None:
        held = self._live_lease(key)
        if held is None:
            return None
        return Holder(self._host, held.pid, held.fence, held.deadline - time.monotonic())

    # -- verdicts -------------------------------------------------------------------

    async def reject(
        self, key: str, *, until: float, message: str, credentials: str | None = None
    ) -> Rejection:
        rejection = Rejection(until, message, key if credentials is None else credentials)
        self._rejections[key] = rejection
        return rejection

    async def rejection(self, key: str) -> Rejection | None:
        rejection = self._rejections.get(key)
        return rejection if rejection is not None and rejection.active(self._clock()) else None

    async def clear_rejection(self, key: str) -> bool:
        rejection = self._rejections.pop(key, None)
        return rejection is not None and rejection.active(self._clock())

    async def backoff(self, key: str, *, until: float, step: float, message: str) -> Backoff:
        backoff = Backoff(until, step, message)
        self._backoffs[key] = backoff
        return backoff

    async def backoff_state(self, key: str) -> Backoff | None:
        backoff = self._backoffs.get(key)
        if backoff is not None and backoff.until + BACKOFF_KEEP <= self._clock():
            return None
        return backoff

    async def clear_backoff(self, key: str) -> bool:
        return self._backoffs.pop(key, None) is not None

    # -- waiting --------------------------------------------------------------------

    async def snapshot(self, key: str) -> Snapshot:
        return Snapshot(
            record=await self.get(key),
            rejection=await self.rejection(key),
            backoff=await self.backoff_state(key),
            leased=self._live_lease(key) is not None,
        )

    async def close(self) -> None:
        self._records.clear()
        self._leases.clear()

    def _collect(self, now: float) -> None:
        """Drop what has expired, so memory does not grow with history."""
        for key in [k for k, r in self._records.items() if r.expires_at <= now]:
            del self._records[key]
        for key in [k for k, r in self._rejections.items() if not r.active(now)]:
            del self._rejections[key]
        for key in [k for k, b in self._backoffs.items() if b.until + BACKOFF_KEEP <= now]:
            del self._backoffs[key]
        mono = time.monotonic()
        for key in [k for k, held in self._leases.items() if held.deadline <= mono]:
            del self._leases[key]

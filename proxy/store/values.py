"""What the session store holds and hands out: plain, immutable values, and its errors.

Times in records and verdicts are wall-clock seconds (``time.time()`` scale) read from
the store's injected clock; lease lifetimes count real elapsed time (see ``Lease``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OriginKind = Literal["login", "restored"]


class StoreError(Exception):
    """Anything the session store raises."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or written right now (Redis down, SQLite locked or
    unwritable). Raised promptly, within the store's operation timeout; the store
    reconnects by itself, so the next call may succeed. Callers keep what they hold."""


class StoreConfigError(StoreError):
    """The configured store cannot be used at all: a start-up error, naming the cause."""


class LeaseLost(StoreError):
    """The login lease is no longer ours (it expired and someone else took it, or it was
    released): the result of this login must not be published."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Which process produced a record: for visibility only, never a secret."""

    host: str
    pid: int
    kind: OriginKind  # "login": a fresh login; "restored": a held session written back


@dataclass(frozen=True, slots=True)
class Record:
    """A stored session. ``payload`` is opaque to the store (the session layer serialises
    its session into it) and is encrypted at rest. ``version`` changes with every
    publish: it is what ``invalidate`` and ``touch`` compare against."""

    key: str
    payload: bytes
    version: str
    logged_in_at: float
    expires_at: float
    last_used: float
    origin: Origin

    def __repr__(self) -> str:  # the payload carries session ids: never print it
        return (
            f"Record(key={self.key!r}, version={self.version!r}, "
            f"expires_at={self.expires_at!r}, origin={self.origin!r})"
        )


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to log in for ``key``, held until released or ``ttl`` seconds pass
    without renewal. ``owner`` is a random token only the holder knows; ``fence``
    increases with every lease granted for the key, so results can be ordered."""

    key: str
    owner: str
    fence: int
    ttl: float

    def __repr__(self) -> str:
        return f"Lease(key={self.key!r}, fence={self.fence}, ttl={self.ttl})"


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a login lease right now (``Store.lease_holder``): for visibility."""

    host: str
    pid: int
    fence: int
    expires_in: float  # seconds of real time left unless renewed


@dataclass(frozen=True, slots=True)
class Rejection:
    """The vendor refused these credentials: nobody logs in with them until ``until``.
    ``credentials`` is the fingerprint of the rejected credentials (by default the
    store key), so a caller keyed otherwise can tell whether it still applies."""

    until: float
    message: str
    credentials: str

    def active(self, now: float) -> bool:
        return now < self.until


@dataclass(frozen=True, slots=True)
class Backoff:
    """Logins failed for a transient reason (network, 5xx): nobody tries before
    ``until``. The record outlives ``until`` (see ``BACKOFF_KEEP``) so that the next
    failure can double ``step``; a successful publish clears it."""

    until: float
    step: float
    message: str

    def active(self, now: float) -> bool:
        return now < self.until


Verdict = Rejection | Backoff

# How long a backoff record is kept after its ``until``: the memory of the last step.
BACKOFF_KEEP = 3600.0
# How long a key's fencing counter is kept after its last lease.
FENCE_KEEP = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One consistent read of everything stored for a key (used by ``Store.wait``)."""

    record: Record | None
    rejection: Rejection | None
    backoff: Backoff | None
    leased: bool

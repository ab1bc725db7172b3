"""The session store: where vendor sessions, login leases and login verdicts are kept so
that every worker process of a host (``local``, SQLite) or every replica (``redis``)
shares one login per set of credentials. ``memory`` keeps them per process.

Self-contained on purpose: it knows nothing of routes, flows or config objects. The
session layer serialises its session into ``Record.payload`` and keys everything by
``Store.fingerprint(identity, secrets)``.
"""

from proxy.store.base import Clock, Store
from proxy.store.factory import KINDS, default_directory, open_store
from proxy.store.flight import Login, single_flight
from proxy.store.lease import Held
from proxy.store.local import LocalStore
from proxy.store.memory import MemoryStore
from proxy.store.redis_store import RedisStore
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
    StoreConfigError,
    StoreError,
    StoreUnavailable,
    Verdict,
)

__all__ = [
    "BACKOFF_KEEP",
    "KINDS",
    "Backoff",
    "Clock",
    "Held",
    "Holder",
    "Lease",
    "LeaseLost",
    "LocalStore",
    "Login",
    "MemoryStore",
    "Origin",
    "OriginKind",
    "Record",
    "RedisStore",
    "Rejection",
    "Snapshot",
    "Store",
    "StoreConfigError",
    "StoreError",
    "StoreUnavailable",
    "Verdict",
    "default_directory",
    "open_store",
    "single_flight",
]

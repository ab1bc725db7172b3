"""The embedded session store: one SQLite database (WAL mode) in a state directory,
shared by every worker process of the host and surviving restarts.

All SQLite work runs on one dedicated thread per store, never on the event loop. Writes
that decide something (take a lease, publish under a lease) run in ``BEGIN IMMEDIATE``
transactions, which serialise them across processes. Lease deadlines are wall-clock
times (``time.time()``), which every process of the host shares, even across a reboot.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any

from proxy.store.base import Clock, Store
from proxy.store.crypto import Sealer, load_or_create_key_file
from proxy.store.sqlite_db import SESSION_COLUMNS, Database, prepare_directory, write
from proxy.store.values import (
    BACKOFF_KEEP,
    FENCE_KEEP,
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

KEY_NAME = "store.key"
BUSY_TIMEOUT = 2.0  # seconds a write waits for another process's transaction
GC_EVERY = 60.0  # seconds between sweeps of expired rows
_PUT_SESSION = f"INSERT OR REPLACE INTO sessions ({SESSION_COLUMNS}) VALUES ({', '.join('?' * 9)})"


class LocalStore(Store):
    """SQLite in ``directory``: ``sessions.db`` (+ -wal, -shm) and ``store.key``."""

    kind = "local"

    def __init__(
        self,
        directory: Path,
        sealer: Sealer,
        clock: Clock = time.time,
        *,
        busy_timeout: float = BUSY_TIMEOUT,
        gc_every: float = GC_EVERY,
    ) -> None:
        super().__init__(sealer, clock)
        self.directory = directory
        self._gc_every = gc_every
        self._last_gc = float("-inf")
        self._db = Database(directory, busy_timeout)

    @classmethod
    async def open(
        cls,
        directory: Path,
        *,
        key: bytes | None = None,
        clock: Clock = time.time,
        busy_timeout: float = BUSY_TIMEOUT,
        gc_every: float = GC_EVERY,
    ) -> LocalStore:
        """Open (creating if needed) the store in ``directory``. Without ``key``, the key
        file next to the database is used, created 0600 on first use. Raises OSError,
        ``StoreConfigError`` or ``StoreUnavailable`` if the directory cannot be used."""
        await asyncio.to_thread(prepare_directory, directory)
        if key is None:
            key = await asyncio.to_thread(load_or_create_key_file, directory / KEY_NAME)
        store = cls(directory, Sealer(key), clock, busy_timeout=busy_timeout, gc_every=gc_every)
        try:
            await store._db.run(lambda _conn: None)  # connects and creates the schema
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        await self._db.close()

    # -- sessions -------------------------------------------------------------------

    def _record(self, row: Any) -> Record | None:
        key, version, at, expires_at, used, host, pid, kind, data = row
        payload = self._sealer.open("session", key, data, version)
        if payload is None:
            return None  # written under another store key, or tampered with: a miss
        return Record(key, payload, version, at, expires_at, used, Origin(host, pid, kind))

    def _select_session(self, conn: sqlite3.Connection, key: str) -> Record | None:
        row = conn.execute(
            f"SELECT {SESSION_COLUMNS} FROM sessions WHERE key = ? AND expires_at > ?",
            (key, self._clock()),
        ).fetchone()
        return None if row is None else self._record(row)

    async def get(self, key: str) -> Record | None:
        return await self._db.run(lambda conn: self._select_session(conn, key))

    async def publish(
        self,
        lease: Lease,
        payload: bytes,
        *,
        expires_at: float,
        logged_in_at: float | None = None,
        kind: OriginKind = "login",
    ) -> Record:
        now = self._clock()
        at = now if logged_in_at is None else logged_in_at
        version = secrets.token_hex(8)
        data = self._sealer.seal("session", lease.key, payload, version)
        row = (lease.key, version, at, expires_at, at, self._host, self._pid, kind, data)

        def work(conn: sqlite3.Connection) -> None:
            if not self._holds(conn, lease):
                raise LeaseLost(f"the login lease for {lease.key[:12]}… is no longer held")
            conn.execute(_PUT_SESSION, row)
            conn.execute("DELETE FROM rejections WHERE key = ?", (lease.key,))
            conn.execute("DELETE FROM backoffs WHERE key = ?", (lease.key,))
            self._collect(conn, now)

        await self._db.run(lambda conn: write(conn, work))
        return Record(
            lease.key,
            bytes(payload),
            version,
            at,
            expires_at,
            at,
            Origin(self._host, self._pid, kind),
        )

    async def invalidate(self, key: str, version: str) -> bool:
        sql = "DELETE FROM sessions WHERE key = ? AND version = ?"
        return await self._db.run(lambda conn: conn.execute(sql, (key, version)).rowcount > 0)

    async def touch(
        self, key: str, version: str, last_used: float, expires_at: float | None = None
    ) -> bool:
        sql = (
            "UPDATE sessions SET last_used = max(last_used, ?), "
            "expires_at = coalesce(?, expires_at) WHERE key = ? AND version = ?"
        )
        args = (last_used, expires_at, key, version)
        return await self._db.run(lambda conn: conn.execute(sql, args).rowcount > 0)

    async def remove(self, key: str) -> bool:
        sql = "DELETE FROM sessions WHERE key = ?"
        return await self._db.run(lambda conn: conn.execute(sql, (key,)).rowcount > 0)

    # -- the login lease ------------------------------------------------------------

    @staticmethod
    def _holds(conn: sqlite3.Connection, lease: Lease) -> bool:
        row = conn.execute(
            "SELECT 1 FROM leases WHERE key = ? AND owner = ? AND deadline > ?",
            (lease.key, lease.owner, time.time()),
        ).fetchone()
        return row is not None

    async def acquire(self, key: str, ttl: float) -> Lease | None:
        owner = secrets.token_hex(16)

        def work(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(
                "SELECT owner, deadline, fence FROM leases WHERE key = ?", (key,)
            ).fetchone()
            now = time.time()
            if row is not None and row[0] is not None and row[1] > now:
                return None
            fence = (row[2] if row is not None else 0) + 1
            conn.execute(
                "INSERT OR REPLACE INTO leases (key, owner, fence, host, pid, deadline) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key, owner, fence, self._host, self._pid, now + ttl),
            )
            return int(fence)

        fence = await self._db.run(lambda conn: write(conn, work))
        return None if fence is None else Lease(key=key, owner=owner, fence=fence, ttl=ttl)

    async def renew(self, lease: Lease) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            now = time.time()
            return (
                conn.execute(
                    "UPDATE leases SET deadline = ? WHERE key = ? AND owner = ? AND deadline > ?",
                    (now + lease.ttl, lease.key, lease.owner, now),
                ).rowcount
                > 0
            )

        return await self._db.run(work)

    async def release(self, lease: Lease) -> bool:
        # The row stays, without an owner, to keep the key's fence counter growing.
        sql = "UPDATE leases SET owner = NULL WHERE key = ? AND owner = ? AND deadline > ?"
        args = (lease.key, lease.owner, time.time())
        return await self._db.run(lambda conn: conn.execute(sql, args).rowcount > 0)

    @staticmethod
    def _holder(conn: sqlite3.Connection, key: str) -> Holder | None:
        now = time.time()
        row = conn.execute(
            "SELECT host, pid, fence, deadline FROM leases "
            "WHERE key = ? AND owner IS NOT NULL AND deadline > ?",
            (key, now),
        ).fetchone()
        return None if row is None else Holder(row[0], row[1], row[2], row[3] - now)

    async def lease_holder(self, key: str) -> Holder | None:
        return await self._db.run(lambda conn: self._holder(conn, key))

    # -- verdicts -------------------------------------------------------------------

    async def reject(
        self, key: str, *, until: float, message: str, credentials: str | None = None
    ) -> Rejection:
        rejection = Rejection(until, message, key if credentials is None else credentials)
        sealed = self._sealer.seal("rejection", key, message.encode())
        sql = (
            "INSERT OR REPLACE INTO rejections (key, until, credentials, message) "
            "VALUES (?, ?, ?, ?)"
        )
        args = (key, until, rejection.credentials, sealed)
        await self._db.run(lambda conn: conn.execute(sql, args))
        return rejection

    def _select_rejection(self, conn: sqlite3.Connection, key: str) -> Rejection | None:
        row = conn.execute(
            "SELECT until, credentials, message FROM rejections WHERE key = ? AND until > ?",
            (key, self._clock()),
        ).fetchone()
        message = None if row is None else self._sealer.open("rejection", key, row[2])
        return (
            None if row is None or message is None else Rejection(row[0], message.decode(), row[1])
        )

    async def rejection(self, key: str) -> Rejection | None:
        return await self._db.run(lambda conn: self._select_rejection(conn, key))

    async def clear_rejection(self, key: str) -> bool:
        sql = "DELETE FROM rejections WHERE key = ? AND until > ?"
        args = (key, self._clock())
        return await self._db.run(lambda conn: conn.execute(sql, args).rowcount > 0)

    async def backoff(self, key: str, *, until: float, step: float, message: str) -> Backoff:
        sealed = self._sealer.seal("backoff", key, message.encode())
        sql = "INSERT OR REPLACE INTO backoffs (key, until, step, message) VALUES (?, ?, ?, ?)"
        await self._db.run(lambda conn: conn.execute(sql, (key, until, step, sealed)))
        return Backoff(until, step, message)

    def _select_backoff(self, conn: sqlite3.Connection, key: str) -> Backoff | None:
        row = conn.execute(
            "SELECT until, step, message FROM backoffs WHERE key = ? AND until > ?",
            (key, self._clock() - BACKOFF_KEEP),
        ).fetchone()
        message = None if row is None else self._sealer.open("backoff", key, row[2])
        return None if row is None or message is None else Backoff(row[0], row[1], message.decode())

    async def backoff_state(self, key: str) -> Backoff | None:
        return await self._db.run(lambda conn: self._select_backoff(conn, key))

    async def clear_backoff(self, key: str) -> bool:
        sql = "DELETE FROM backoffs WHERE key = ?"
        return await self._db.run(lambda conn: conn.execute(sql, (key,)).rowcount > 0)

    # -- waiting --------------------------------------------------------------------

    def _snapshot(self, conn: sqlite3.Connection, key: str) -> Snapshot:
        conn.execute("BEGIN")  # one read transaction: a consistent view in WAL mode
        try:
            return Snapshot(
                record=self._select_session(conn, key),
                rejection=self._select_rejection(conn, key),
                backoff=self._select_backoff(conn, key),
                leased=self._holder(conn, key) is not None,
            )
        finally:
            conn.execute("COMMIT")

    async def snapshot(self, key: str) -> Snapshot:
        return await self._db.run(lambda conn: self._snapshot(conn, key))

    def _collect(self, conn: sqlite3.Connection, now: float) -> None:
        """Delete expired rows, at most every ``gc_every`` seconds, so the database
        does not grow with history (credentials that changed leave rows behind)."""
        if now - self._last_gc < self._gc_every:
            return
        self._last_gc = now
        conn.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
        conn.execute("DELETE FROM rejections WHERE until <= ?", (now,))
        conn.execute("DELETE FROM backoffs WHERE until <= ?", (now - BACKOFF_KEEP,))
        conn.execute("DELETE FROM leases WHERE deadline <= ?", (time.time() - FENCE_KEEP,))

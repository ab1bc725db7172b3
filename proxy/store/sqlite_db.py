"""The SQLite database behind ``LocalStore``, driven from one dedicated thread.

The event loop never touches SQLite: every piece of work is a function of the
connection, run on the thread with a deadline. A failure closes the connection, so the
next call reconnects; it surfaces as ``StoreUnavailable``.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from proxy.store.values import StoreUnavailable

T = TypeVar("T")

DB_NAME = "sessions.db"
SESSION_COLUMNS = "key, version, logged_in_at, expires_at, last_used, host, pid, kind, data"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    key TEXT PRIMARY KEY, version TEXT NOT NULL, logged_in_at REAL NOT NULL,
    expires_at REAL NOT NULL, last_used REAL NOT NULL, host TEXT NOT NULL,
    pid INTEGER NOT NULL, kind TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS leases (
    key TEXT PRIMARY KEY, owner TEXT, fence INTEGER NOT NULL, host TEXT NOT NULL,
    pid INTEGER NOT NULL, deadline REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rejections (
    key TEXT PRIMARY KEY, until REAL NOT NULL, credentials TEXT NOT NULL,
    message BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS backoffs (
    key TEXT PRIMARY KEY, until REAL NOT NULL, step REAL NOT NULL, message BLOB NOT NULL);
"""
_TABLES = _SCHEMA.count("CREATE TABLE")
# Another process holds the write lock: the connection itself is fine, keep it.
_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


def prepare_directory(directory: Path) -> None:
    """Create the state directory (0700) and the database file (0600): SQLite gives its
    -wal and -shm files the database file's mode."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(directory / DB_NAME, os.O_RDWR | os.O_CREAT, 0o600))


def write(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``work`` in a write transaction; other processes' writers wait for it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _create_schema(conn: sqlite3.Connection) -> None:
    # Statement by statement: executescript() would commit the open transaction first.
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


class Database:
    """``sessions.db`` in ``directory``, opened lazily on the store's own thread."""

    def __init__(self, directory: Path, busy_timeout: float) -> None:
        self.directory = directory
        self._busy_timeout = busy_timeout  # how long a write waits for another process
        self._conn: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="auth-proxy-store")
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.directory / DB_NAME, timeout=self._busy_timeout, isolation_level=None
        )
        try:
            self._use_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")  # durable enough for re-creatable data
            conn.execute("PRAGMA journal_size_limit=1048576")  # the WAL shrinks back
            tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'")
            if tables.fetchone()[0] < _TABLES:  # no write lock needed to reopen
                write(conn, _create_schema)
        except BaseException:
            conn.close()
            raise
        return conn

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """Switch a new database to WAL. The switch needs the database to itself, and
        SQLite answers "locked" at once, not through the busy timeout, when several
        processes open a new store together: so wait for it here, as long as a write would.
        """
        deadline = time.monotonic() + self._busy_timeout
        while conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            try:
                conn.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode not in _BUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)  # on the store's own thread, never the event loop

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            if self._conn is None:
                self._conn = self._connect()
            return work(self._conn)
        except (sqlite3.Error, OSError) as exc:
            if getattr(exc, "sqlite_errorcode", None) not in _BUSY:
                self._close()  # reconnect on the next call
            raise StoreUnavailable(f"the session store in {self.directory} failed: {exc}") from exc

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(connection)`` on the database thread, within the busy timeout plus a
        second; past that ``StoreUnavailable`` (the thread finishes it on its own)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._busy_timeout + 1.0):
                return await loop.run_in_executor(self._executor, self._call, work)
        except TimeoutError:
            raise StoreUnavailable(
                f"the session store in {self.directory} did not answer in time"
            ) from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=False)

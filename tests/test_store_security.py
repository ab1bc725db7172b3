"""The session store at rest: nobody who can read the SQLite files or the Redis data can
read a session id or a login error; records are bound to their key; files are private."""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from store_support import TEST_KEY, Backend, RedisServer

from proxy.store import LocalStore, Record, Store, StoreConfigError, open_store

KEY = "f" * 64


def marker() -> bytes:
    return f"SESSION-ID-MARKER-{secrets.token_hex(8)}".encode()


async def store_secrets(store: Store, secret: bytes) -> Record:
    """A session, a rejection and a backoff, each carrying ``secret``."""
    now = store._clock()
    await store.reject("r" * 64, until=now + 300, message=f"rejected {secret.decode()}")
    await store.backoff("b" * 64, until=now + 300, step=2, message=f"failed {secret.decode()}")
    lease = await store.acquire(KEY, ttl=10)
    assert lease is not None
    record = await store.publish(lease, b'{"icSessionId": "' + secret + b'"}', expires_at=now + 600)
    await store.release(lease)
    return record


async def test_sqlite_files_hold_no_session_id(tmp_path: Path) -> None:
    store = await open_store("local", path=tmp_path / "state", key=TEST_KEY)
    secret = marker()
    record = await store_secrets(store, secret)
    # While the store is open, recent writes sit in the WAL: read every file.
    files = [tmp_path / "state" / name for name in ("sessions.db", "sessions.db-wal")]
    files.append(tmp_path / "state" / "sessions.db-shm")
    data = b"".join(path.read_bytes() for path in files)
    assert record.version.encode() in data  # plaintext metadata shows: the grep works
    assert secret not in data
    assert (await store.get(KEY)) == record
    await store.close()
    data = b"".join(path.read_bytes() for path in files if path.exists())
    assert secret not in data


async def test_redis_dump_and_values_hold_no_session_id(backend_redis: Backend) -> None:
    store = await backend_redis.open()
    secret = marker()
    record = await store_secrets(store, secret)
    assert backend_redis.redis is not None
    with contextlib.closing(backend_redis.redis.client()) as client:
        client.set(f"{backend_redis.prefix}control", b"plain " + secret[::-1])
        values = b""
        for name in backend_redis.redis_keys():
            if client.type(name) == b"hash":
                values += b"".join(k + v for k, v in client.hgetall(name).items())
            else:
                values += name + (client.get(name) or b"")
        assert client.save()
    dump = backend_redis.redis.dump.read_bytes()
    assert secret[::-1] in dump and record.version.encode() in dump  # the grep works
    assert secret not in dump
    assert secret not in values
    assert (await store.get(KEY)) == record


@pytest.fixture
async def backend_redis(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Backend]:
    chosen = Backend("redis", tmp_path, redis_server)
    yield chosen
    for store in chosen.opened:
        await store.close()


async def test_a_record_moved_to_another_key_does_not_open(shared_backend: Backend) -> None:
    store = await shared_backend.open()
    await store_secrets(store, marker())
    other = "0" * 64
    if shared_backend.kind == "local":
        with contextlib.closing(sqlite3.connect(shared_backend.path / "sessions.db")) as db:
            db.execute("UPDATE sessions SET key = ? WHERE key = ?", (other, KEY))
            db.commit()
    else:
        assert shared_backend.redis is not None
        with contextlib.closing(shared_backend.redis.client()) as client:
            prefix = shared_backend.prefix
            client.rename(f"{prefix}{{{KEY}}}:session", f"{prefix}{{{other}}}:session")
    assert await store.get(other) is None  # a miss, not another account's session
    assert await store.get(KEY) is None


async def test_a_store_with_another_key_reads_nothing(shared_backend: Backend) -> None:
    store = await shared_backend.open()
    await store_secrets(store, marker())
    intruder = await open_store(**shared_backend.spec(), key="not the key of this fleet at all")
    try:
        assert await intruder.get(KEY) is None
        assert await intruder.rejection("r" * 64) is None
        assert intruder.fingerprint(["a"], ["b"]) != store.fingerprint(["a"], ["b"])
    finally:
        await intruder.close()


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_state_directory_and_files_are_private(tmp_path: Path) -> None:
    directory = tmp_path / "state" / "auth-proxy"
    with umask(0):  # modes are set explicitly, not left to the umask
        store = await open_store("local", path=directory)
        await store_secrets(store, marker())
    assert mode(directory) == 0o700
    assert mode(directory / "store.key") == 0o600
    for name in ("sessions.db", "sessions.db-wal", "sessions.db-shm"):
        assert mode(directory / name) == 0o600, name
    assert len((directory / "store.key").read_bytes()) == 32
    await store.close()


async def test_the_key_file_survives_a_restart(tmp_path: Path) -> None:
    first = await open_store("local", path=tmp_path)
    record = await store_secrets(first, marker())
    key_before = (tmp_path / "store.key").read_bytes()
    await first.close()
    again = await open_store("local", path=tmp_path)
    assert (tmp_path / "store.key").read_bytes() == key_before
    assert (await again.get(KEY)) == record
    await again.close()


async def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    await (await open_store("local", path=tmp_path)).close()
    (tmp_path / "store.key").chmod(0o644)
    with pytest.raises(StoreConfigError, match=r"store\.key is readable by others"):
        await open_store("local", path=tmp_path)
    (tmp_path / "store.key").chmod(0o600)
    (tmp_path / "store.key").write_bytes(b"short")
    with pytest.raises(StoreConfigError, match=r"store\.key is damaged"):
        await LocalStore.open(tmp_path)


async def test_a_short_configured_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreConfigError, match="at least 16 bytes"):
        await open_store("local", path=tmp_path, key="short")

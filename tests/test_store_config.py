"""Opening the configured session store: the default state directory, falling back to
memory (with one warning) when the default cannot be used, and start-up errors for an
explicit path or a Redis setting that cannot work."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from store_support import TEST_KEY

from proxy.store import (
    LocalStore,
    MemoryStore,
    RedisStore,
    StoreConfigError,
    default_directory,
    open_store,
)


def test_the_default_directory_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_directory() == tmp_path / "xdg" / "auth-proxy"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/state")  # invalid by the XDG rules
    assert default_directory() == tmp_path / "home" / ".local" / "state" / "auth-proxy"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_directory() == tmp_path / "home" / ".local" / "state" / "auth-proxy"


async def test_local_by_default_in_the_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    warnings: list[str] = []
    store = await open_store(warn=warnings.append)
    try:
        assert isinstance(store, LocalStore)
        assert store.directory == tmp_path / "xdg" / "auth-proxy"
        assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
        assert warnings == []
    finally:
        await store.close()


@pytest.mark.parametrize("variable", ["XDG_STATE_HOME", "HOME"])
async def test_an_unusable_default_directory_means_memory_and_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    # Below a regular file nothing can be created, even by root.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv(variable, str(blocker))
    warnings: list[str] = []
    store = await open_store("local", warn=warnings.append)
    assert isinstance(store, MemoryStore)
    assert len(warnings) == 1
    assert str(blocker) in warnings[0] and "kept in memory" in warnings[0]
    lease = await store.acquire("k", ttl=5)  # and it works
    assert lease is not None
    await store.publish(lease, b"s", expires_at=store._clock() + 60)
    assert (await store.get("k")) is not None


async def test_an_explicit_path_that_cannot_be_used_is_a_start_up_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    warnings: list[str] = []
    for path in (blocker / "state", blocker):
        expected = re.escape(f"session_store.path {path} cannot be used")
        with pytest.raises(StoreConfigError, match=expected):
            await open_store("local", path=path, warn=warnings.append)
    assert warnings == []


async def test_redis_settings_are_checked_at_start_up() -> None:
    with pytest.raises(StoreConfigError, match="url is required"):
        await open_store("redis", key=TEST_KEY)
    with pytest.raises(StoreConfigError, match="key is required"):
        await open_store("redis", url="redis://127.0.0.1:6379/0")
    with pytest.raises(StoreConfigError, match="must start with redis://"):
        await open_store("redis", url="http://127.0.0.1:6379", key=TEST_KEY)
    with pytest.raises(StoreConfigError, match="not a valid Redis URL") as caught:
        await open_store("redis", url="redis://:hunter2hunter2@127.0.0.1:x/0", key=TEST_KEY)
    assert "hunter2" not in str(caught.value)
    with pytest.raises(StoreConfigError, match="must be one of local, memory, redis"):
        await open_store("sqlite")


async def test_redis_need_not_be_up_at_start_up() -> None:
    # TLS (rediss://) is the client's; nothing is contacted before the first operation.
    store = await open_store("redis", url="rediss://127.0.0.1:1/0", key=TEST_KEY, password="pw")
    assert isinstance(store, RedisStore) and store.where == "127.0.0.1:1"
    await store.close()

"""``session_store`` in the config: the default embedded store in the state directory,
``memory``, ``redis``; what a wrong setting says, and what start-up does with a store it
cannot open."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fleet_support import AGENT
from helpers import ROOT, iics_route, run_cli, spawn_served, write_config

from proxy.config import ConfigError, parse_config
from proxy.core.secrets import Secret
from proxy.sandbox import Sandbox

ROUTE = {
    "name": "r",
    "match": {"prefix": "/r"},
    "auth": {"type": "ivanti-api-key", "tenant": "t", "api_key": "k"},
}


def config_with(store: Any) -> Any:
    return parse_config({"session_store": store, "routes": [ROUTE]}, base_dir="/etc/ap")


def problems(store: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config_with(store)
    return list(caught.value.lines)


def test_the_default_is_the_local_store_in_the_state_directory() -> None:
    store = parse_config({"routes": [ROUTE]}).session_store
    assert (store.type, store.path, store.url, store.key) == ("local", None, None, None)


def test_store_settings_parse() -> None:
    local = config_with({"type": "local", "path": "state"}).session_store
    assert local.path == "/etc/ap/state"  # relative to the config file, like every path
    assert config_with({"type": "memory"}).session_store.type == "memory"
    redis = config_with(
        {
            "type": "redis",
            "url": "redis://cache:6379/0",
            "key_prefix": "team-a:",
            "password": {"env": "REDIS_PASSWORD"},
            "key": {"file": "store.key"},
            "lease_ttl": 5,
        }
    ).session_store
    assert redis.password == Secret("env", "REDIS_PASSWORD")
    assert redis.key == Secret("file", "/etc/ap/store.key")
    assert (redis.key_prefix, redis.lease_ttl) == ("team-a:", 5)


def test_wrong_store_settings_name_their_key() -> None:
    assert problems({"type": "disk"}) == [
        "session_store.type: must be one of 'local', 'memory' or 'redis'"
    ]
    assert problems({"type": "redis", "key": "k" * 32}) == [
        "session_store.url: required for type: redis"
    ]
    assert problems({"type": "redis", "url": "redis://cache"}) == [
        "session_store.key: required for type: redis (the same on every replica)"
    ]
    assert problems({"type": "memory", "path": "/x"}) == [
        "session_store.path: only for type: local"
    ]
    assert problems({"type": "local", "url": "redis://cache"}) == [
        "session_store.url: only for type: redis"
    ]
    assert problems({"type": "local", "pth": "/x"}) == [
        'session_store.pth: unknown key (did you mean "path"?)'
    ]
    assert problems({"type": "redis", "url": "http://cache", "key": "k" * 32}) == [
        "session_store.url: must start with redis://, rediss:// or unix://"
    ]


@pytest.mark.parametrize("where", ["xdg", "state_dir"])
async def test_the_default_store_lives_in_a_private_state_directory(
    sandbox: Sandbox, tmp_path: Path, unused_tcp_port: int, where: str
) -> None:
    xdg = Path(os.environ["XDG_STATE_HOME"]) / "auth-proxy"  # a test's own, never ~/.local
    # With a state directory (the container's volume, AUTH_PROXY_STATE_DIR), the sessions
    # live there: not in a home directory a read-only image cannot write.
    env = {"AUTH_PROXY_STATE_DIR": str(tmp_path / "state")} if where == "state_dir" else {}
    state = tmp_path / "state" / "sessions" if env else xdg
    config = tmp_path / "config.yaml"
    write_config(
        config,
        [iics_route(sandbox)],
        listen={"host": "127.0.0.1", "port": unused_tcp_port},
        session_store={"type": "local"},
    )
    served = await spawn_served(config, unused_tcp_port, tmp_path, env=env)
    try:
        async with aiohttp.ClientSession() as http, http.get(served.url(AGENT)) as resp:
            assert resp.status == 200
        served.proc.send_signal(signal.SIGTERM)
        await served.finish()
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "store.key").stat().st_mode) == 0o600
    assert xdg.exists() == (where == "xdg")


async def test_an_unusable_default_directory_is_said_once_and_runs_as_memory(
    sandbox: Sandbox, tmp_path: Path, unused_tcp_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")  # nothing can be created below a file, even by root
    monkeypatch.setenv("XDG_STATE_HOME", str(blocker))
    config = tmp_path / "config.yaml"
    write_config(
        config,
        [iics_route(sandbox)],
        workers=2,
        listen={"host": "127.0.0.1", "port": unused_tcp_port},
        session_store={"type": "local"},
    )
    served = await spawn_served(config, unused_tcp_port, tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(served.url(AGENT)) as resp:
                assert resp.status == 200
            async with http.get(served.url("/-/sessions")) as resp:
                assert (await resp.json())["iics"]["store"] == "memory"
        served.proc.send_signal(signal.SIGTERM)
        events = await served.finish()
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
    warnings = [e for e in events if e["event"] == "session_store_fallback"]
    assert len(warnings) == 1  # once, not once per worker
    assert str(blocker) in warnings[0]["reason"]


def test_an_explicit_path_that_cannot_be_used_fails_check_and_serve(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    for workers in (1, 2):
        config = tmp_path / f"config{workers}.yaml"
        write_config(
            config,
            [ROUTE],
            workers=workers,
            session_store={"type": "local", "path": str(blocker / "state")},
        )
        # check runs serve's start-up checks: it must not say "ok" to what serve refuses.
        for command in ("check", "serve"):
            result = run_cli(command, "-c", str(config))
            assert result.returncode == 2, (command, result.stderr)
            line = f"config error: session_store.path: {blocker / 'state'} cannot be used"
            assert line in result.stderr, (command, result.stderr)
            assert "Traceback" not in result.stderr


async def test_an_unreadable_store_key_stops_the_start(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    write_config(
        config,
        [ROUTE],
        session_store={"type": "local", "path": str(tmp_path / "s"), "key": {"env": "NO_SUCH"}},
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "serve",
        "-c",
        str(config),
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert "session_store.key: environment variable NO_SUCH is not set" in err.decode()

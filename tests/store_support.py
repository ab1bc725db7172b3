"""Fixtures and helpers for the session-store tests: a real redis-server on loopback,
and one fixture that opens the same store in each backend (memory, local, redis).

The Redis tests fail (never skip) without redis-server: scripts/test installs it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from proxy.store import MemoryStore, Store, open_store

TEST_KEY = "a test key that is long enough"
WORKER = Path(__file__).with_name("store_worker.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """``redis-server`` in a directory of its own, on a loopback port that survives a
    restart (so a client can reconnect to the same URL)."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (scripts/test installs it)")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def dump(self) -> Path:
        return self.directory / "dump.rdb"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.directory), "--dbfilename", "dump.rdb", "--save", ""]
        # Uncompressed dumps: a plaintext secret would show in the RDB file as it is.
        args += ["--appendonly", "no", "--rdbcompression", "no", "--daemonize", "no"]
        log = (self.directory / "redis.log").open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 15
        client = self.client()
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            assert self.proc.poll() is None, (self.directory / "redis.log").read_text()
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


_prefixes = itertools.count()


@dataclass
class Backend:
    """One store location in one backend; ``open()`` gives another store on it, as
    another worker would have (for memory: the same per-process store)."""

    kind: str
    path: Path
    redis: RedisServer | None
    prefix: str = field(default_factory=lambda: f"t{os.getpid()}-{next(_prefixes)}:")
    opened: list[Store] = field(default_factory=list)
    memory: MemoryStore | None = None

    def spec(self) -> dict[str, Any]:
        """How a worker process opens the same store (``open_store`` arguments)."""
        if self.kind == "redis":
            assert self.redis is not None
            return {"kind": "redis", "url": self.redis.url, "key_prefix": self.prefix}
        return {"kind": self.kind, "path": str(self.path)}

    async def open(self, clock: Callable[[], float] = time.time) -> Store:
        if self.kind == "memory":
            if self.memory is None:
                self.memory = MemoryStore(key=TEST_KEY.encode(), clock=clock)
                self.opened.append(self.memory)
            return self.memory
        store = await open_store(**self.spec(), key=TEST_KEY, clock=clock)
        self.opened.append(store)
        return store

    def redis_keys(self) -> list[bytes]:
        assert self.redis is not None
        with contextlib.closing(self.redis.client()) as client:
            return list(client.scan_iter(match=f"{self.prefix}*"))


@pytest.fixture(params=["memory", "local", "redis"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, redis_server: RedisServer
) -> AsyncIterator[Backend]:
    chosen = Backend(request.param, tmp_path / "state", redis_server)
    yield chosen
    for store in chosen.opened:
        await store.close()


@pytest.fixture(params=["local", "redis"])
async def shared_backend(
    request: pytest.FixtureRequest, tmp_path: Path, redis_server: RedisServer
) -> AsyncIterator[Backend]:
    """The backends that processes share."""
    chosen = Backend(request.param, tmp_path / "state", redis_server)
    yield chosen
    for store in chosen.opened:
        await store.close()


class Workers:
    """Processes running tests/store_worker.py against one backend; each "logs in"
    through ``single_flight`` and prints one JSON line with what it got. Logins append
    to ``logins``, so ``logins()`` counts them across processes."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def spawn(self, backend: Backend, name: str, **job: Any) -> subprocess.Popen[str]:
        spec = {"store": {**backend.spec(), "key": TEST_KEY}, "name": name, "tmp": str(self.tmp)}
        with (self.tmp / f"{name}.err").open("w") as err:
            proc = subprocess.Popen(
                [sys.executable, str(WORKER), json.dumps({**spec, **job})],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        self.procs[name] = proc
        return proc

    def ready(self, *names: str) -> bool:
        return all((self.tmp / f"ready-{name}").exists() for name in names)

    def go(self) -> None:
        (self.tmp / "go").touch()

    def logins(self) -> list[int]:
        path = self.tmp / "logins"
        return [int(line) for line in path.read_text().split()] if path.exists() else []

    def result(self, name: str) -> dict[str, Any]:
        proc = self.procs[name]
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, (self.tmp / f"{name}.err").read_text()
        result: dict[str, Any] = json.loads(out)
        return result

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    tracked = Workers(tmp_path)
    yield tracked
    tracked.stop()

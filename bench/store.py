"""Per-operation latency of the session store's backends: what a cache miss (``get``),
a sliding-expiry write-back (``touch``) and a login's store work (``acquire`` +
``publish`` + ``release``) cost in memory, in the local SQLite store and in Redis.

    .venv/bin/python bench/store.py [--ops 2000]

Starts its own redis-server on a free loopback port if one is installed (stopped at the
end), and uses a temporary directory for the local store. Not a test: it only prints.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from proxy.store import Store, open_store

KEY = "b" * 64
STORE_KEY = "a bench key that is long enough"
PAYLOAD = b'{"icSessionId": "' + b"x" * 40 + b'", "serverUrl": "https://example.invalid"}'


@contextmanager
def redis_server(directory: Path) -> Iterator[str | None]:
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    proc = subprocess.Popen([*args, "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


async def measure(ops: int, call: Callable[[], Awaitable[object]]) -> list[float]:
    for _ in range(min(100, ops)):  # warm up connections and caches
        await call()
    times = []
    for _ in range(ops):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return times


def row(backend: str, operation: str, times: list[float]) -> str:
    micro = sorted(t * 1e6 for t in times)
    p99 = micro[min(len(micro) - 1, int(len(micro) * 0.99))]
    median = statistics.median(micro)
    return f"{backend:<7} {operation:<26} {median:>9.1f} {p99:>9.1f} {len(micro):>7}"


async def login(store: Store) -> None:
    lease = await store.acquire(KEY, ttl=30)
    assert lease is not None
    await store.publish(lease, PAYLOAD, expires_at=time.time() + 3600)
    await store.release(lease)


async def bench(store: Store, ops: int) -> list[str]:
    await login(store)
    record = await store.get(KEY)
    assert record is not None
    return [
        row(store.kind, "get (cache miss)", await measure(ops, lambda: store.get(KEY))),
        row(
            store.kind,
            "touch (write-back)",
            await measure(ops, lambda: store.touch(KEY, record.version, time.time())),
        ),
        row(store.kind, "acquire+publish+release", await measure(ops // 4, lambda: login(store))),
    ]


async def main(ops: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as url:
        stores = [
            await open_store("memory"),
            await open_store("local", path=Path(tmp) / "state"),
        ]
        if url is not None:
            stores.append(await open_store("redis", url=url, key=STORE_KEY))
        print(f"{'backend':<7} {'operation':<26} {'median µs':>9} {'p99 µs':>9} {'ops':>7}")
        for store in stores:
            for line in await bench(store, ops):
                print(line)
            await store.close()
        if url is None:
            print("(redis-server not installed: no Redis figures)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000, help="operations per measurement")
    asyncio.run(main(parser.parse_args().ops))

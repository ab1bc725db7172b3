"""A worker process for the session-store tests: opens the store it is given, waits for
the test's go signal, then "logs in" through ``single_flight`` and prints its outcome.

Every login it performs appends one line to the ``logins`` file, so the test counts
logins across processes. ``login_seconds`` makes the vendor slow; ``outcome`` chooses
what the login yields (a session or a rejection).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from proxy.store import Backoff, Held, Record, Rejection, Verdict, open_store, single_flight


def start_together(job: dict[str, Any]) -> None:
    """Say this process is up, then wait for the test's go (so all start at once)."""
    tmp = Path(job["tmp"])
    (tmp / f"ready-{job['name']}").touch()
    deadline = time.monotonic() + 30
    while not (tmp / "go").exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go signal within 30 s")
        time.sleep(0.005)


async def main(job: dict[str, Any]) -> dict[str, Any]:
    store = await open_store(**job["store"])
    key = store.fingerprint(["iics-password", "login.example", "demo"], ["demo-password"])
    tmp = Path(job["tmp"])

    async def login(held: Held) -> Record | Verdict:
        with (tmp / "logins").open("a") as logins:
            logins.write(f"{os.getpid()}\n")
        (tmp / f"holding-{job['name']}").touch()
        await asyncio.sleep(job.get("login_seconds", 0.0))  # the slow vendor
        if job.get("outcome") == "reject":
            return await store.reject(key, until=time.time() + 600, message="wrong password")
        payload = f"session-from-{os.getpid()}".encode()
        return await store.publish(held.lease, payload, expires_at=time.time() + 600)

    try:
        result = await single_flight(
            store, key, login, ttl=job.get("ttl", 5.0), timeout=job.get("timeout", 30.0)
        )
    finally:
        await store.close()
    if isinstance(result, Record):
        return {"got": "record", "payload": result.payload.decode(), "origin": result.origin.pid}
    if isinstance(result, Rejection):
        return {"got": "rejection", "message": result.message}
    if isinstance(result, Backoff):
        return {"got": "backoff", "message": result.message}
    return {"got": repr(result)}


if __name__ == "__main__":
    job = json.loads(sys.argv[1])
    start_together(job)
    print(json.dumps(asyncio.run(main(job))))

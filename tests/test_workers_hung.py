"""``workers: 2`` with a worker that hangs (SIGSTOP) while the config is reloaded again
and again: the supervisor must not wait on it, the other worker gets every reload at
once, and the hung worker, once it runs again, ends on the last config and lives.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from helpers import Served, ServeRoutes, iics_route, prefix_route, wait_for

from proxy.sandbox import Sandbox

RELOADS = 12
PADDING = 300  # routes: each config sent to a worker is tens of kilobytes


def padded(sandbox: Sandbox, generation: int) -> list[dict[str, Any]]:
    """A config with many routes, one of them naming its generation."""
    auth = {"type": "ivanti-api-key", "url": sandbox.urls.ivanti, "api_key": "k"}
    pad = [prefix_route(f"pad{i}", auth) for i in range(PADDING)]
    return [iics_route(sandbox), prefix_route(f"gen{generation}", auth), *pad]


def reloads_of(served: Served, worker: int) -> list[dict[str, Any]]:
    return [e for e in served.events() if e["event"] == "config_reloaded" and e["worker"] == worker]


async def test_a_hung_worker_neither_blocks_reloads_nor_misses_the_last(
    sandbox: Sandbox, serve_routes: ServeRoutes
) -> None:
    served = await serve_routes(padded(sandbox, 0), workers=2)
    listening = {e["worker"]: e["pid"] for e in served.events() if e["event"] == "listening"}
    os.kill(listening[0], signal.SIGSTOP)
    try:
        for generation in range(1, RELOADS + 1):
            served.rewrite(padded(sandbox, generation))
            started = time.monotonic()
            served.proc.send_signal(signal.SIGHUP)
            await wait_for(
                lambda g=generation: len(reloads_of(served, 1)) == g,
                timeout=20,
                what=f"reload {generation} in the running worker",
            )
            # Not held up by the hung worker's full socket.
            assert time.monotonic() - started < 2.5, generation
    finally:
        os.kill(listening[0], signal.SIGCONT)

    def last_of_hung() -> bool:
        reloads = reloads_of(served, 0)
        return bool(reloads) and reloads[-1]["added"] == [f"gen{RELOADS}"]

    await wait_for(last_of_hung, timeout=20, what="the hung worker on the last config")
    assert served.count("worker_died") == 0
    assert served.proc.poll() is None
    served.proc.send_signal(signal.SIGTERM)
    await served.finish()

"""``workers: 2``: processes sharing the port, each with its own sessions (SPEC §3).

A rejected login in one worker must stop the others from trying: accounts lock.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from helpers import Served, ServeRoutes, iics_route, outcome, wait_for

from proxy.sandbox import Sandbox

AGENT = "/iics/saas/api/v2/agent"


async def statuses(served: Served, count: int) -> list[tuple[int, str]]:
    """``count`` requests, each on a new connection so the kernel spreads them."""
    return [await outcome(served.url(AGENT)) for _ in range(count)]


def workers_that_answered(served: Served) -> set[int]:
    return {e["worker"] for e in served.events() if e["event"] == "request"}


async def test_two_workers_serve_the_port_each_with_its_own_session(
    sandbox: Sandbox, serve_routes: ServeRoutes
) -> None:
    served = await serve_routes([iics_route(sandbox)], workers=2)
    results = await statuses(served, 40)
    assert results == [(200, "")] * 40
    assert workers_that_answered(served) == {0, 1}
    assert len(sandbox.state.logins_for("iics-v2-login")) == 2  # one per worker, never more
    served.proc.send_signal(signal.SIGTERM)
    events = await served.finish()
    assert sorted(e["worker"] for e in events if e["event"] == "stopped") == [0, 1]


async def test_a_rejected_login_in_one_worker_stops_the_other(
    sandbox: Sandbox, serve_routes: ServeRoutes
) -> None:
    served = await serve_routes([iics_route(sandbox, password="wrong")], workers=2)
    results = await statuses(served, 40)
    assert set(results) == {(502, "login_rejected")}
    assert workers_that_answered(served) == {0, 1}
    assert len(sandbox.state.logins_for("iics-v2-login")) == 1


async def test_sighup_reloads_every_worker_and_a_dead_worker_is_replaced(
    sandbox: Sandbox, serve_routes: ServeRoutes
) -> None:
    served = await serve_routes([iics_route(sandbox)], workers=2)
    served.proc.send_signal(signal.SIGHUP)
    await wait_for(lambda: served.count("config_reloaded") == 2, what="both workers reloaded")
    victim = next(e["pid"] for e in served.events() if e["event"] == "listening")
    os.kill(victim, signal.SIGKILL)
    await wait_for(lambda: served.count("listening") == 3, timeout=10, what="a replacement worker")
    assert await asyncio.wait_for(statuses(served, 10), 20) == [(200, "")] * 10
    served.proc.send_signal(signal.SIGTERM)
    await served.finish()


async def test_workers_exit_when_the_supervisor_is_killed(
    sandbox: Sandbox, serve_routes: ServeRoutes
) -> None:
    served = await serve_routes([iics_route(sandbox)], workers=2)
    pids = [e["pid"] for e in served.events() if e["event"] == "listening"]
    served.proc.kill()  # SIGKILL: no chance to forward anything
    served.proc.wait()
    await wait_for(lambda: not any(map(running, pids)), timeout=10, what="orphans to exit")


def running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper has exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status

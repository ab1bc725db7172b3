"""``workers: 2``: processes sharing the port, each with its own sessions (SPEC §3).

A rejected login in one worker must stop the others from trying: accounts lock.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import (
    Served,
    ServeRoutes,
    fetch,
    iics_route,
    ivanti_key_route,
    outcome,
    spawn_served,
    wait_for,
    write_config,
)

from proxy.sandbox import Sandbox
from proxy.server.supervisor import Backoff

AGENT = "/iics/saas/api/v2/agent"
INCIDENTS = "/ivanti/api/odata/businessobject/incidents"
NON_SIMPLE = {"X-Auth-Proxy": "1"}


async def statuses(served: Served, count: int, path: str = AGENT) -> list[tuple[int, str]]:
    """``count`` requests, each on a new connection so the kernel spreads them."""
    return [await outcome(served.url(path)) for _ in range(count)]


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


async def test_a_worker_restarted_after_a_reload_runs_the_new_config(
    sandbox: Sandbox, serve_routes: ServeRoutes
) -> None:
    served = await serve_routes([iics_route(sandbox)], workers=2)
    served.rewrite([iics_route(sandbox), ivanti_key_route(sandbox)])
    served.proc.send_signal(signal.SIGHUP)
    await wait_for(lambda: served.count("config_reloaded") == 2, what="both workers reloaded")
    victim = next(e["pid"] for e in served.events() if e["event"] == "listening")
    os.kill(victim, signal.SIGKILL)
    await wait_for(lambda: served.count("listening") == 3, timeout=10, what="a replacement worker")
    results = await asyncio.wait_for(statuses(served, 20, INCIDENTS), 30)
    assert results == [(200, "")] * 20
    assert workers_that_answered(served) == {0, 1}
    served.proc.send_signal(signal.SIGTERM)
    await served.finish()


async def test_post_reload_reloads_every_worker_through_the_supervisor(
    sandbox: Sandbox, serve_routes: ServeRoutes
) -> None:
    served = await serve_routes([iics_route(sandbox)], workers=2)
    served.rewrite([iics_route(sandbox), ivanti_key_route(sandbox)])
    async with aiohttp.ClientSession() as http:
        status, body, _ = await fetch(http, "POST", served.url("/-/reload"), headers=NON_SIMPLE)
    assert status == 200, body
    assert (body["kept"], body["added"]) == (["iics"], ["ivanti"])
    await wait_for(lambda: served.count("config_reloaded") == 2, what="both workers reloaded")
    assert await asyncio.wait_for(statuses(served, 20, INCIDENTS), 30) == [(200, "")] * 20
    assert workers_that_answered(served) == {0, 1}


async def test_a_refused_file_leaves_the_supervisor_on_the_config_it_had(
    sandbox: Sandbox, serve_routes: ServeRoutes
) -> None:
    served = await serve_routes([iics_route(sandbox)], workers=2)
    served.rewrite([iics_route(sandbox), ivanti_key_route(sandbox)])
    served.proc.send_signal(signal.SIGHUP)
    await wait_for(lambda: served.count("config_reloaded") == 2, what="both workers reloaded")

    served.config.write_text("routes: [\n")
    async with aiohttp.ClientSession() as http:
        status, body, _ = await fetch(http, "POST", served.url("/-/reload"), headers=NON_SIMPLE)
    assert status == 400 and "config not reloaded" in body["error"]["message"]
    served.proc.send_signal(signal.SIGHUP)
    await wait_for(lambda: served.count("reload_failed") == 2, what="the refused SIGHUP")
    # Said once each time, by the supervisor, not once per worker.
    assert all("worker" not in e for e in served.events() if e["event"] == "reload_failed")

    victim = next(e["pid"] for e in served.events() if e["event"] == "listening")
    os.kill(victim, signal.SIGKILL)
    await wait_for(lambda: served.count("listening") == 3, timeout=10, what="a replacement worker")
    assert await asyncio.wait_for(statuses(served, 20, INCIDENTS), 30) == [(200, "")] * 20
    assert workers_that_answered(served) == {0, 1}


async def test_a_worker_that_cannot_start_is_restarted_ever_later(
    sandbox: Sandbox, serve_routes: ServeRoutes, tmp_path: Path
) -> None:
    store = tmp_path / "sessions"
    served = await serve_routes(
        [iics_route(sandbox)], workers=2, session_store={"type": "local", "path": str(store)}
    )
    shutil.rmtree(store)
    store.write_text("not a directory: a worker started now cannot open its session store")
    victim = next(e for e in served.events() if e["event"] == "listening")
    os.kill(victim["pid"], signal.SIGKILL)

    def deaths() -> list[dict[str, Any]]:
        return [e for e in served.events() if e["event"] == "worker_died"]

    await wait_for(lambda: len(deaths()) == 3, timeout=30, what="three deaths in a row")
    assert [d["restart_in"] for d in deaths()] == [1, 2, 4]
    assert {d["worker"] for d in deaths()} == {victim["worker"]}
    # Each start waited out the delay announced before it: no busy loop.
    starts = [
        e
        for e in served.events()
        if e["event"] == "worker_started" and e["worker"] == victim["worker"]
    ][1:]
    assert len(starts) == 2 and served.count("worker_failed") == 2
    for died, started in zip(deaths(), starts, strict=False):
        assert stamp(started) - stamp(died) >= died["restart_in"] - 0.01
    served.proc.send_signal(signal.SIGTERM)  # during the third delay: no restart follows
    await served.finish()
    assert served.count("worker_started") == 4


PID_NAMESPACE = ("unshare", "--pid", "--fork", "--kill-child")


def can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run([*PID_NAMESPACE, "true"], capture_output=True, timeout=10, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(
    not can_unshare(), reason="needs unshare(1) and the right to make a PID namespace"
)
async def test_workers_run_under_a_supervisor_that_is_pid_1(
    sandbox: Sandbox, tmp_path: Path, unused_tcp_port: int
) -> None:
    # As a container's entry point: the supervisor is pid 1, the workers' parent.
    config = tmp_path / "config.yaml"
    listen = {"host": "127.0.0.1", "port": unused_tcp_port}
    write_config(config, [iics_route(sandbox)], listen=listen, workers=2)
    served = await spawn_served(config, unused_tcp_port, tmp_path, wrapper=PID_NAMESPACE)
    try:
        await wait_for(lambda: served.count("listening") == 2, what="both workers listening")
        assert await asyncio.wait_for(statuses(served, 20), 30) == [(200, "")] * 20
        assert served.count("worker_died") == 0
        # unshare ignores SIGTERM while it waits: the supervisor is its one child.
        (supervisor,) = children(served.proc.pid)
        os.kill(supervisor, signal.SIGTERM)
        events = await served.finish()
        assert sorted(e["worker"] for e in events if e["event"] == "stopped") == [0, 1]
    finally:
        served.proc.kill()  # with --kill-child, unshare takes the namespace down with it
        served.proc.wait()


def test_restart_delays_double_up_to_a_cap_and_start_again_after_a_stable_run() -> None:
    backoff = Backoff(first=1, cap=30, stable=60)
    assert [backoff.delay(lived=2) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay(lived=60) == 1
    assert backoff.delay(lived=59) == 2


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


def stamp(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

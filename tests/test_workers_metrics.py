"""``/-/metrics`` with ``workers: 2``: one set of metrics, whichever worker answers.

Each scrape goes on a new connection, so the kernel hands scrapes to both workers; every
one of them must show the requests of both, and a worker killed and replaced must not make
a counter go back. With one worker, no file is written.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import aiohttp
from helpers import (
    Samples,
    Served,
    ServeRoutes,
    iics_route,
    metric,
    outcome,
    scrape,
    status_of,
    wait_for,
    wait_for_async,
)

from proxy.sandbox import Sandbox

AGENT = "/iics/saas/api/v2/agent"
SCRAPES = 12


async def traffic(served: Served, count: int) -> None:
    """``count`` proxied requests, each on a new connection so both workers serve some."""
    for _ in range(count):
        assert await outcome(served.url(AGENT)) == (200, "")


async def scrape_new_connection(served: Served) -> Samples:
    """A scrape on a connection of its own (the kernel picks a worker for it), followed
    on the same connection by a call of ``/-/sessions``, whose access line names the
    worker (answered scrapes are not access-logged)."""
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as http:
        samples = await scrape(http, served.url("/-/metrics"))
        assert await status_of(http, served.url("/-/sessions")) == 200
        return samples


def answered(samples: Samples) -> float | None:
    return metric(samples, "auth_proxy_requests_total", route="iics", status="2xx", code="")


def cpu(samples: Samples) -> float:
    value = metric(samples, "process_cpu_seconds_total")
    assert value is not None
    return value


def scrapers(served: Served) -> set[int]:
    """The workers that answered a scrape (see ``scrape_new_connection``)."""
    return {e["worker"] for e in served.events() if e.get("path") == "/-/sessions"}


def run_dirs(state: Path) -> list[Path]:
    return list(state.glob("auth-proxy-run-*")) if state.exists() else []


async def test_scrapes_of_two_workers_agree_and_never_go_back(
    sandbox: Sandbox, serve_routes: ServeRoutes, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    served = await serve_routes([iics_route(sandbox)], workers=2, state_dir=str(state))
    [run_dir] = run_dirs(state)
    await traffic(served, 20)

    scrapes = [await scrape_new_connection(served) for _ in range(SCRAPES)]
    assert scrapers(served) == {0, 1}  # both workers answered scrapes...
    assert [answered(s) for s in scrapes] == [20] * SCRAPES  # ...with the same count
    assert all(metric(s, "auth_proxy_sessions_active", route="iics") == 1 for s in scrapes)
    cpus = [cpu(s) for s in scrapes]
    assert cpus == sorted(cpus)
    assert any((run_dir / "metrics").iterdir())

    async def both_logins_shown() -> bool:
        samples = await scrape_new_connection(served)
        # Memory sessions: one login per worker, added up.
        return metric(samples, "auth_proxy_logins_last_hour", route="iics") == 2

    # The other worker's part is at most a second old (it publishes every second).
    await wait_for_async(both_logins_shown, what="both workers' logins in a scrape")

    # A worker killed and replaced: its counts stay in the sum.
    victim = next(e["pid"] for e in served.events() if e["event"] == "listening")
    os.kill(victim, signal.SIGKILL)
    await wait_for(lambda: served.count("listening") == 3, timeout=10, what="a replacement worker")
    await traffic(served, 10)
    later = [await scrape_new_connection(served) for _ in range(SCRAPES)]
    assert [answered(s) for s in later] == [30] * SCRAPES
    later_cpus = [cpu(s) for s in later]
    assert later_cpus == sorted(later_cpus)
    assert later_cpus[0] >= cpus[-1]

    served.proc.send_signal(signal.SIGTERM)
    await served.finish()
    assert run_dirs(state) == []  # the run's files go with it


async def test_one_worker_keeps_its_metrics_in_memory(
    sandbox: Sandbox, serve_routes: ServeRoutes, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    served = await serve_routes([iics_route(sandbox)], state_dir=str(state))
    await traffic(served, 3)
    samples = await scrape_new_connection(served)
    assert answered(samples) == 3
    assert metric(samples, "auth_proxy_requests_in_flight") == 0
    assert run_dirs(state) == []
    served.proc.send_signal(signal.SIGTERM)
    await served.finish()


async def test_restarted_workers_leave_no_files_behind_and_counts_stay(
    sandbox: Sandbox, serve_routes: ServeRoutes, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    served = await serve_routes([iics_route(sandbox)], workers=2, state_dir=str(state))
    [run_dir] = run_dirs(state)
    metrics_dir = run_dir / "metrics"
    await traffic(served, 6)
    await scrape_new_connection(served)
    at_start = len(list(metrics_dir.iterdir()))

    rounds = 3  # both workers killed each round: restarts after 1, 2, 4 s
    for done in range(1, rounds + 1):
        pids = [e["pid"] for e in served.events() if e["event"] == "listening"][-2:]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        await wait_for(
            lambda d=done: served.count("listening") == 2 + 2 * d,
            timeout=15,
            what=f"round {done} of replacements",
        )
        await traffic(served, 2)
        assert answered(await scrape_new_connection(served)) == 6 + 2 * done

    # Six dead workers: their counts are kept in a bounded number of files (one per kind).
    assert len(list(metrics_dir.iterdir())) <= at_start + 3
    served.proc.send_signal(signal.SIGTERM)
    await served.finish()

"""The audit log (``log.audit``, README "Audit log"): one JSON line per change and per
refusal, naming the client; rotated on SIGUSR1 and SIGHUP; shared by workers without
torn lines; a full disk costs audit lines, never requests."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import (
    ProxyFactory,
    ServeRoutes,
    Upstream,
    base,
    fetch,
    metric,
    scrape,
    wait_for,
)

from proxy.core.masking import MASK

CI_TOKEN = "ci-token-4f9a1c"
OPS_TOKEN = "ops-token-77b2e0"
CLIENTS = {
    "tokens": [
        {
            "name": "ci-scheduler",
            "token": CI_TOKEN,
            "routes": ["reports"],
            "methods": ["GET", "HEAD", "POST"],
        },
        {"name": "ops", "token": OPS_TOKEN, "admin": True},
    ]
}


def bearer(token: str) -> dict[str, str]:
    return {"Proxy-Authorization": f"Bearer {token}"}


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def written(path: Path, count: int) -> list[dict[str, Any]]:
    """The file's records once it has ``count`` lines: a line is written as its request
    ends, which the client may see a moment before."""
    await wait_for(
        lambda: path.exists() and path.read_text().count("\n") >= count, what=f"{count} lines"
    )
    return records(path)


async def test_changes_and_refusals_are_audited_with_the_client_and_reads_are_not(
    upstream: Upstream, make_proxy: ProxyFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    audit = tmp_path / "audit" / "audit.jsonl"  # the directory is created
    server = await make_proxy(
        routes=[upstream.route(name="reports", prefix="/reports"), upstream.route()],
        client_auth=CLIENTS,
        log={"audit": str(audit)},
    )
    ci = bearer(CI_TOKEN)
    await fetch(http, "GET", base(server, "/reports/daily"), headers=ci)  # a read
    await fetch(http, "HEAD", base(server, "/reports/daily"), headers=ci)  # a read
    await fetch(http, "GET", base(server, "/-/healthz"))  # a probe
    posted = await fetch(
        http,
        "POST",
        base(server, "/reports/run?access_token=abcdef123456&day=1"),
        headers={**ci, "X-Request-ID": "req-42"},
        data=b"{}",
    )
    assert posted.status == 200
    await fetch(http, "DELETE", base(server, "/reports/daily"), headers=ci)  # method
    await fetch(http, "GET", base(server, "/up/x"), headers=ci)  # route
    await fetch(http, "GET", base(server, "/-/sessions"), headers=ci)  # admin
    await fetch(http, "GET", base(server, "/reports/daily"), headers=bearer("wrong"))
    await fetch(http, "PUT", base(server, "/up/x"), headers=bearer(OPS_TOKEN), data=b"x")

    lines = await written(audit, 6)
    assert [
        (r["client"], r["method"], r["route"], r["path"], r["status"], r["code"]) for r in lines
    ] == [
        ("ci-scheduler", "POST", "reports", "/reports/run", 200, None),
        ("ci-scheduler", "DELETE", "reports", "/reports/daily", 403, "forbidden"),
        ("ci-scheduler", "GET", "up", "/up/x", 403, "forbidden"),
        ("ci-scheduler", "GET", None, "/-/sessions", 403, "forbidden"),
        (None, "GET", None, "/reports/daily", 401, "client_unauthorized"),
        ("ops", "PUT", "up", "/up/x", 200, None),
    ]
    first = lines[0]
    assert first["request_id"] == "req-42"
    assert first["client_addr"] == "127.0.0.1"
    assert first["timestamp"].endswith("Z")
    text = audit.read_text()
    assert CI_TOKEN not in text and "wrong" not in text and OPS_TOKEN not in text
    assert stat.S_IMODE(audit.stat().st_mode) == 0o600


async def test_paths_are_redacted_as_in_the_access_log(
    upstream: Upstream, make_proxy: ProxyFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    routes = [upstream.route(name="reports", prefix="/reports"), upstream.route()]
    server = await make_proxy(routes=routes, client_auth=CLIENTS, log={"audit": str(audit)})
    # A tool that puts its token in the URL by mistake.
    await fetch(http, "POST", base(server, f"/up/x/{OPS_TOKEN}"), headers=bearer(OPS_TOKEN))
    [line] = await written(audit, 1)
    assert OPS_TOKEN not in audit.read_text()
    assert line["path"] == f"/up/x/{MASK}"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
async def test_a_full_disk_loses_audit_lines_but_never_a_request(
    upstream: Upstream, make_proxy: ProxyFactory, http: aiohttp.ClientSession, logs: Any
) -> None:
    server = await make_proxy(routes=[upstream.route()], log={"audit": "/dev/full"})
    for _ in range(3):
        assert (await fetch(http, "POST", base(server, "/up/x"), data=b"x")).status == 200
    [failed] = logs.events("audit_write_failed")  # once, not once per line
    assert failed["level"] == "error" and failed["path"] == "/dev/full"
    samples = await scrape(http, base(server, "/-/metrics"))
    assert metric(samples, "auth_proxy_audit_write_errors_total") == 3
    assert (await fetch(http, "GET", base(server, "/up/x"))).status == 200


async def test_a_reload_can_move_the_audit_log(
    upstream: Upstream, make_proxy: ProxyFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    first, second = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    server = await make_proxy(routes=[upstream.route()], log={"audit": str(first)})
    await fetch(http, "POST", base(server, "/up/a"))
    config = server.config.model_copy(
        update={"log": server.config.log.model_copy(update={"audit": str(second)})}
    )
    server.reload(config)
    await fetch(http, "POST", base(server, "/up/b"))
    assert [r["path"] for r in await written(first, 1)] == ["/up/a"]
    assert [r["path"] for r in await written(second, 1)] == ["/up/b"]


async def test_an_audit_log_removed_under_the_proxy_is_started_again(
    upstream: Upstream, make_proxy: ProxyFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """An operator's ``rm`` (or a clean-up of the whole directory) must not send the
    following lines into a file nobody can read any more."""
    audit = tmp_path / "audit" / "audit.jsonl"
    server = await make_proxy(routes=[upstream.route()], log={"audit": str(audit)})
    await fetch(http, "POST", base(server, "/up/a"))
    assert [r["path"] for r in await written(audit, 1)] == ["/up/a"]
    audit.unlink()
    await fetch(http, "POST", base(server, "/up/b"))
    assert [r["path"] for r in await written(audit, 1)] == ["/up/b"]
    shutil.rmtree(audit.parent)
    await fetch(http, "POST", base(server, "/up/c"))
    assert [r["path"] for r in await written(audit, 1)] == ["/up/c"]
    assert stat.S_IMODE(audit.stat().st_mode) == 0o600
    assert stat.S_IMODE(audit.parent.stat().st_mode) == 0o700


# --------------------------------------------------------------------------- as a process


async def post(url: str) -> int:
    """One POST on a new connection (so workers share the load); its status."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http, http.post(url) as resp:
        await resp.read()
        return resp.status


async def test_sigusr1_and_sighup_reopen_the_audit_log_after_a_rotation(
    upstream: Upstream, serve_routes: ServeRoutes, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    served = await serve_routes([upstream.route()], log={"audit": str(audit)})
    assert await asyncio.wait_for(post(served.url("/up/before")), 10) == 200
    for number, sig in enumerate((signal.SIGUSR1, signal.SIGHUP), 1):
        audit.rename(tmp_path / f"audit.jsonl.{number}")  # what logrotate does
        served.proc.send_signal(sig)
        await wait_for(lambda n=number: served.count("audit_reopened") == n, what="a reopen")
        assert await asyncio.wait_for(post(served.url(f"/up/after-{sig.name}")), 10) == 200
    assert [r["path"] for r in records(tmp_path / "audit.jsonl.1")] == ["/up/before"]
    assert [r["path"] for r in records(tmp_path / "audit.jsonl.2")] == ["/up/after-SIGUSR1"]
    assert [r["path"] for r in await written(audit, 1)] == ["/up/after-SIGHUP"]
    assert served.proc.poll() is None


async def test_workers_share_the_audit_log_line_by_line(
    upstream: Upstream, serve_routes: ServeRoutes, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    served = await serve_routes([upstream.route()], workers=2, log={"audit": str(audit)})
    count = 200
    urls = [served.url(f"/up/{i}") for i in range(count)]
    for start in range(0, count, 20):  # 20 at a time, each on its own connection
        results = await asyncio.wait_for(
            asyncio.gather(*(post(url) for url in urls[start : start + 20])), 30
        )
        assert set(results) == {200}
    lines = await written(audit, count)  # every line parses: none torn or interleaved
    assert len(lines) == count
    assert sorted(r["path"] for r in lines) == sorted(f"/up/{i}" for i in range(count))
    assert {r["worker"] for r in lines} == {0, 1}

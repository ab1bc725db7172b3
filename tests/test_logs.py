"""What the proxy logs: one access line per request (its request id also sent upstream),
a console format for humans, and logins rejected, failed and renewed with their reasons."""

from __future__ import annotations

import io
import json

import aiohttp
import pytest
from helpers import base, iics_route, status_of, wait_for

from proxy.core.clock import ManualClock
from proxy.ops.logs import setup_logging
from proxy.sandbox import Sandbox

AGENT = "/saas/api/v2/agent"


async def test_one_access_line_per_request_and_request_id_sent_upstream(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, logs
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    assert await status_of(http, base(server, "/iics" + AGENT + "?x=1")) == 200
    assert (
        await status_of(
            http, base(server, "/iics" + AGENT), headers={"X-Request-ID": "client-chosen-id"}
        )
        == 200
    )

    access = [e for e in logs.events("request") if e["route"] == "iics"]
    assert len(access) == 2
    first, second = access
    assert {"route", "method", "path", "status", "duration_ms", "upstream_ms", "replayed"} <= set(
        first
    )
    assert (first["method"], first["path"], first["status"], first["replayed"]) == (
        "GET",
        "/iics" + AGENT,
        200,
        False,
    )
    assert first["duration_ms"] >= first["upstream_ms"] > 0
    seen = sandbox.state.requests_to(AGENT)
    # Generated ids go upstream so the vendor's logs can be matched with ours ...
    assert seen[0].headers["X-Request-ID"] == first["request_id"]
    # ... and a client's own id is kept, once.
    assert seen[1].headers.getall("X-Request-ID") == ["client-chosen-id"]
    assert second["request_id"] == "client-chosen-id"


def test_console_format_is_for_humans() -> None:
    import structlog

    out = io.StringIO()
    setup_logging("info", "console", stream=out)
    structlog.get_logger("auth_proxy").info("login_ok", route="iics", password="hunter2")
    line = out.getvalue().strip()
    assert "login_ok" in line and "route=iics" in line
    assert "hunter2" not in line
    with pytest.raises(ValueError):
        json.loads(line)


async def test_login_rejection_failure_and_renewal_are_logged_with_reasons(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, logs, clock: ManualClock
) -> None:
    cdgc = {
        "name": "cdgc",
        "match": {"prefix": "/cdgc"},
        "auth": {
            "type": "idmc-jwt",
            "login_url": sandbox.urls.login,
            "username": "demo",
            "password": "demo-password",
            "upstream": sandbox.urls.cdgc,
        },
    }
    bad = iics_route(sandbox, name="bad", prefix="/bad", password="s3cret-wrong")
    server = await make_proxy(routes=[iics_route(sandbox), bad, cdgc])

    assert await status_of(http, base(server, "/bad" + AGENT)) == 502
    (rejected,) = logs.events("login_rejected")
    assert rejected["route"] == "bad" and rejected["retry_after"] == 300
    assert rejected["reason"]  # the vendor's code/text, never the password
    assert "s3cret-wrong" not in logs.text

    sandbox.state.login_status_override = 503
    assert await status_of(http, base(server, "/iics" + AGENT)) == 502
    (failed,) = logs.events("login_failed")
    assert failed["route"] == "iics" and failed["code"] == "login_failed"
    assert "503" in failed["reason"] and failed["backoff"] == 1.0
    sandbox.state.login_status_override = None

    clock.advance(2)
    assert await status_of(http, base(server, "/iics" + AGENT)) == 200
    (ok,) = [e for e in logs.events("login_ok") if e["route"] == "iics"]
    assert ok["upstream"] == sandbox.urls.pod

    assert await status_of(http, base(server, "/cdgc/data360/search/v1/assets")) == 200
    clock.advance(1700)  # the JWT is within its refresh margin: renewed without a login
    assert await status_of(http, base(server, "/cdgc/data360/search/v1/assets")) == 200
    await wait_for(lambda: bool(logs.events("session_renewed")), what="session_renewed")
    assert logs.events("session_renewed")[0]["route"] == "cdgc"

"""What the proxy logs: one access line per request (its request id also sent upstream),
with who asked, the bytes each way and the upstream's status; the events of a request
sharing its id; a console format for humans; levels; aiohttp's and asyncio's records in
the same JSON; logins rejected, failed and renewed with their reasons."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from helpers import (
    LogCapture,
    ServeRoutes,
    Upstream,
    base,
    dead_route,
    fetch,
    iics_route,
    raw_exchange,
    status_of,
    wait_for,
)

from proxy.core.clock import ManualClock
from proxy.ops.logs import REQUEST_ID, setup_logging
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


def access_line(logs: LogCapture, request_id: str) -> dict[str, Any]:
    (line,) = [e for e in logs.events("request") if e["request_id"] == request_id]
    return line


async def test_the_access_line_names_the_client_the_bytes_and_the_upstream_status(
    make_proxy, upstream: Upstream, http: aiohttp.ClientSession, logs: LogCapture
) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        await request.read()
        size = int(request.query["size"])
        if request.query.get("stream"):  # no length: streamed back in chunks
            response = web.StreamResponse(status=201)
            await response.prepare(request)
            for _ in range(size // 1000):
                await response.write(b"x" * 1000)
            await response.write_eof()
            return response
        return web.Response(status=201, body=b"x" * size)

    upstream.handler = answer
    server = await make_proxy(routes=[upstream.route(upstream={"retry_body_limit": 1000})])
    cases = [
        (700, "", b"k" * 300),  # kept for a replay, answered whole
        (300_000, "&stream=1", b"s" * 200_000),  # both ways streamed
    ]
    for size, query, body in cases:
        async with http.post(base(server, f"/up/x?size={size}{query}"), data=body) as resp:
            assert resp.status == 201 and len(await resp.read()) == size
            line = access_line(logs, resp.headers["X-Request-ID"])
        assert (line["bytes_in"], line["bytes_out"]) == (len(body), size)
        assert (line["status"], line["upstream_status"], line["code"]) == (201, 201, None)
        assert line["client_addr"] == "127.0.0.1"


async def test_a_failing_requests_warning_and_access_line_share_its_id(
    make_proxy, http: aiohttp.ClientSession, logs: LogCapture, unused_tcp_port: int
) -> None:
    dead = dead_route(unused_tcp_port)
    server = await make_proxy(routes=[dead])
    for path, code in (("/dead/x", "upstream_unreachable"), ("/nowhere", "no_route")):
        answer = await fetch(http, "GET", base(server, path))
        request_id = answer.headers["X-Request-ID"]
        (warning,) = [e for e in logs.events("request_failed") if e["code"] == code]
        assert warning["level"] == "warning" and warning["request_id"] == request_id
        line = access_line(logs, request_id)
        assert (line["status"], line["code"], line["upstream_status"]) == (
            answer.status,
            code,
            None,
        )


async def test_level_warning_keeps_warnings_and_leaves_out_access_lines(
    make_proxy, upstream: Upstream, http: aiohttp.ClientSession
) -> None:
    logs = LogCapture()
    setup_logging("warning", "json", stream=logs.buffer)
    server = await make_proxy(routes=[upstream.route()], log={"level": "warning"})
    assert await status_of(http, base(server, "/up/x")) == 200
    assert await status_of(http, base(server, "/nowhere")) == 404
    assert [e["event"] for e in logs.events()] == ["request_failed"]


async def test_probes_and_answered_polls_are_not_access_logged(
    make_proxy, upstream: Upstream, http: aiohttp.ClientSession, logs: LogCapture
) -> None:
    """Prometheus scrapes and an open status page's refreshes are not access-logged; the
    status page itself is, once per visit."""
    server = await make_proxy(routes=[upstream.route()])
    polled = ("/-/healthz", "/-/readyz", "/-/metrics", "/-/status.json", "/-/status.js")
    for path in (*polled, "/-/sessions", "/-/"):
        assert await status_of(http, base(server, path)) == 200
    assert [e["path"] for e in logs.events("request")] == ["/-/sessions", "/-/"]


def test_records_of_the_logging_module_are_rendered_like_ours() -> None:
    out = io.StringIO()
    setup_logging("info", "json", stream=out)
    REQUEST_ID.set("the-request")  # this test's context only
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("aiohttp.server").exception("Error handling request")
    logging.getLogger("aiohttp.internal").debug("below the level")
    structlog.get_logger("auth_proxy").info("ours")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert (first["event"], first["logger"], first["level"]) == (
        "Error handling request",
        "aiohttp.server",
        "error",
    )
    assert "ValueError: boom" in first["exception"] and first["timestamp"]
    assert first["request_id"] == second["request_id"] == "the-request"

    setup_logging("info", "console", stream=out)  # the same records, for humans
    logging.getLogger("aiohttp.server").warning("for humans")
    last = out.getvalue().splitlines()[-1]
    assert "for humans" in last and not last.startswith("{")
    assert out.getvalue().count("for humans") == 1  # the JSON handler was replaced


async def test_serve_writes_nothing_but_json_lines_to_stdout(
    serve_routes: ServeRoutes, upstream: Upstream, http: aiohttp.ClientSession
) -> None:
    route = upstream.route(upstream={"retry_body_limit": 10})
    served = await serve_routes([route], log={"level": "debug", "format": "json"})
    status, _, _ = await raw_exchange(served.port, b"GET /up/x HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n")
    assert status == 400
    # A client that hangs up while its body is being streamed upstream.
    _, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(
        b"POST /up/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n0123456789ab"
    )
    await writer.drain()
    await wait_for(lambda: bool(upstream.seen), what="the upload reaching the upstream")
    writer.close()
    await wait_for(lambda: served.count("client_aborted") == 1, what="the hang-up")
    assert await status_of(http, served.url("/up/x")) == 200
    served.proc.send_signal(signal.SIGTERM)
    events = await served.finish()  # every stdout line parsed as one JSON object

    loggers = {e.get("logger") for e in events}
    assert {"aiohttp.server", "asyncio"} <= loggers  # aiohttp's and asyncio's own records
    assert served.count("bad_request") == 1
    (aborted,) = [e for e in events if e["event"] == "client_aborted"]
    line = next(e for e in events if e["event"] == "request" and e["status"] == 499)
    assert aborted["request_id"] == line["request_id"]
    assert served.err.read_text() == ""

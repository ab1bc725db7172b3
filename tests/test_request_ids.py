"""Request ids: a client's own X-Request-ID when it is plain and short, else one of the
proxy's; the same id in the access line, on every answer, upstream, and on every event
logged on the request's behalf, the login it triggers included."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from helpers import LogCapture, Upstream, base, fetch, iics_route

from proxy.sandbox import Sandbox

AGENT_PATH = "/saas/api/v2/agent"
UUID = "3f2b1c9e-8d7a-4e6f-9a1b-2c3d4e5f6a7b"


def ids_of(logs: LogCapture, event: str) -> list[str]:
    return [e["request_id"] for e in logs.events(event)]


@pytest.mark.parametrize("sent", [UUID, "job.42:step/7+a=b~c@d_e", "x" * 128])
async def test_a_plain_client_id_is_kept(
    make_proxy, upstream: Upstream, http: aiohttp.ClientSession, logs: LogCapture, sent: str
) -> None:
    server = await make_proxy(routes=[upstream.route()])
    answer = await fetch(http, "GET", base(server, "/up/x"), headers={"X-Request-ID": sent})
    assert answer.headers["X-Request-ID"] == sent
    assert upstream.seen[0].headers.getall("X-Request-ID") == [sent]
    assert ids_of(logs, "request") == [sent]


@pytest.mark.parametrize("sent", ["x" * 129, "two words", 'a"b', "a;b", "a\\b", "{}", ""])
async def test_an_unsafe_or_overlong_client_id_is_replaced(
    make_proxy, upstream: Upstream, http: aiohttp.ClientSession, logs: LogCapture, sent: str
) -> None:
    server = await make_proxy(routes=[upstream.route()])
    answer = await fetch(http, "GET", base(server, "/up/x"), headers={"X-Request-ID": sent})
    own = answer.headers["X-Request-ID"]
    assert own != sent and own.isalnum()
    assert upstream.seen[0].headers.getall("X-Request-ID") == [own]  # the client's is not
    assert ids_of(logs, "request") == [own]


async def test_every_answer_names_its_request_id(
    make_proxy, upstream: Upstream, http: aiohttp.ClientSession, logs: LogCapture
) -> None:
    server = await make_proxy(routes=[upstream.route()])
    answers = [
        await fetch(http, "GET", base(server, "/up/x")),  # proxied
        await fetch(http, "GET", base(server, "/nowhere")),  # the proxy's error
        await fetch(http, "GET", base(server, "/-/sessions")),  # admin
        await fetch(http, "POST", base(server, "/up/api/rest/authentication/login")),  # emulated
    ]
    assert [a.status for a in answers] == [200, 404, 200, 200]
    assert [a.headers["X-Request-ID"] for a in answers] == ids_of(logs, "request")
    assert len(set(ids_of(logs, "request"))) == 4


async def test_the_login_a_request_triggers_carries_its_id(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, logs: LogCapture
) -> None:
    """Concurrent requests share one login; its events carry the id of the request that
    started it, whichever request's client stays to the end."""
    server = await make_proxy(routes=[iics_route(sandbox)])
    sent = [f"cold-{n}" for n in range(3)]
    answers = await asyncio.gather(
        *(
            fetch(http, "GET", base(server, "/iics" + AGENT_PATH), headers={"X-Request-ID": i})
            for i in sent
        )
    )
    assert [a.status for a in answers] == [200, 200, 200]
    (login,) = ids_of(logs, "login_ok")
    assert login in sent
    assert set(ids_of(logs, "login_call")) == {login}  # each vendor call of that login


async def test_a_refused_login_and_its_requests_access_line_share_the_id(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, logs: LogCapture
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox, password="s3cret-wrong")])
    answer = await fetch(http, "GET", base(server, "/iics" + AGENT_PATH))
    assert answer.status == 502
    (rejected,) = logs.events("login_rejected")
    assert rejected["level"] == "warning"
    assert [rejected["request_id"]] == ids_of(logs, "request") == [answer.headers["X-Request-ID"]]
    (line,) = logs.events("request")
    assert line["code"] == answer.headers["X-Auth-Proxy-Error"] == "login_rejected"

"""Security (SPEC §7, §8): client auth, DNS rebinding, hostile input, no session leaks."""

from __future__ import annotations

import json

import aiohttp
import pytest
from aiohttp import web
from helpers import Upstream, base, iics_route, prefix_route, raw_exchange
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.server.routing import Router
from proxy.upstream.headers import rewrite_location

# ---------------------------------------------------------------- client authentication


async def test_client_auth_requires_a_valid_bearer_token(
    sandbox, make_proxy, http: aiohttp.ClientSession, monkeypatch
) -> None:
    monkeypatch.setenv("CLIENT_TOKEN", "tok-from-env")
    server = await make_proxy(
        routes=[iics_route(sandbox)],
        client_auth={"tokens": ["tok-literal", {"env": "CLIENT_TOKEN"}]},
    )
    url = base(server, "/iics/saas/api/v2/agent")
    for headers in ({}, {"Proxy-Authorization": "Bearer nope"}, {"Proxy-Authorization": "Basic x"}):
        async with http.get(url, headers=headers) as resp:
            assert resp.status == 401
            assert resp.headers["X-Auth-Proxy-Error"] == "client_unauthorized"
    assert sandbox.state.logins == []  # refused before any login
    for token in ("tok-literal", "tok-from-env"):
        async with http.get(url, headers={"Proxy-Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200
    # The client's token never travels upstream.
    assert all("Proxy-Authorization" not in r.headers for r in sandbox.state.requests)
    async with http.get(base(server, "/-/sessions")) as resp:
        assert resp.status == 401  # admin data needs the token too
    async with http.get(base(server, "/-/healthz")) as resp:
        assert resp.status == 200  # probes do not


async def test_dns_rebinding_host_is_refused_on_loopback(
    sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    route_by_host = {**iics_route(sandbox, name="byhost"), "match": {"host": "iics.example.test"}}
    server = await make_proxy(routes=[iics_route(sandbox), route_by_host])
    url = base(server, "/iics/saas/api/v2/agent")
    async with http.get(url, headers={"Host": "attacker.example:8080"}) as resp:
        assert resp.status == 403
        assert resp.headers["X-Auth-Proxy-Error"] == "forbidden"
    for host in ("127.0.0.1", "localhost:8080", "api.localhost", "[::1]:8080"):
        async with http.get(url, headers={"Host": host}) as resp:
            assert resp.status == 200, host
    # A configured route host is served too (by its own route, without a prefix).
    by_host = base(server, "/saas/api/v2/agent")
    async with http.get(by_host, headers={"Host": "iics.example.test"}) as resp:
        assert resp.status == 200
    assert sandbox.state.logins_for("iics-v2-login")  # the refused request caused none by itself


# ---------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (
            b"GET /iics/saas/api/v2/agent HTTP/1.1\r\nHost: localhost\r\nX-Big: "
            + b"a" * 40_000
            + b"\r\n\r\n",
            400,
            "bad_request",
        ),
        (b"GET /iics/saas/%zz/agent HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "bad_request"),
        (b"GET http://evil.example/steal HTTP/1.1\r\nHost: evil.example\r\n\r\n", 403, "forbidden"),
        (b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", 403, "forbidden"),
        (
            b"GET /iics/x HTTP/1.1\r\nHost: localhost\r\nBad Header Name: x\r\n\r\n",
            400,
            "bad_request",
        ),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", 400, "bad_request"),
    ],
    ids=[
        "oversized-header",
        "bad-percent",
        "absolute-form",
        "connect",
        "bad-header",
        "tls-on-http",
    ],
)
async def test_hostile_requests_get_a_spec_error_and_the_server_stays_healthy(
    sandbox, make_proxy, http: aiohttp.ClientSession, logs, raw: bytes, status: int, code: str
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    got_status, headers, body = await raw_exchange(server.port, raw)
    assert got_status == status
    assert headers["x-auth-proxy-error"] == code
    error = json.loads(body)["error"]
    assert error["code"] == code and error["message"]
    assert b"aaaa" not in body  # the offending bytes are not echoed
    assert sandbox.state.logins == [] and sandbox.state.requests == []
    assert "aaaaaaaa" not in logs.text
    async with http.get(base(server, "/iics/saas/api/v2/agent")) as resp:
        assert resp.status == 200


async def test_a_login_answer_without_a_session_id_is_login_failed(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response({"serverUrl": f"{upstream.url}/saas"})  # no icSessionId

    upstream.handler = handler
    auth = {"type": "iics-password", "login_url": upstream.url, "username": "u", "password": "p"}
    server = await make_proxy(routes=[prefix_route("iics", auth)])
    async with http.get(base(server, "/iics/saas/api/v2/agent")) as resp:
        assert resp.status == 502
        error = (await resp.json())["error"]
    assert error == {
        "code": "login_failed",
        "message": "IICS v2 login answer has no icSessionId",
        "route": "iics",
    }


# ---------------------------------------------------------------- the session never leaks


async def test_no_client_visible_response_carries_the_real_session(
    sandbox, make_proxy, http: aiohttp.ClientSession, upstream: Upstream
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    visible: list[str] = []

    async def fetch(method: str, path: str, **kwargs) -> None:
        async with http.request(method, base(server, path), allow_redirects=False, **kwargs) as r:
            visible.append(str(r.status) + repr(list(r.headers.items())) + await r.text())

    await fetch("GET", "/iics/saas/api/v2/agent")
    await fetch("POST", "/iics/ma/api/v2/user/login", json={})
    await fetch("POST", "/iics/saas/public/core/v3/login", json={})
    await fetch("POST", "/iics/saas/api/v2/user/logout")
    await fetch("GET", "/iics/saas/api/v2/redirect")
    await fetch("GET", "/iics/saas/api/v2/status/404")
    await fetch("GET", "/iics/saas/api/v2/status/403")
    await fetch("GET", "/-/sessions")
    await fetch("GET", "/nowhere")
    (real_id,) = sandbox.state.iics_sessions
    for text in visible:
        assert real_id not in text
        assert "demo-password" not in text


async def test_set_cookie_carrying_the_session_is_not_passed_to_clients(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        key = request.headers["Authorization"].removeprefix("rest_api_key=")
        response = web.Response(text="ok")
        response.headers.add("Set-Cookie", f"SID={key}; Path=/; HttpOnly")
        response.headers.add("Set-Cookie", "theme=dark; Path=/")
        return response

    upstream.handler = handler
    server = await make_proxy(routes=[upstream.route()])
    async with http.get(base(server, "/up/x")) as resp:
        cookies = resp.headers.getall("Set-Cookie")
    assert cookies == ["theme=dark; Path=/"]


# ---------------------------------------------------------------- properties

segment = st.text(
    alphabet=st.characters(codec="ascii", exclude_characters="/?#%", min_codepoint=33),
    min_size=1,
    max_size=12,
)


@given(prefix=st.lists(segment, min_size=1, max_size=3), rest=st.lists(segment, max_size=4))
def test_router_strips_exactly_the_prefix(prefix: list[str], rest: list[str]) -> None:
    router: Router[str] = Router()
    route_prefix = "/" + "/".join(prefix)
    router.add_prefix(route_prefix, "r")
    path = route_prefix + "".join("/" + s for s in rest)
    matched = router.match(0, "", path)
    assert matched is not None
    _, matched_prefix, matched_rest = matched
    assert matched_prefix + (matched_rest if rest else "") == path
    assert matched_rest == ("/" + "/".join(rest) if rest else "/")
    # One more character on the last prefix segment is another route.
    assert router.match(0, "", route_prefix + "x" + "".join("/" + s for s in rest)) is None


@given(
    path=st.lists(segment, max_size=4),
    query=st.text(
        alphabet=st.characters(codec="ascii", min_codepoint=33, exclude_characters="#"), max_size=30
    ),
)
def test_location_rewrite_maps_upstream_urls_to_the_route_base(path: list[str], query: str) -> None:
    upstream_base = "https://na1.dm-us.informaticacloud.com"
    route_base = "http://127.0.0.1:8080/iics"
    tail = "".join("/" + s for s in path) + ("?" + query if query else "")
    assert rewrite_location(upstream_base + tail, upstream_base, route_base) == route_base + tail
    foreign = "https://na1.dm-us.informaticacloud.com.evil.test" + tail
    assert rewrite_location(foreign, upstream_base, route_base) == foreign


header_name = st.sampled_from(
    [
        "Connection",
        "Keep-Alive",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Proxy-Authorization",
        "Proxy-Connection",
        "X-Custom",
        "icSessionId",
        "Authorization",
        "Accept",
        "X-Hop-Named",
    ]
)


@given(
    headers=st.lists(st.tuples(header_name, st.text(alphabet="abc, ", max_size=10)), max_size=12)
)
def test_request_header_filtering(headers: list[tuple[str, str]]) -> None:
    from proxy.upstream.headers import HOP_BY_HOP, request_headers

    class Route:
        drop_headers = frozenset({"icsessionid", "authorization"})
        static_headers = (("X-Static", "s"),)

    incoming = CIMultiDictProxy(CIMultiDict(headers))
    out = request_headers(incoming, Route(), (("icSessionId", "real"),), ())  # type: ignore[arg-type]
    named = {t.strip().lower() for v in incoming.getall("Connection", []) for t in v.split(",")}
    for name in out:
        assert name not in HOP_BY_HOP and name.lower() not in named
    assert out.getall("icSessionId") == ["real"]
    assert "Authorization" not in out
    assert out["X-Static"] == "s"
    for name, value in headers:
        if name in ("X-Custom", "Accept") and name.lower() not in named:
            assert value in out.getall(name)

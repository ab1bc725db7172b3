"""Login/logout emulation matches the path as the vendor reads it, not its raw bytes.

A logout disguised by percent-encoding, doubled slashes, dot segments, path parameters or
case must still be answered by the proxy: forwarded, the vendor reads it as a logout and
ends the session every other client shares. A path whose ``..`` climbs out of the route
is refused rather than forwarded.
"""

from __future__ import annotations

import aiohttp
import pytest
from helpers import Upstream, base, iics_route, ivanti_session_route
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from proxy.core.errors import BadRequest
from proxy.flows import FLOWS
from proxy.flows.base import PLACEHOLDER_SESSION
from proxy.sandbox import Sandbox
from proxy.server.app import ProxyServer
from proxy.server.paths import route_key, vendor_paths

LOGOUTS = [
    "/saas/api/v2/user/%6Cogout",
    "/saas/api/v2/user/%6cogout",
    "/saas/api/v2/user/logou%74",
    "/saas/api/v2//user//logout",
    "/saas/api/v2/./user/./logout",
    "/saas/api/v2/user/x/../logout",
    "/saas/api/v2/user/logout/",
    "/saas/api/v2/user/logout;jsessionid=0123456789ABCDEF",
    "/saas/api/v2/user;a=b/logout",
    "/saas/api/v2/user/LOGOUT",
    "/SAAS/Api/V2/User/LogOut",
    "/saas/api/v2/user/x/%2e%2e/logout",
    "/saas/api/v2/user/x/%2E%2E/logout",
    "/saas/api/v2/user/x/..;/logout",
    "/saas/api/v2/user%2Flogout",
    "/saas/api/v2/user%5clogout",
    "/saas/api/v2/user/%256Cogout",
    "/saas/api/v2/user/logout.json",
    "/saas/api/v2/user/logout%20",
    "/saas/public/core/v3/%6Cogout",
    "/saas/public/core/v3/Logout/",
    "/ma/api/v2/user/LogOut",
    "/identity-service/api/v1/Logout",
    "/identity-service/api/v1/%6cogout",
]

LOGOUTALLS = [
    "/ma/api/v2/user/%6Cogoutall",
    "/ma/api/v2/user/LOGOUTALL",
    "/ma/api/v2/user/logoutall/",
    "/ma/api/v2//user/logoutall",
    "/ma/api/v2/user/logoutall;jsessionid=x",
    "/ma/api/v2/user/x/../logoutall",
    "/ma/api/v2/user/x/%2e%2e/logoutall",
    "/ma/api/v2/user%2flogoutall",
    "/saas/api/v2/user/%6cogoutAll",
]

CLIMBING = [
    "/..",
    "/../other",
    "/%2e%2e/other",
    "/%2E./other",
    "/saas/../../other",
    "/..;/other",
    "/a%2F..%2F..%2Fother",
    "/saas/%2e%2e/%2e%2e/x",
    "/a//../../x",
]


def target(server: ProxyServer, path: str) -> URL:
    """The URL sent exactly as written: no client-side normalisation of the path."""
    return URL(base(server, path), encoded=True)


async def live_session(http: aiohttp.ClientSession, server: ProxyServer, sandbox: Sandbox) -> str:
    """Make the proxy log in through an ordinary call; the real session id."""
    async with http.get(base(server, "/iics/saas/api/v2/agent")) as resp:
        assert resp.status == 200
    (real_id,) = sandbox.state.iics_sessions
    return real_id


async def assert_session_survived(
    http: aiohttp.ClientSession, server: ProxyServer, sandbox: Sandbox, real_id: str, seen: int
) -> None:
    """The vendor saw nothing since ``seen`` requests and still serves the same session."""
    assert [r.url for r in sandbox.state.requests[seen:]] == []
    assert real_id in sandbox.state.iics_sessions
    async with http.post(
        base(server, "/iics/saas/public/core/v3/import/package"), data=b"not replayable"
    ) as resp:
        assert resp.status == 200
    assert len(sandbox.state.logins) == 1  # no new login was needed
    assert sandbox.state.requests[-1].headers["INFA-SESSION-ID"] == real_id


@pytest.mark.parametrize("path", LOGOUTS)
async def test_a_disguised_logout_is_answered_by_the_proxy(
    path: str, sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    real_id = await live_session(http, server, sandbox)
    seen = len(sandbox.state.requests)
    async with http.post(target(server, "/iics" + path), headers={"icSessionId": "x"}) as resp:
        assert resp.status == 200
        assert await resp.json() == {}
    await assert_session_survived(http, server, sandbox, real_id, seen)


@pytest.mark.parametrize("path", LOGOUTALLS)
async def test_a_disguised_logoutall_is_refused(
    path: str, sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    real_id = await live_session(http, server, sandbox)
    seen = len(sandbox.state.requests)
    body = {"@type": "logout", "username": "demo", "password": "demo-password"}
    async with http.post(target(server, "/iics" + path), json=body) as resp:
        assert resp.status == 403
        assert resp.headers["X-Auth-Proxy-Error"] == "forbidden"
    await assert_session_survived(http, server, sandbox, real_id, seen)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD"])
async def test_a_logout_by_any_method_is_kept_from_the_vendor(
    method: str, sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    real_id = await live_session(http, server, sandbox)
    seen = len(sandbox.state.requests)
    async with http.request(method, base(server, "/iics/saas/api/v2/user/logout")) as resp:
        assert resp.status == 200
    async with http.request(method, base(server, "/iics/ma/api/v2/user/logoutall")) as resp:
        assert resp.status == 403
    await assert_session_survived(http, server, sandbox, real_id, seen)


@pytest.mark.parametrize(
    "path", ["/ma/api/v2/user/%6Cogin", "/ma/api/v2/user/LOGINSAML/", "/saas/public/core/v3/LOGIN"]
)
async def test_a_disguised_login_is_answered_by_the_proxy(
    path: str, sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    async with http.post(target(server, "/iics" + path), json={"username": "x"}) as resp:
        assert resp.status == 200
        body = await resp.json()
    session_id = body["icSessionId"] if "icSessionId" in body else body["userInfo"]["sessionId"]
    assert session_id == PLACEHOLDER_SESSION
    assert [seen.service for seen in sandbox.state.logins] == ["iics-v2-login"]  # the proxy's


async def test_a_login_by_another_method_is_forwarded(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    """Only a POST logs in; anything else cannot touch a session, and the vendor answers it."""
    server = await make_proxy(routes=[iics_route(sandbox)])
    async with http.get(base(server, "/iics/ma/api/v2/user/login")) as resp:
        assert resp.status == 405
        assert "X-Auth-Proxy-Error" not in resp.headers


async def test_a_disguised_ivanti_login_is_answered_by_the_proxy(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[ivanti_session_route(sandbox)])
    path = "/ivanti/api/rest//Authentication/%4Cogin/"
    async with http.post(target(server, path), json={"username": "y"}) as resp:
        assert resp.status == 200
        assert PLACEHOLDER_SESSION.upper() in await resp.json()
    assert len(sandbox.state.logins) == 1  # the proxy's own


@pytest.mark.parametrize("path", CLIMBING)
async def test_a_path_climbing_out_of_the_route_is_refused(
    path: str, make_proxy, upstream: Upstream, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[upstream.route()])
    async with http.get(target(server, "/up" + path)) as resp:
        assert resp.status == 400
        assert resp.headers["X-Auth-Proxy-Error"] == "bad_request"
        assert "route" in (await resp.json())["error"]["message"]
    assert upstream.seen == []


async def test_dot_segments_that_stay_inside_the_route_are_forwarded_as_sent(
    make_proxy, upstream: Upstream, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[upstream.route()])
    async with http.get(target(server, "/up/a/./b/../c;v=1/%2e%2e/d")) as resp:
        assert resp.status == 200
        assert (await resp.json())["path"] == "/a/./b/../c;v=1/%2e%2e/d"


# ---------------------------------------------------------------- the normaliser itself


def test_emulated_paths_are_declared_as_route_keys() -> None:
    """Lookups use route keys (lowercase, ...), so a declared path must be one too."""
    for flow in FLOWS.values():
        for path in flow.emulated_paths:
            assert route_key(path) == path, (flow.type_name, path)


@pytest.mark.parametrize(
    ("path", "keys"),
    [
        ("/saas/api/v2/agent", ("/saas/api/v2/agent",)),
        ("/Saas/API/v2/user/Logout/", ("/saas/api/v2/user/logout",)),
        ("/a/export.zip", ("/a/export",)),
        ("/a/.well-known", ("/a/.well-known",)),
        ("/a/%7euser/%41", ("/a/~user/a",)),
        ("/a%2Fb/c", ("/a%2fb/c", "/a/b/c")),
        ("/a;x=1/b;y", ("/a/b",)),
        ("/a/%3Bb", ("/a/%3bb", "/a")),
        ("/a/b%253Fc", ("/a/b%253fc", "/a/b")),
        ("/a//b/./c/../d", ("/a/b/d",)),
        ("/", ("/",)),
    ],
)
def test_vendor_paths(path: str, keys: tuple[str, ...]) -> None:
    assert vendor_paths(path) == keys


@pytest.mark.parametrize("path", CLIMBING)
def test_vendor_paths_refuses_a_climb(path: str) -> None:
    with pytest.raises(BadRequest):
        vendor_paths(path)


PLAIN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1)


@given(st.lists(PLAIN, min_size=1, max_size=6), st.booleans())
def test_a_plain_path_has_one_reading_its_route_key(segments: list[str], slash: bool) -> None:
    path = "/" + "/".join(segments) + ("/" if slash else "")
    assert vendor_paths(path) == (route_key(path),)
    assert route_key(path) == "/" + "/".join(segments).lower()


def _disguise(path: str, data: st.DataObject) -> str:
    """``path`` as a client might send it, meaning the same to a lenient vendor."""
    out = ""
    for segment in path.strip("/").split("/"):
        chars = []
        for char in segment:
            how = data.draw(st.sampled_from(["same", "swapcase", "escape", "ESCAPE"]))
            if how == "swapcase":
                char = char.swapcase()
            elif how != "same":
                escape = f"%{ord(char):02x}"
                char = escape.upper() if how == "ESCAPE" else escape
            chars.append(char)
        detour = data.draw(st.sampled_from(["", "/.", "//", "/x/..", "/x/%2e%2E", "/%2E"]))
        param = data.draw(st.sampled_from(["", ";jsessionid=AB12", ";v=1;w=2"]))
        out += detour + "/" + "".join(chars) + param
    return out + data.draw(st.sampled_from(["", "/", "//", "/."]))


@given(st.sampled_from(sorted(FLOWS["iics-password"].emulated_paths)), st.data())
def test_a_disguised_emulated_path_reads_as_itself(path: str, data: st.DataObject) -> None:
    assert path in vendor_paths(_disguise(path, data))

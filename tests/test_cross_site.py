"""Browsers on the same machine: cross-site requests are refused unless their origin is allowed.

A web page can make the user's browser send requests to 127.0.0.1. The proxy refuses any
request the browser marks as cross-site (an ``Origin`` not in ``allowed_origins``, or
``Sec-Fetch-Site: cross-site``/``same-site`` without an allowed Origin); tools that are
not browsers send neither header and are unaffected. For allowed origins the proxy
answers CORS itself. State-changing admin endpoints also need a request no HTML form can
send.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from helpers import FileProxy, Upstream, base, fetch, write_config

from proxy.config import ConfigError, parse_config
from proxy.server.app import ProxyServer

EVIL = "https://evil.example"
PORTAL = "https://portal.example.com"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
NOT_A_FORM = {"X-Auth-Proxy": "1"}


def assert_forbidden(status: int, data: Any, *words: str) -> None:
    assert status == 403
    assert data["error"]["code"] == "forbidden"
    for word in words:
        assert word in data["error"]["message"]


# ---------------------------------------------------------------- routes


async def test_the_cross_site_text_plain_post_never_reaches_upstream(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession
) -> None:
    """The attack: a page on evil.example POSTs a "simple" request (no preflight)."""
    server = await make_proxy(routes=[upstream.route()])
    status, data, resp_headers = await fetch(
        http,
        "POST",
        base(server, "/up/api/records"),
        data=b'{"delete": "everything"}',
        headers={"Origin": EVIL, "Content-Type": "text/plain"},
    )
    assert_forbidden(status, data, EVIL, "allowed_origins")
    assert resp_headers["X-Auth-Proxy-Error"] == "forbidden"
    assert upstream.seen == []


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
async def test_sec_fetch_site_cross_or_same_site_without_origin_is_refused(
    site: str, upstream: Upstream, make_proxy, http: aiohttp.ClientSession
) -> None:
    """A cross-site GET (an <img>, a link) carries Sec-Fetch-Site but no Origin."""
    server = await make_proxy(routes=[upstream.route()])
    headers = {"Sec-Fetch-Site": site}
    status, data, _ = await fetch(http, "GET", base(server, "/up/export"), headers=headers)
    assert_forbidden(status, data, site, "allowed_origins")
    assert upstream.seen == []


@pytest.mark.parametrize("site", ["same-origin", "none"])
async def test_sec_fetch_site_same_origin_or_none_is_served(
    site: str, upstream: Upstream, make_proxy, http: aiohttp.ClientSession
) -> None:
    """``none`` is a URL typed in the address bar; ``same-origin`` a page of the proxy's."""
    server = await make_proxy(routes=[upstream.route()])
    headers = {"Sec-Fetch-Site": site}
    status, _, _ = await fetch(http, "GET", base(server, "/up/export"), headers=headers)
    assert status == 200
    assert len(upstream.seen) == 1


async def test_origin_null_is_refused_and_cannot_be_allowed(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession
) -> None:
    """Sandboxed iframes and file:// pages send ``Origin: null``: anyone can be one."""
    server = await make_proxy(routes=[upstream.route()], allowed_origins=[PORTAL])
    status, data, _ = await fetch(
        http, "POST", base(server, "/up/x"), data=b"x", headers={"Origin": "null"}
    )
    assert_forbidden(status, data, "null")
    assert upstream.seen == []
    with pytest.raises(ConfigError, match="allowed_origins"):
        parse_config({"allowed_origins": ["null"], "routes": [upstream.route()]})


async def test_a_client_that_is_not_a_browser_is_unaffected(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession
) -> None:
    """curl and scripts send neither Origin nor Sec-Fetch-Site."""
    server = await make_proxy(routes=[upstream.route()], allowed_origins=[PORTAL])
    status, data, resp_headers = await fetch(
        http, "POST", base(server, "/up/x"), data=b"x", headers={"Content-Type": "text/plain"}
    )
    assert status == 200
    assert data["body"] == "x"
    assert "Access-Control-Allow-Origin" not in resp_headers


async def test_probes_refuse_cross_site_requests_too(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession
) -> None:
    """A page must not even learn that the proxy runs here."""
    server = await make_proxy(routes=[upstream.route()])
    for path in ("/-/healthz", "/-/readyz", "/-/sessions"):
        status, data, _ = await fetch(http, "GET", base(server, path), headers={"Origin": EVIL})
        assert_forbidden(status, data, EVIL)
        status, _, _ = await fetch(http, "GET", base(server, path))
        assert status == 200


# ---------------------------------------------------------------- allowed origins


async def test_an_allowed_origin_is_served_with_cors_headers(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession
) -> None:
    async def vendor(request: web.Request) -> web.StreamResponse:
        # The vendor's own CORS policy is about its own origin, not the proxy's.
        return web.json_response(
            {"ok": True},
            headers={
                "Access-Control-Allow-Origin": "https://vendor.example",
                "Access-Control-Allow-Credentials": "true",
                "Vary": "Accept-Encoding",
            },
        )

    upstream.handler = vendor
    # Written the way people write them; browsers send the serialised form.
    allowed = ["HTTPS://Portal.Example.com:443", "http://localhost:3000"]
    server = await make_proxy(routes=[upstream.route()], allowed_origins=allowed)
    for origin in (PORTAL, "http://localhost:3000"):
        headers = {"Origin": origin, "Sec-Fetch-Site": "cross-site"}
        status, data, resp_headers = await fetch(
            http, "POST", base(server, "/up/x"), json={"a": 1}, headers=headers
        )
        assert status == 200
        assert data == {"ok": True}
        assert resp_headers.getall("Access-Control-Allow-Origin") == [origin]
        assert "Access-Control-Allow-Credentials" not in resp_headers
        assert {"Origin", "Accept-Encoding"} <= set(
            ", ".join(resp_headers.getall("Vary")).split(", ")
        )
    # An origin differing only by port or scheme is another origin.
    for origin in ("https://portal.example.com:8443", "http://portal.example.com"):
        status, data, _ = await fetch(
            http, "GET", base(server, "/up/x"), headers={"Origin": origin}
        )
        assert_forbidden(status, data, origin)
    assert len(upstream.seen) == 2


async def test_errors_to_an_allowed_origin_are_readable_by_it(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[upstream.route()], allowed_origins=[PORTAL])
    status, data, resp_headers = await fetch(
        http, "GET", base(server, "/nowhere"), headers={"Origin": PORTAL}
    )
    assert (status, data["error"]["code"]) == (404, "no_route")
    assert resp_headers["Access-Control-Allow-Origin"] == PORTAL


async def test_a_preflight_from_an_allowed_origin_is_answered_by_the_proxy(
    upstream: Upstream, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(
        routes=[upstream.route()],
        allowed_origins=[PORTAL],
        client_auth={"tokens": ["tok"]},  # preflights carry no credentials, by design
    )
    preflight = {
        "Origin": PORTAL,
        "Access-Control-Request-Method": "DELETE",
        "Access-Control-Request-Headers": "content-type, x-trace",
    }
    status, _, resp_headers = await fetch(http, "OPTIONS", base(server, "/up/x"), headers=preflight)
    assert status == 204
    assert resp_headers["Access-Control-Allow-Origin"] == PORTAL
    assert "DELETE" in resp_headers["Access-Control-Allow-Methods"]
    assert resp_headers["Access-Control-Allow-Headers"] == "content-type, x-trace"
    assert "Origin" in resp_headers["Vary"]
    assert int(resp_headers["Access-Control-Max-Age"]) > 0
    assert "Access-Control-Allow-Credentials" not in resp_headers
    assert upstream.seen == []
    # A preflight from any other origin gets no CORS approval.
    status, data, resp_headers = await fetch(
        http, "OPTIONS", base(server, "/up/x"), headers={**preflight, "Origin": EVIL}
    )
    assert_forbidden(status, data, EVIL)
    assert "Access-Control-Allow-Origin" not in resp_headers
    # A plain OPTIONS (no Access-Control-Request-Method) is an ordinary request.
    token = {"Proxy-Authorization": "Bearer tok"}
    status, data, _ = await fetch(
        http, "OPTIONS", base(server, "/up/x"), headers={"Origin": PORTAL, **token}
    )
    assert (status, data["method"]) == (200, "OPTIONS")


@pytest.mark.parametrize(
    "origin",
    ["*", "portal.example.com", "https://portal.example.com/app", "https://", "https://a.b:99999"],
)
def test_allowed_origins_must_be_origins(origin: str, upstream: Upstream) -> None:
    with pytest.raises(ConfigError, match=r"allowed_origins\[0\]"):
        parse_config({"allowed_origins": [origin], "routes": [upstream.route()]})


# ---------------------------------------------------------------- admin: reload


@pytest.fixture
async def reloadable(
    upstream: Upstream, file_proxy: FileProxy, tmp_path: Path
) -> tuple[ProxyServer, Path]:
    """A proxy started from a config file, whose next version adds a route ``later``."""
    path = tmp_path / "config.yaml"
    write_config(path, [upstream.route()])
    server = await file_proxy(path)
    write_config(path, [upstream.route(), upstream.route(name="later", prefix="/later")])
    return server, path


async def test_reload_from_a_cross_site_page_is_refused(
    reloadable: tuple[ProxyServer, Path], http: aiohttp.ClientSession
) -> None:
    server, _ = reloadable
    url = base(server, "/-/reload")
    status, data, _ = await fetch(http, "POST", url, headers={"Origin": EVIL, **NOT_A_FORM})
    assert_forbidden(status, data, EVIL)
    assert "later" not in server.runtime.routes


async def test_reload_needs_a_request_no_html_form_can_send(
    reloadable: tuple[ProxyServer, Path], http: aiohttp.ClientSession
) -> None:
    server, _ = reloadable
    url = base(server, "/-/reload")
    for headers in ({}, FORM, {"Content-Type": "text/plain"}):
        status, data, _ = await fetch(http, "POST", url, data=b"", headers=headers)
        assert_forbidden(status, data, "X-Auth-Proxy: 1", "application/json")
    assert "later" not in server.runtime.routes

    status, data, _ = await fetch(http, "POST", url, headers=NOT_A_FORM)
    assert (status, data["added"]) == (200, ["later"])
    status, data, _ = await fetch(http, "POST", url, json={})
    assert (status, data["status"]) == (200, "reloaded")


async def test_a_reload_applies_new_allowed_origins(
    reloadable: tuple[ProxyServer, Path], upstream: Upstream, http: aiohttp.ClientSession
) -> None:
    server, path = reloadable
    url = base(server, "/up/x")
    status, _, _ = await fetch(http, "GET", url, headers={"Origin": PORTAL})
    assert status == 403
    write_config(path, [upstream.route()], allowed_origins=[PORTAL])
    status, _, _ = await fetch(http, "POST", base(server, "/-/reload"), headers=NOT_A_FORM)
    assert status == 200
    status, _, resp_headers = await fetch(http, "GET", url, headers={"Origin": PORTAL})
    assert (status, resp_headers["Access-Control-Allow-Origin"]) == (200, PORTAL)

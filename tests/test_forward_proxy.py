"""Forward-proxy mode: tools whose vendor URLs are hard-coded.

The sandbox serves TLS under the vendor's own names (the ``vendor`` fixture, a certificate
from the throwaway CA that the proxy trusts through ``ca_bundle``), ``upstream.resolve``
sends those names to loopback, and the clients — ``requests`` and ``aiohttp``, told only
``HTTPS_PROXY`` and the proxy's CA — call ``https://dm-us.informaticacloud.com/...``
exactly as they would in production.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import requests
from helpers import (
    LOGIN,
    LOGIN_HOST,
    POD,
    POD_HOST,
    ProxyFactory,
    base,
    open_tunnel,
    raw_exchange,
    use_proxy,
    v2_tool,
)

from proxy.flows.base import PLACEHOLDER_SESSION
from proxy.sandbox import Sandbox

# --------------------------------------------------------------------------- legacy tools


def v3_tool() -> dict[str, Any]:
    login = requests.post(
        f"{LOGIN}/saas/public/core/v3/login",
        json={"username": "someone", "password": "not-the-real-one"},
        timeout=10,
    )
    login.raise_for_status()
    data = login.json()
    objects = requests.get(
        data["products"][0]["baseApiUrl"] + "/public/core/v3/objects?q=type=='DTEMPLATE'",
        headers={"INFA-SESSION-ID": data["userInfo"]["sessionId"]},
        timeout=10,
    )
    return {"login": data, "status": objects.status_code, "objects": objects.json()}


def assert_one_real_session(sb: Sandbox, pod_calls: int) -> str:
    """Exactly one real login (the proxy's, with its own credentials) served every call."""
    assert [(r.service, r.url) for r in sb.state.logins] == [
        ("iics-v2-login", f"{LOGIN}/ma/api/v2/user/login")
    ]
    assert sb.state.logins[0].json()["username"] == "demo"
    (real,) = sb.state.iics_sessions
    calls = sb.state.requests_for("iics-pod")
    assert len(calls) == pod_calls
    for call in calls:
        assert urlsplit(call.url).hostname == POD_HOST
        for header in ("icSessionId", "INFA-SESSION-ID", "IDS-SESSION-ID"):
            assert call.headers.get(header) == real, header
    return real


async def test_requests_tool_logs_in_v2_and_v3_and_follows_server_url(
    start_forward_proxy: ProxyFactory,
    vendor: Sandbox,
    ca_files: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = await start_forward_proxy()
    use_proxy(monkeypatch, server, ca_files[0])

    v2 = await asyncio.to_thread(v2_tool)
    assert v2["login"]["serverUrl"] == f"{POD}/saas"  # the vendor's own URL, not the proxy's
    assert v2["login"]["icSessionId"] == PLACEHOLDER_SESSION
    assert v2["status"] == 200 and v2["agents"][0]["@type"] == "agent"

    v3 = await asyncio.to_thread(v3_tool)
    assert v3["login"]["products"][0]["baseApiUrl"] == f"{POD}/saas"
    assert v3["login"]["userInfo"]["sessionId"] == PLACEHOLDER_SESSION
    assert v3["status"] == 200 and v3["objects"]["count"] == 3
    assert v3["objects"]["rawQuery"] == "q=type=='DTEMPLATE'"

    real = assert_one_real_session(vendor, pod_calls=2)
    assert real not in json.dumps([v2, v3])


async def test_aiohttp_tool_through_the_proxy(
    start_forward_proxy: ProxyFactory,
    vendor: Sandbox,
    ca_files: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = await start_forward_proxy()
    monkeypatch.setenv("HTTPS_PROXY", base(server))
    trust = ssl.create_default_context(cafile=str(ca_files[0]))
    async with aiohttp.ClientSession(trust_env=True) as session:
        login = f"{LOGIN}/saas/public/core/v3/login"
        async with session.post(login, json={"username": "x", "password": "y"}, ssl=trust) as resp:
            assert resp.status == 200
            data = await resp.json()
        base_api = data["products"][0]["baseApiUrl"]
        assert base_api == f"{POD}/saas"
        headers = {"INFA-SESSION-ID": data["userInfo"]["sessionId"]}
        async with session.get(f"{base_api}/api/v2/agent", headers=headers, ssl=trust) as resp:
            assert resp.status == 200
            assert (await resp.json())[0]["@type"] == "agent"
    assert_one_real_session(vendor, pod_calls=1)


async def test_client_tls_verifies_against_the_proxy_ca_and_fails_without_it(
    start_forward_proxy: ProxyFactory,
    vendor: Sandbox,
    ca_files: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    logs: Any,
) -> None:
    server = await start_forward_proxy()
    use_proxy(monkeypatch, server, ca=None)  # certifi's CAs only
    with pytest.raises(requests.exceptions.SSLError):
        await asyncio.to_thread(v2_tool)
    assert vendor.state.logins == []
    # The certificate the proxy presents is for the host asked for, issued by its CA.
    trust = ssl.create_default_context(cafile=str(ca_files[0]))
    _, writer = await open_tunnel(server.port, f"{POD_HOST}:443")
    await writer.start_tls(trust, server_hostname=POD_HOST)
    peer = writer.get_extra_info("peercert")
    assert peer["subjectAltName"] == (("DNS", POD_HOST),)
    assert dict(x[0] for x in peer["issuer"])["commonName"] == "auth-proxy local CA"
    writer.close()
    await writer.wait_closed()


async def test_client_auth_is_checked_on_the_connect(
    start_forward_proxy: ProxyFactory,
    vendor: Sandbox,
    ca_files: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = await start_forward_proxy(client_auth={"tokens": ["tok-123"]})
    status, headers, _ = await raw_exchange(
        server.port, f"CONNECT {LOGIN_HOST}:443 HTTP/1.1\r\nHost: {LOGIN_HOST}\r\n\r\n".encode()
    )
    assert status == 401 and headers["x-auth-proxy-error"] == "client_unauthorized"
    # Clients put the proxy credentials in HTTPS_PROXY; the token goes as the password.
    use_proxy(monkeypatch, server, ca_files[0])
    monkeypatch.setenv("HTTPS_PROXY", f"http://tool:tok-123@127.0.0.1:{server.port}")
    result = await asyncio.to_thread(v2_tool)
    assert result["status"] == 200
    assert all("Proxy-Authorization" not in r.headers for r in vendor.state.requests)


# --------------------------------------------------------------------------- refusals


async def test_connect_to_an_unrouted_host_is_refused(
    start_forward_proxy: ProxyFactory, vendor: Sandbox, logs: Any
) -> None:
    server = await start_forward_proxy()
    status, headers, body = await raw_exchange(
        server.port,
        b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n"
        b"Proxy-Authorization: Bearer secret-token-value\r\n\r\n",
    )
    assert status == 403
    assert headers["x-auth-proxy-error"] == "forbidden"
    error = json.loads(body)["error"]
    assert error["code"] == "forbidden" and "evil.example" in error["message"]
    [event] = logs.events("connect")
    assert (event["host"], event["decision"]) == ("evil.example", "refused")
    assert "secret-token-value" not in logs.text
    assert vendor.state.logins == [] and vendor.state.requests == []


async def test_absolute_form_requests_are_routed_by_host_only(
    start_forward_proxy: ProxyFactory, vendor: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix_route = {
        "name": "by-prefix",
        "match": {"prefix": "/iics"},
        "auth": {"type": "ivanti-api-key", "url": vendor.urls.ivanti, "api_key": "demo-api-key"},
    }
    server = await start_forward_proxy(routes=[prefix_route])
    use_proxy(monkeypatch, server, ca=None)

    def call(url: str) -> requests.Response:
        return requests.get(url, timeout=10)

    resp = await asyncio.to_thread(call, f"http://{POD_HOST}/saas/api/v2/agent?limit=1")
    assert resp.status_code == 200, resp.text
    assert resp.json()[0]["@type"] == "agent"
    # Sent on over verified TLS to the host named, with the real session.
    [seen] = vendor.state.requests_for("iics-pod")
    assert seen.url == f"{POD}/saas/api/v2/agent?limit=1"
    assert_one_real_session(vendor, pod_calls=1)
    # A host no route matches is refused, whatever its path looks like.
    for url in ("http://evil.example/saas/api/v2/agent", "http://evil.example/iics/x"):
        resp = await asyncio.to_thread(call, url)
        assert resp.status_code == 403, url
        assert resp.json()["error"]["code"] == "forbidden"
    # Nothing of theirs reached the vendor (the session probe after the login aside).
    assert [r for r in vendor.state.requests if r.service != "iics-probe"] == [seen]


async def test_ordinary_requests_still_work_on_a_forward_proxy_listener(
    start_forward_proxy: ProxyFactory, vendor: Sandbox, http: aiohttp.ClientSession
) -> None:
    server = await start_forward_proxy()
    async with http.get(f"{base(server)}/-/healthz") as resp:
        assert resp.status == 200
    async with http.get(f"{base(server)}/saas/api/v2/agent") as resp:
        assert resp.status == 404  # no prefix route; and no Host route for 127.0.0.1
        assert resp.headers["X-Auth-Proxy-Error"] == "no_route"

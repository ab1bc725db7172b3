"""Login emulation (SPEC §6): legacy tools that log in by themselves work unchanged."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import requests
from helpers import ORG_UUID, base, iics_route, ivanti_session_route

from proxy.flows.base import PLACEHOLDER_SESSION
from proxy.sandbox import Sandbox


def legacy_v2_then_v3_client(login_url: str) -> dict[str, Any]:
    """What a typical legacy script does: log in, follow serverUrl, call v2 and v3, log out."""
    with requests.Session() as http:
        login = http.post(
            f"{login_url}/ma/api/v2/user/login",
            json={"@type": "login", "username": "whoever", "password": "not-the-real-one"},
            timeout=10,
        )
        login.raise_for_status()
        user = login.json()
        server_url, session_id = user["serverUrl"], user["icSessionId"]
        agents = http.get(
            f"{server_url}/api/v2/agent", headers={"icSessionId": session_id}, timeout=10
        )
        objects = http.get(
            f"{server_url}/public/core/v3/objects?q=type=='DTEMPLATE'",
            headers={"INFA-SESSION-ID": session_id},
            timeout=10,
        )
        logout = http.post(
            f"{server_url}/api/v2/user/logout", headers={"icSessionId": session_id}, timeout=10
        )
        return {
            "user": user,
            "agents": (agents.status_code, agents.json()),
            "objects": (objects.status_code, objects.json()),
            "logout": logout.status_code,
        }


def legacy_v3_client(login_url: str) -> dict[str, Any]:
    with requests.Session() as http:
        login = http.post(
            f"{login_url}/saas/public/core/v3/login",
            json={"username": "whoever", "password": "x"},
            timeout=10,
        )
        login.raise_for_status()
        body = login.json()
        base_api = body["products"][0]["baseApiUrl"]
        session_id = body["userInfo"]["sessionId"]
        objects = http.get(
            f"{base_api}/public/core/v3/objects",
            headers={"INFA-SESSION-ID": session_id},
            timeout=10,
        )
        agents = http.get(
            f"{base_api}/api/v2/agent", headers={"icSessionId": session_id}, timeout=10
        )
        logout = http.post(
            f"{login_url}/saas/public/core/v3/logout",
            headers={"INFA-SESSION-ID": session_id},
            timeout=10,
        )
        return {
            "body": body,
            "objects": objects.status_code,
            "agents": agents.status_code,
            "logout": logout.status_code,
        }


async def test_a_legacy_v2_client_works_through_the_route_base(
    sandbox: Sandbox, make_proxy
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    route_base = base(server, "/iics")
    result = await asyncio.to_thread(legacy_v2_then_v3_client, route_base)

    user = result["user"]
    assert user["serverUrl"] == route_base + "/saas"
    assert user["icSessionId"] == PLACEHOLDER_SESSION
    assert user["orgUuid"] == ORG_UUID
    assert result["agents"][0] == 200 and len(result["agents"][1]) == 2
    assert result["objects"][0] == 200 and result["objects"][1]["count"] >= 1
    assert result["logout"] == 200

    # The vendor saw exactly one login (the proxy's own) and no logout.
    logins = sandbox.state.logins
    assert [seen.service for seen in logins] == ["iics-v2-login"]
    assert logins[0].json()["password"] == "demo-password"
    (real_id,) = sandbox.state.iics_sessions
    seen = sandbox.state.requests_for("iics-pod")
    assert {r.headers["icSessionId"] for r in seen} == {real_id}
    assert not any(r.path.endswith("/logout") for r in seen)
    # The real session is still alive for the next tool.
    assert sandbox.state.iics_sessions


async def test_a_legacy_v3_client_works_and_never_sees_the_real_session(
    sandbox: Sandbox, make_proxy
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    route_base = base(server, "/iics")
    result = await asyncio.to_thread(legacy_v3_client, route_base)
    body = result["body"]
    assert body["products"][0]["baseApiUrl"] == route_base + "/saas"
    assert body["userInfo"]["sessionId"] == PLACEHOLDER_SESSION
    assert body["userInfo"]["orgId"] == ORG_UUID
    assert (result["objects"], result["agents"], result["logout"]) == (200, 200, 200)
    (real_id,) = sandbox.state.iics_sessions
    assert real_id not in str(body)


async def test_saml_oauth_and_sf_login_calls_are_answered_too(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    for endpoint in ("loginSaml", "loginOAuth", "loginSf"):
        async with http.post(
            base(server, f"/iics/ma/api/v2/user/{endpoint}"), json={"orgId": "x"}
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["icSessionId"] == PLACEHOLDER_SESSION
    assert len(sandbox.state.logins) == 1


async def test_logoutall_is_refused_and_never_forwarded(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    async with http.post(
        base(server, "/iics/ma/api/v2/user/logoutall"),
        json={"@type": "logout", "username": "demo", "password": "demo-password"},
    ) as resp:
        assert resp.status == 403
        assert resp.headers["X-Auth-Proxy-Error"] == "forbidden"
        assert (await resp.json())["error"]["route"] == "iics"
    assert not any("logoutall" in r.path for r in sandbox.state.requests_for("iics-login-host"))


async def test_emulated_login_reports_a_rejected_real_login(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox, password="wrong")])
    async with http.post(base(server, "/iics/ma/api/v2/user/login"), json={}) as resp:
        assert resp.status == 502
        assert (await resp.json())["error"]["code"] == "login_rejected"


async def test_ivanti_login_is_answered_with_a_placeholder_key(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[ivanti_session_route(sandbox)])
    async with http.post(
        base(server, "/ivanti/api/rest/authentication/login"),
        json={"tenant": "x", "username": "y", "password": "z", "role": "Admin"},
    ) as resp:
        assert resp.status == 200
        key = await resp.json()
    assert isinstance(key, str) and "#" in key
    (real_key,) = sandbox.state.ivanti_sessions
    assert real_key not in key
    async with http.get(
        base(server, "/ivanti/api/odata/businessobject/incidents"), headers={"Authorization": key}
    ) as resp:
        assert resp.status == 200
    assert sandbox.state.requests_for("ivanti")[-1].headers["Authorization"] == real_key

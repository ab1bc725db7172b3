"""The sandbox behaves like IDMC: the identity-service login and logout, jwt/Token, and
CDGC taking the JWT."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
from helpers import DEMO, ORG_UUID, get_agents, jwt_claims

from proxy.sandbox import Sandbox

# A whole second: expiry arithmetic on it is exact.
CLOCK_START = 1_750_000_000.0


# --- IDMC identity-service, jwt/Token and CDGC ---


async def ids_login(http: aiohttp.ClientSession, sandbox: Sandbox) -> dict[str, Any]:
    url = sandbox.urls.login + "/identity-service/api/v1/Login"
    async with http.post(url, json=DEMO) as response:
        assert response.status == 200
        body: dict[str, Any] = await response.json()
    return body


async def test_identity_service_login_shape_and_failure(sandbox, http):
    body = await ids_login(http, sandbox)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["sessionExpireTime"])
    assert body["orgId"] == ORG_UUID and body["authenticator"] == "Native"
    # One table: the identity-service session works on the POD too.
    assert await get_agents(http, sandbox, body["sessionId"]) == 200
    url = sandbox.urls.login + "/identity-service/api/v1/Login"
    async with http.post(url, json={"username": "demo", "password": "x"}) as response:
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "IDS_085"


async def test_jwt_token_requires_nonce_and_session(sandbox, http):
    session_id = (await ids_login(http, sandbox))["sessionId"]
    url = sandbox.urls.login + "/identity-service/api/v1/jwt/Token?client_id=idmc_api"
    async with http.post(url, headers={"IDS-SESSION-ID": session_id}) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "IDS_345"
    async with http.post(url + "&nonce=1", headers={"IDS-SESSION-ID": "bogus"}) as response:
        assert response.status == 401
    async with http.get(url + "&nonce=2", headers={"Cookie": f"USER_SESSION={session_id}"}) as r:
        assert r.status == 200
        claims = jwt_claims((await r.json())["jwt_token"])
    assert claims["client_id"] == "idmc_api" and claims["org"] == ORG_UUID
    assert claims["exp"] - claims["iat"] == 1800
    [*_, seen] = sandbox.state.logins_for("ids-jwt")
    assert seen.url.endswith("?client_id=idmc_api&nonce=2")


async def test_cdgc_takes_bearer_jwt_with_org_header_until_it_expires(sandbox, http, clock):
    session_id = (await ids_login(http, sandbox))["sessionId"]
    mint = sandbox.urls.login + "/identity-service/api/v1/jwt/Token?client_id=idmc_api&nonce=n"
    async with http.post(mint, headers={"IDS-SESSION-ID": session_id}) as response:
        token = (await response.json())["jwt_token"]
    url = sandbox.urls.cdgc + "/data360/search/v1/assets?knowledgeQuery=*&segments=all"
    headers = {"Authorization": f"Bearer {token}", "X-INFA-ORG-ID": ORG_UUID}
    async with http.get(url, headers=headers) as response:
        body = await response.json()
    assert response.status == 200
    assert body["rawQuery"] == "knowledgeQuery=*&segments=all"
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 401
    clock.advance(1800)
    async with http.get(url, headers=headers) as response:
        assert response.status == 401
        assert await response.json() == {"error": {"code": "AUTH_401", "message": "Unauthorized"}}


async def test_identity_service_logout(sandbox, http):
    session_id = (await ids_login(http, sandbox))["sessionId"]
    url = sandbox.urls.login + "/identity-service/api/v1/Logout"
    async with http.post(url, headers={"IDS-SESSION-ID": session_id}) as response:
        assert response.status == 200
    async with http.post(url, headers={"IDS-SESSION-ID": session_id}) as response:
        assert response.status == 401

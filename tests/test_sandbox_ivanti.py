"""The sandbox behaves like Ivanti Neurons for ITSM: the session-key login (bare string
or JWT), REST API keys, and OData business objects."""

from __future__ import annotations

import json
import re

import aiohttp
from helpers import DEMO

from proxy.sandbox import Sandbox

# A whole second: expiry arithmetic on it is exact.
CLOCK_START = 1_750_000_000.0


# --- Ivanti ---


async def ivanti_login(http: aiohttp.ClientSession, sandbox: Sandbox, prefix: str = "") -> str:
    login = {"tenant": "tenant.ivanti.localhost", "role": "Admin", **DEMO}
    url = sandbox.urls.ivanti + prefix + "/api/rest/authentication/login"
    async with http.post(url, json=login) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        key: str = json.loads(await response.text())
    return key


async def test_ivanti_login_returns_bare_string_session_key(sandbox, http, clock):
    key = await ivanti_login(http, sandbox)
    assert re.fullmatch(r"tenant\.ivanti\.localhost#[A-Z0-9]{32}#2", key)
    url = sandbox.urls.ivanti + "/api/odata/businessobject/incidents?$top=2"
    async with http.get(url, headers={"Authorization": key}) as response:
        body = await response.json()
    assert response.status == 200
    assert len(body["value"]) == 2 and body["rawQuery"] == "$top=2"
    clock.advance(1199)
    async with http.get(url, headers={"Authorization": key}) as response:
        assert response.status == 200
    clock.advance(1200)
    async with http.get(url, headers={"Authorization": key}) as response:
        assert response.status == 401
        assert await response.json() == {
            "code": "ISM_4001",
            "description": "Invalid session key or session timed out",
            "message": ["Authentication required"],
        }


async def test_ivanti_login_failure(sandbox, http):
    login = {"tenant": "tenant.ivanti.localhost", "role": "Administrator", **DEMO}
    url = sandbox.urls.ivanti + "/HEAT/api/rest/authentication/login"
    async with http.post(url, json=login) as response:
        body = await response.json()
    assert response.status == 400
    assert body["code"] == "ISM_4000"
    assert "Tenant Not Found or wrong Password" in body["message"][0]
    assert len(sandbox.state.logins_for("ivanti-login")) == 1


async def test_ivanti_records_keys_and_errors(sandbox, http):
    base = sandbox.urls.ivanti + "/HEAT/api/odata/businessobject/"
    headers = {"Authorization": "rest_api_key=demo-api-key"}
    rec_id = next(iter(sandbox.state.ivanti_incidents))
    async with http.get(base + f"incidents('{rec_id}')", headers=headers) as response:
        assert response.status == 200
        assert (await response.json())["RecId"] == rec_id
    async with http.get(base + "incidents('NOPE')", headers=headers) as response:
        assert response.status == 400
        assert (await response.json())["code"] == "ISM_4000"
    async with http.get(base + "spaceships", headers=headers) as response:
        assert response.status == 404
        assert (await response.json())["code"] == "ISM_4004"
    async with http.get(base + "incidents") as response:
        assert response.status == 401
    async with http.get(base + "incidents", headers={"Authorization": "rest_api_key=x"}) as r:
        assert r.status == 401
    async with http.get(sandbox.urls.ivanti + "/api/odata/$metadata", headers=headers) as r:
        assert r.status == 200 and "<edmx:Edmx" in await r.text()


async def test_ivanti_jwt_session_uses_bearer(sandbox, http):
    sandbox.state.ivanti_session_kind = "jwt"
    token = await ivanti_login(http, sandbox)
    assert token.count(".") == 2 and "#" not in token
    url = sandbox.urls.ivanti + "/api/odata/businessobject/incidents"
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 200
    async with http.get(url, headers={"Authorization": token}) as response:
        assert response.status == 401

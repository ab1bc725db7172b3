"""The sandbox behaves like the vendor APIs described in protocols.md."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import trustme
from yarl import URL

from proxy.sandbox import (
    ManualClock,
    Sandbox,
    SandboxState,
    expected_sha256,
    mint_saml_token,
    run_sandbox,
)

DEMO = {"username": "demo", "password": "demo-password"}
ORG_UUID = "5Xq2jG0mLwKzYbPdRt7sUe"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1_750_000_000.0)


@pytest.fixture
async def sandbox(clock: ManualClock) -> AsyncIterator[Sandbox]:
    async with run_sandbox(SandboxState(clock=clock)) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def v2_login(http: aiohttp.ClientSession, sandbox: Sandbox) -> str:
    url = sandbox.urls.login + "/ma/api/v2/user/login"
    async with http.post(url, json={"@type": "login", **DEMO}) as response:
        assert response.status == 200
        session_id: str = (await response.json())["icSessionId"]
    return session_id


async def get_agents(http: aiohttp.ClientSession, sandbox: Sandbox, session_id: str) -> int:
    url = sandbox.urls.pod + "/saas/api/v2/agent"
    async with http.get(url, headers={"icSessionId": session_id}) as response:
        return response.status


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * 4))
    return claims


# --- IICS v2 / v3 login and sessions ---


async def test_v2_login_returns_user_object_pointing_at_pod(sandbox, http):
    url = sandbox.urls.login + "/ma/api/v2/user/login"
    async with http.post(url, json=DEMO) as response:
        body = await response.json()
    assert response.status == 200
    assert body["@type"] == "user"
    assert body["serverUrl"] == sandbox.urls.pod + "/saas"
    assert len(body["icSessionId"]) == 22
    assert (len(body["orgId"]), len(body["orgUuid"])) == (6, 22)
    assert body["forceChangePassword"] is False
    [seen] = sandbox.state.logins_for("iics-v2-login")
    assert seen.method == "POST" and seen.json() == DEMO


async def test_v2_login_refuses_bad_password_and_journals_the_attempt(sandbox, http):
    url = sandbox.urls.login + "/ma/api/v2/user/login"
    async with http.post(url, json={"username": "demo", "password": "nope"}) as response:
        body = await response.json()
    assert response.status == 403
    assert body == {
        "@type": "error",
        "code": "UI_10000",
        "description": "User name or password is not valid.",
        "statusCode": 403,
    }
    assert len(sandbox.state.logins_for("iics-v2-login")) == 1
    assert sandbox.state.iics_sessions == {}


async def test_v2_login_answers_malformed_json_with_400(sandbox, http):
    url = sandbox.urls.login + "/ma/api/v2/user/login"
    async with http.post(url, data=b"{not json", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400
        assert (await r.json())["@type"] == "error"


async def test_v3_login_shape_and_failure(sandbox, http):
    url = sandbox.urls.login + "/saas/public/core/v3/login"
    async with http.post(url, json=DEMO) as response:
        body = await response.json()
    assert response.status == 200
    assert body["products"][0] == {
        "name": "Integration Cloud",
        "baseApiUrl": sandbox.urls.pod + "/saas",
    }
    assert body["userInfo"]["orgId"] == ORG_UUID
    assert body["userInfo"]["status"] == "Active"
    session_id = body["userInfo"]["sessionId"]
    assert await get_agents(http, sandbox, session_id) == 200

    async with http.post(url, json={"username": "demo", "password": "x"}) as response:
        error = (await response.json())["error"]
    assert response.status == 403
    assert error["code"] == "IDS_085" and error["details"] is None and error["requestId"]


async def test_session_slides_while_used_and_dies_when_idle(sandbox, http, clock):
    session_id = await v2_login(http, sandbox)
    for _ in range(3):
        clock.advance(1700)
        assert await get_agents(http, sandbox, session_id) == 200
    clock.advance(1800)
    url = sandbox.urls.pod + "/saas/api/v2/agent"
    async with http.get(url, headers={"icSessionId": session_id}) as response:
        body = await response.json()
    assert response.status == 401
    assert body["code"] == "AUTH_01" and body["statusCode"] == 401


async def test_dead_session_on_v3_path_uses_v3_error_shape(sandbox, http):
    url = sandbox.urls.pod + "/saas/public/core/v3/objects"
    async with http.get(url, headers={"INFA-SESSION-ID": "unknown"}) as response:
        body = await response.json()
    assert response.status == 401
    assert body["error"]["code"] == "AUTH_01"


async def test_v2_path_falls_back_to_infa_session_id_header(sandbox, http):
    session_id = await v2_login(http, sandbox)
    url = sandbox.urls.pod + "/saas/api/v2/agent"
    async with http.get(url, headers={"INFA-SESSION-ID": session_id}) as response:
        assert response.status == 200
        assert len(await response.json()) == 2


async def test_jwt_org_session_expires_absolutely(sandbox, http, clock):
    sandbox.state.iics_users["demo"].session_kind = "jwt"
    session_id = await v2_login(http, sandbox)
    assert jwt_claims(session_id)["exp"] == int(clock.now()) + 1800
    clock.advance(1000)
    assert await get_agents(http, sandbox, session_id) == 200
    clock.advance(800)
    assert await get_agents(http, sandbox, session_id) == 401


async def test_expire_helpers_end_sessions(sandbox, http):
    first = await v2_login(http, sandbox)
    second = await v2_login(http, sandbox)
    sandbox.state.expire_session(first)
    assert await get_agents(http, sandbox, first) == 401
    assert await get_agents(http, sandbox, second) == 200
    sandbox.state.expire_all_sessions()
    assert await get_agents(http, sandbox, second) == 401


async def test_logouts_end_the_session(sandbox, http):
    session_id = await v2_login(http, sandbox)
    async with http.post(
        sandbox.urls.pod + "/saas/api/v2/user/logout", headers={"icSessionId": session_id}
    ) as response:
        assert response.status == 200
    assert await get_agents(http, sandbox, session_id) == 401

    session_id = await v2_login(http, sandbox)
    url = sandbox.urls.login + "/saas/public/core/v3/logout"
    async with http.post(url, headers={"INFA-SESSION-ID": session_id}) as response:
        assert (response.status, await response.json()) == (200, {})
    async with http.post(url, headers={"INFA-SESSION-ID": session_id}) as response:
        assert response.status == 401
    assert [seen.path for seen in sandbox.state.requests_for("iics-login-host")] == [
        "/saas/public/core/v3/logout"
    ] * 2


async def test_logoutall_ends_every_session_of_the_org(sandbox, http):
    sessions = [await v2_login(http, sandbox) for _ in range(2)]
    url = sandbox.urls.login + "/ma/api/v2/user/logoutall"
    async with http.post(url, json={"@type": "logout", **DEMO}) as response:
        assert response.status == 200
    assert [await get_agents(http, sandbox, sid) for sid in sessions] == [401, 401]
    assert len(sandbox.state.requests_to("/ma/api/v2/user/logoutall")) == 1


async def test_ma_paths_on_login_host_take_ic_session_id(sandbox, http):
    session_id = await v2_login(http, sandbox)
    url = sandbox.urls.login + "/ma/api/v2/user"
    async with http.get(url, headers={"icSessionId": session_id}) as response:
        users = await response.json()
    assert response.status == 200
    assert [user["name"] for user in users] == ["demo"]
    async with http.get(url) as response:
        assert response.status == 401


# --- loginSaml, loginOAuth, loginSf and their identity providers ---


async def test_saml_assertion_works_once(sandbox, http):
    url = sandbox.urls.login + "/ma/api/v2/user/loginSaml"
    token = mint_saml_token(sandbox.state, "demo")
    async with http.post(url, json={"samlToken": token, "orgId": ORG_UUID}) as response:
        assert response.status == 200
        assert (await response.json())["icSessionId"]
    async with http.post(url, json={"samlToken": token, "orgId": ORG_UUID}) as response:
        assert response.status == 403
        assert (await response.json())["code"] == "UI_10000"


async def test_saml_refuses_wrong_org_and_forged_tokens(sandbox, http):
    url = sandbox.urls.login + "/ma/api/v2/user/loginSaml"
    token = mint_saml_token(sandbox.state, "demo")
    async with http.post(url, json={"samlToken": token, "orgId": "000000"}) as response:
        assert response.status == 403
    forged = base64.b64encode(b"<Response/>").decode()
    async with http.post(url, json={"samlToken": forged, "orgId": "015ZHE"}) as response:
        assert response.status == 403
    assert len(sandbox.state.logins_for("iics-saml")) == 2


def basic_auth(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


async def idp_token(http: aiohttp.ClientSession, sandbox: Sandbox) -> str:
    async with http.post(
        sandbox.urls.idp + "/oauth2/token",
        data={"grant_type": "client_credentials", "scope": "iics"},
        headers={"Authorization": basic_auth("demo-client", "demo-client-secret")},
    ) as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Pragma"] == "no-cache"
        body = await response.json()
    assert body["token_type"] == "Bearer"
    assert (body["expires_in"], body["scope"]) == (3600, "iics")
    token: str = body["access_token"]
    return token


async def test_oauth_token_is_a_single_use_jwt_for_login_oauth(sandbox, http):
    token = await idp_token(http, sandbox)
    claims = jwt_claims(token)
    assert claims["iss"] == sandbox.urls.idp and claims["sub"] == "demo-client"
    assert claims["jti"] in sandbox.state.issued_jtis
    url = sandbox.urls.login + "/ma/api/v2/user/loginOAuth"
    async with http.post(url, json={"oauthToken": token, "orgId": ORG_UUID}) as response:
        assert response.status == 200
        assert (await response.json())["name"] == "demo"
    async with http.post(url, json={"oauthToken": token, "orgId": ORG_UUID}) as response:
        assert response.status == 403
    fresh = await idp_token(http, sandbox)
    assert jwt_claims(fresh)["jti"] != claims["jti"]


async def test_login_oauth_refuses_expired_and_tampered_tokens(sandbox, http, clock):
    url = sandbox.urls.login + "/ma/api/v2/user/loginOAuth"
    token = await idp_token(http, sandbox)
    header, payload, signature = token.split(".")
    tampered = f"{header}.{payload}x.{signature}"
    async with http.post(url, json={"oauthToken": tampered, "orgId": ORG_UUID}) as response:
        assert response.status == 403
    clock.advance(3600)
    async with http.post(url, json={"oauthToken": token, "orgId": ORG_UUID}) as response:
        assert response.status == 403


async def test_oauth_token_endpoint_errors(sandbox, http):
    url = sandbox.urls.idp + "/oauth2/token"
    grant = {"grant_type": "client_credentials"}
    bad_basic = {"Authorization": basic_auth("demo-client", "bad")}
    async with http.post(url, data=grant, headers=bad_basic) as r:
        assert r.status == 401
        assert r.headers["WWW-Authenticate"] == 'Basic realm="sandbox"'
        assert (await r.json())["error"] == "invalid_client"
    form = {**grant, "client_id": "demo-client", "client_secret": "bad"}
    async with http.post(url, data=form) as r:
        assert (r.status, (await r.json())["error"]) == (400, "invalid_client")
    form = {"grant_type": "password", "client_id": "demo-client"}
    form["client_secret"] = "demo-client-secret"
    async with http.post(url, data=form) as r:
        body = await r.json()
        assert (r.status, body["error"]) == (400, "unsupported_grant_type")
        assert body["error_description"]
    async with http.post(url, json=grant) as r:
        assert (r.status, (await r.json())["error"]) == (400, "invalid_request")
    assert len(sandbox.state.logins_for("idp-token")) == 4


def soap_login(username: str, password: str) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8" ?>'
        '<env:Envelope xmlns:env="http://schemas.xmlsoap.org/soap/envelope/">'
        '<env:Body><n1:login xmlns:n1="urn:partner.soap.sforce.com">'
        f"<n1:username>{username}</n1:username><n1:password>{password}</n1:password>"
        "</n1:login></env:Body></env:Envelope>"
    )


SOAP_HEADERS = {"Content-Type": "text/xml; charset=UTF-8", "SOAPAction": "login"}


async def test_salesforce_soap_login_feeds_login_sf(sandbox, http):
    url = sandbox.urls.idp + "/services/Soap/u/64.0"
    body = soap_login("demo@sf.example", "sf-passwordSFTOKEN123")
    async with http.post(url, data=body, headers=SOAP_HEADERS) as response:
        text = await response.text()
    assert response.status == 200
    session_id = re.search(r"<sessionId>(.*?)</sessionId>", text)
    server_url = re.search(r"<serverUrl>(.*?)</serverUrl>", text)
    assert session_id and server_url
    assert session_id[1].startswith("00Dxx0000001gEH!AQ")
    assert server_url[1] == sandbox.urls.idp + "/services/Soap/u/64.0/00Dxx0000001gEH"
    assert "<sessionSecondsValid>7200</sessionSecondsValid>" in text

    login_sf = sandbox.urls.login + "/ma/api/v2/user/loginSf"
    payload = {"sfSessionId": session_id[1], "sfServerUrl": server_url[1]}
    async with http.post(login_sf, json=payload) as response:
        assert response.status == 200
        assert (await response.json())["icSessionId"]
    payload["sfSessionId"] = "00Dbogus!AQnope"
    async with http.post(login_sf, json=payload) as response:
        assert response.status == 403


async def test_salesforce_soap_faults(sandbox, http):
    url = sandbox.urls.idp + "/services/Soap/u/64.0"
    body = soap_login("demo@sf.example", "sf-password")
    async with http.post(url, data=body, headers=SOAP_HEADERS) as response:
        text = await response.text()
    assert response.status == 500
    assert "<faultcode>sf:INVALID_LOGIN</faultcode>" in text
    assert "INVALID_LOGIN: Invalid username, password, security token; or user locked out." in text

    body = soap_login("demo@sf.example", "sf-passwordSFTOKEN123")
    newer = sandbox.urls.idp + "/services/Soap/u/65.0"
    async with http.post(newer, data=body, headers=SOAP_HEADERS) as response:
        assert response.status == 500
        assert "sf:UNSUPPORTED_API_VERSION" in await response.text()
    assert len(sandbox.state.logins_for("sf-soap")) == 2


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


# --- POD resources ---


async def test_export_streams_exact_bytes(sandbox, http):
    session_id = await v2_login(http, sandbox)
    size = 5 * 1024 * 1024 + 7
    url = sandbox.urls.pod + f"/saas/public/core/v3/export/size-{size}/package"
    digest = hashlib.sha256()
    async with http.get(url, headers={"INFA-SESSION-ID": session_id}) as response:
        assert response.status == 200
        assert response.content_type == "application/zip"
        assert response.content_length == size
        async for chunk in response.content.iter_chunked(256 * 1024):
            digest.update(chunk)
    assert digest.hexdigest() == expected_sha256(size)


async def test_import_hashes_streamed_body(sandbox, http):
    session_id = await v2_login(http, sandbox)
    payload = bytes(range(256)) * 4096
    url = sandbox.urls.pod + "/saas/public/core/v3/import/package"
    headers = {"INFA-SESSION-ID": session_id, "Content-Type": "application/zip"}
    async with http.post(url, data=payload, headers=headers) as response:
        body = await response.json()
    assert body["size"] == len(payload)
    assert body["sha256"] == hashlib.sha256(payload).hexdigest()
    [seen] = sandbox.state.requests_to("/saas/public/core/v3/import/package")
    assert seen.body is None


async def test_objects_echo_raw_query_byte_for_byte(sandbox, http):
    session_id = await v2_login(http, sandbox)
    raw = "q=type==%27DTEMPLATE%27%20and%20tag==%27a%2Bb%27&limit=2"
    url = sandbox.urls.pod + "/saas/public/core/v3/objects?" + raw
    headers = {"INFA-SESSION-ID": session_id}
    async with http.get(URL(url, encoded=True), headers=headers) as response:
        body = await response.json()
    assert body["rawQuery"] == raw
    assert body["count"] == 2
    [seen] = sandbox.state.requests_to("/saas/public/core/v3/objects")
    assert seen.url == url


async def test_echo_shows_method_headers_and_body(sandbox, http):
    session_id = await v2_login(http, sandbox)
    url = sandbox.urls.pod + "/saas/api/v2/echo?a=%20b"
    headers = {"icSessionId": session_id, "X-Custom": "yes"}
    async with http.put(url, data=b"\xff\x00", headers=headers) as response:
        body = await response.json()
    assert body["method"] == "PUT"
    assert body["path"] == "/saas/api/v2/echo?a=%20b"
    assert body["headers"]["X-Custom"] == "yes"
    assert (body["body"], body["bodyEncoding"]) == ("/wA=", "base64")


async def test_other_paths_take_ids_session_id(sandbox, http):
    session_id = await v2_login(http, sandbox)
    url = sandbox.urls.pod + "/echo"
    async with http.get(url, headers={"IDS-SESSION-ID": session_id}) as response:
        assert response.status == 200
    async with http.get(url, headers={"icSessionId": session_id}) as response:
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "AUTH_01"


async def test_redirect_status_and_slow_helpers(sandbox, http):
    session_id = await v2_login(http, sandbox)
    headers = {"icSessionId": session_id}
    pod = sandbox.urls.pod
    async with http.get(pod + "/saas/api/v2/redirect", headers=headers, allow_redirects=False) as r:
        assert r.status == 302
        assert r.headers["Location"] == pod + "/saas/api/v2/agent"
    async with http.get(pod + "/saas/api/v2/status/401", headers=headers) as response:
        assert response.status == 401
        assert (await response.json())["statusCode"] == 401
    assert await get_agents(http, sandbox, session_id) == 200
    async with http.get(pod + "/saas/api/v2/slow?seconds=0.01", headers=headers) as response:
        assert response.status == 200


# --- Failure switches ---


async def test_login_failure_switches(sandbox, http):
    url = sandbox.urls.login + "/ma/api/v2/user/login"
    sandbox.state.login_status_override = 500
    async with http.post(url, json=DEMO) as response:
        assert response.status == 500
    sandbox.state.login_status_override = None
    sandbox.state.login_non_json = True
    async with http.post(url, json=DEMO) as response:
        assert response.status == 200 and response.content_type == "text/html"
    sandbox.state.login_non_json = False
    sandbox.state.server_url_override = "https://evil.example.com/saas"
    async with http.post(url, json=DEMO) as response:
        assert (await response.json())["serverUrl"] == "https://evil.example.com/saas"
    assert len(sandbox.state.logins_for("iics-v2-login")) == 3


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


# --- Runner ---


async def test_https_sandbox(http):
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    async with run_sandbox(ssl_context=server_context) as sandbox:
        assert all(
            url.startswith("https://127.0.0.1:")
            for url in (sandbox.urls.login, sandbox.urls.pod, sandbox.urls.ivanti)
        )
        url = sandbox.urls.login + "/saas/public/core/v3/login"
        async with http.post(url, json=DEMO, ssl=client_context) as response:
            body = await response.json()
        assert body["products"][0]["baseApiUrl"] == sandbox.urls.pod + "/saas"


async def test_login_delay_keeps_a_login_in_flight(sandbox, http):
    sandbox.state.login_delay = 0.5
    url = sandbox.urls.login + "/saas/public/core/v3/login"
    login = asyncio.create_task(http.post(url, json=DEMO))
    done, _ = await asyncio.wait({login}, timeout=0.15)
    assert not done
    assert len(sandbox.state.logins) == 1 and sandbox.state.iics_sessions == {}
    async with await login as response:
        assert response.status == 200
    assert len(sandbox.state.iics_sessions) == 1


async def test_small_import_body_is_journaled_and_hashed(sandbox, http):
    session_id = await v2_login(http, sandbox)
    url = sandbox.urls.pod + "/saas/public/core/v3/import/package"
    headers = {"INFA-SESSION-ID": session_id, "Content-Type": "application/zip"}
    async with http.post(url, data=b"tiny", headers=headers) as response:
        assert (await response.json())["sha256"] == hashlib.sha256(b"tiny").hexdigest()
    [seen] = sandbox.state.requests_to("/saas/public/core/v3/import/package")
    assert seen.body == b"tiny"

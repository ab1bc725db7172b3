"""The sandbox behaves like IICS's other logins and their identity providers: loginSaml,
loginOAuth with the OAuth token endpoint, loginSf with Salesforce's SOAP login."""

from __future__ import annotations

import base64
import re

import aiohttp
from helpers import ORG_UUID, jwt_claims

from proxy.sandbox import Sandbox, mint_saml_token

# A whole second: expiry arithmetic on it is exact.
CLOCK_START = 1_750_000_000.0


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

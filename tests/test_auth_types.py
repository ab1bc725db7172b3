"""Every auth type end to end: a client request through the proxy to the sandbox vendor.

For each type: the exact login the vendor saw, the headers injected on the proxied call,
the upstream chosen, what happens when the session runs out, and what bad credentials
look like to the client (and that they are not retried).
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from helpers import wait_for
from multidict import CIMultiDictProxy

from proxy.core.clock import ManualClock
from proxy.sandbox import Sandbox, SeenRequest, mint_saml_token
from proxy.sandbox.state import SalesforceUser
from proxy.server.app import ProxyServer

ORG_UUID = "5Xq2jG0mLwKzYbPdRt7sUe"


def route(name: str, auth: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "match": {"prefix": f"/{name}"}, "auth": auth, **extra}


async def get(
    http: aiohttp.ClientSession, server: ProxyServer, path: str
) -> tuple[int, Any, CIMultiDictProxy[str]]:
    async with http.get(f"http://127.0.0.1:{server.port}{path}") as response:
        body = await response.read()
        try:
            data = json.loads(body)
        except ValueError:
            data = body.decode()
        return response.status, data, response.headers


def services(sandbox: Sandbox) -> list[str]:
    return [seen.service for seen in sandbox.state.logins]


def last_call(sandbox: Sandbox, service: str) -> SeenRequest:
    return sandbox.state.requests_for(service)[-1]


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def newest_session(sandbox: Sandbox) -> str:
    """The id of the IICS/IDMC session the vendor opened last (dead ones linger unused)."""
    return max(sandbox.state.iics_sessions.values(), key=lambda s: s.created).session_id


def assert_iics_headers(seen: SeenRequest, session_id: str) -> None:
    for name in ("icSessionId", "INFA-SESSION-ID", "IDS-SESSION-ID"):
        assert seen.headers[name] == session_id, name


async def assert_rejected_once(
    http: aiohttp.ClientSession,
    server: ProxyServer,
    sandbox: Sandbox,
    path: str,
    *expected_text: str,
) -> None:
    """Bad credentials: 502 login_rejected naming the vendor's words, and no second try."""
    status, body, headers = await get(http, server, path)
    assert status == 502
    assert headers["X-Auth-Proxy-Error"] == "login_rejected"
    assert body["error"]["code"] == "login_rejected"
    for text in expected_text:
        assert text in body["error"]["message"]
    attempts = len(sandbox.state.logins)
    status, body, _ = await get(http, server, path)
    assert (status, body["error"]["code"]) == (502, "login_rejected")
    assert len(sandbox.state.logins) == attempts


# --------------------------------------------------------------------------- iics-password-v3


def v3_route(sandbox: Sandbox, **auth: Any) -> dict[str, Any]:
    return route(
        "v3",
        {
            "type": "iics-password-v3",
            "login_url": sandbox.urls.login,
            "username": "demo",
            "password": "demo-password",
            **auth,
        },
    )


async def test_v3_login_injects_session_and_goes_to_base_api_url(sandbox, make_proxy, http):
    server = await make_proxy(routes=[v3_route(sandbox)])
    status, body, _ = await get(http, server, "/v3/saas/public/core/v3/objects?limit=2")
    assert status == 200 and body["count"] == 2
    (login,) = sandbox.state.logins
    assert (login.service, login.method) == ("iics-v3-login", "POST")
    assert login.url == sandbox.urls.login + "/saas/public/core/v3/login"
    assert login.headers["Content-Type"] == "application/json"
    assert login.json() == {"username": "demo", "password": "demo-password"}
    (session_id,) = sandbox.state.iics_sessions
    seen = last_call(sandbox, "iics-pod")
    assert seen.url == sandbox.urls.pod + "/saas/public/core/v3/objects?limit=2"
    assert_iics_headers(seen, session_id)


async def test_v3_idle_expiry_logs_in_once_more_and_logout_uses_v3(
    sandbox, make_proxy, http, clock: ManualClock
):
    server = await make_proxy(routes=[v3_route(sandbox)])
    assert (await get(http, server, "/v3/saas/api/v2/agent"))[0] == 200
    clock.advance(1801)
    assert (await get(http, server, "/v3/saas/api/v2/agent"))[0] == 200
    assert (await get(http, server, "/v3/saas/api/v2/agent"))[0] == 200
    assert services(sandbox) == ["iics-v3-login", "iics-v3-login"]
    session_id = newest_session(sandbox)
    assert_iics_headers(last_call(sandbox, "iics-pod"), session_id)
    await server.stop(drain_timeout=1)
    (logout,) = sandbox.state.requests_to("/saas/public/core/v3/logout")
    assert logout.url.startswith(sandbox.urls.login)
    assert logout.headers["INFA-SESSION-ID"] == session_id
    assert session_id not in sandbox.state.iics_sessions


async def test_v3_bad_password_is_rejected_once(sandbox, make_proxy, http):
    server = await make_proxy(routes=[v3_route(sandbox, password="wrong")])
    await assert_rejected_once(
        http, server, sandbox, "/v3/saas/api/v2/agent", "IDS_085", "User name or password"
    )
    assert services(sandbox) == ["iics-v3-login"]


# --------------------------------------------------------------------------- JWT session ids


async def test_jwt_session_id_is_renewed_before_its_exp(
    sandbox, make_proxy, http, clock: ManualClock
):
    sandbox.state.iics_users["demo"].session_kind = "jwt"
    sandbox.state.jwt_lifetime = 600  # well inside the 1800 s idle timeout
    server = await make_proxy(
        routes=[
            route(
                "iics",
                {
                    "type": "iics-password",
                    "login_url": sandbox.urls.login,
                    "username": "demo",
                    "password": "demo-password",
                },
            )
        ]
    )
    assert (await get(http, server, "/iics/saas/api/v2/agent"))[0] == 200
    first = last_call(sandbox, "iics-pod").headers["icSessionId"]
    assert jwt_claims(first)["exp"] == int(clock.now()) + 600

    clock.advance(500)  # 100 s left: inside refresh_margin, still valid
    assert (await get(http, server, "/iics/saas/api/v2/agent"))[0] == 200
    assert last_call(sandbox, "iics-pod").headers["icSessionId"] == first
    await wait_for(lambda: len(sandbox.state.logins) == 2, what="proactive re-login")

    clock.advance(200)  # the first JWT is past its exp now
    assert (await get(http, server, "/iics/saas/api/v2/agent"))[0] == 200
    second = last_call(sandbox, "iics-pod").headers["icSessionId"]
    assert second != first
    assert services(sandbox) == ["iics-v2-login", "iics-v2-login"]


# --------------------------------------------------------------------------- iics-saml


def saml_route(sandbox: Sandbox, command: str) -> dict[str, Any]:
    auth = {
        "type": "iics-saml",
        "login_url": sandbox.urls.login,
        "saml_token": {"command": command},
        "org_id": ORG_UUID,
    }
    return route("saml", auth)


async def test_saml_reads_a_fresh_assertion_for_every_login(
    sandbox, make_proxy, http, clock: ManualClock, tmp_path
):
    assertion_file = tmp_path / "assertion.b64"
    assertion_file.write_text(mint_saml_token(sandbox.state, "demo") + "\n")
    server = await make_proxy(routes=[saml_route(sandbox, f"cat {assertion_file}")])
    assert (await get(http, server, "/saml/saas/api/v2/agent"))[0] == 200
    first = assertion_file.read_text().strip()

    assertion_file.write_text(mint_saml_token(sandbox.state, "demo"))
    clock.advance(1801)
    assert (await get(http, server, "/saml/saas/api/v2/agent"))[0] == 200
    second = assertion_file.read_text().strip()

    logins = sandbox.state.logins_for("iics-saml")
    assert [seen.url for seen in logins] == [sandbox.urls.login + "/ma/api/v2/user/loginSaml"] * 2
    assert [seen.json() for seen in logins] == [
        {"samlToken": first, "orgId": ORG_UUID},
        {"samlToken": second, "orgId": ORG_UUID},
    ]
    seen = last_call(sandbox, "iics-pod")
    assert seen.url.startswith(sandbox.urls.pod + "/saas/api/v2/agent")
    assert_iics_headers(seen, newest_session(sandbox))


async def test_saml_bad_assertion_is_rejected_once(sandbox, make_proxy, http):
    server = await make_proxy(routes=[saml_route(sandbox, "echo bm90LXNhbWw=")])
    await assert_rejected_once(
        http, server, sandbox, "/saml/saas/api/v2/agent", "UI_10000", "SAML token is not valid"
    )
    assert services(sandbox) == ["iics-saml"]


# --------------------------------------------------------------------------- iics-oauth


def oauth_route(sandbox: Sandbox, **cc: Any) -> dict[str, Any]:
    auth = {
        "type": "iics-oauth",
        "login_url": sandbox.urls.login,
        "org_id": ORG_UUID,
        "client_credentials": {
            "token_url": sandbox.urls.idp + "/oauth2/token",
            "client_id": "demo-client",
            "client_secret": "demo-client-secret",
            **cc,
        },
    }
    return route("oauth", auth)


async def test_oauth_client_credentials_basic_then_login_oauth(
    sandbox, make_proxy, http, clock: ManualClock
):
    server = await make_proxy(routes=[oauth_route(sandbox, scope="iics")])
    assert (await get(http, server, "/oauth/saas/api/v2/agent"))[0] == 200
    grant, login = sandbox.state.logins
    assert (grant.service, grant.url) == ("idp-token", sandbox.urls.idp + "/oauth2/token")
    assert grant.headers["Content-Type"] == "application/x-www-form-urlencoded"
    expected = base64.b64encode(b"demo-client:demo-client-secret").decode()
    assert grant.headers["Authorization"] == f"Basic {expected}"
    assert parse_qs((grant.body or b"").decode()) == {
        "grant_type": ["client_credentials"],
        "scope": ["iics"],
    }
    assert login.url == sandbox.urls.login + "/ma/api/v2/user/loginOAuth"
    assert login.json()["orgId"] == ORG_UUID
    assert jwt_claims(login.json()["oauthToken"])["jti"] == sandbox.state.issued_jtis[0]
    (session_id,) = sandbox.state.iics_sessions
    seen = last_call(sandbox, "iics-pod")
    assert seen.url.startswith(sandbox.urls.pod)
    assert_iics_headers(seen, session_id)

    clock.advance(1801)
    assert (await get(http, server, "/oauth/saas/api/v2/agent"))[0] == 200
    assert services(sandbox) == ["idp-token", "iics-oauth", "idp-token", "iics-oauth"]
    jtis = [
        jwt_claims(s.json()["oauthToken"])["jti"] for s in sandbox.state.logins_for("iics-oauth")
    ]
    assert len(set(jtis)) == 2
    assert set(jtis) == sandbox.state.used_jtis


async def test_oauth_form_client_authentication(sandbox, make_proxy, http):
    server = await make_proxy(routes=[oauth_route(sandbox, auth_method="form")])
    assert (await get(http, server, "/oauth/saas/api/v2/agent"))[0] == 200
    grant = sandbox.state.logins_for("idp-token")[0]
    assert "Authorization" not in grant.headers
    assert parse_qs((grant.body or b"").decode()) == {
        "grant_type": ["client_credentials"],
        "client_id": ["demo-client"],
        "client_secret": ["demo-client-secret"],
    }


async def test_oauth_rfc6749_error_is_rejected_once(sandbox, make_proxy, http):
    server = await make_proxy(routes=[oauth_route(sandbox, client_secret="wrong")])
    await assert_rejected_once(
        http,
        server,
        sandbox,
        "/oauth/saas/api/v2/agent",
        "OAuth token endpoint",
        "invalid_client: Client authentication failed.",
    )
    assert services(sandbox) == ["idp-token"]


async def test_oauth_token_from_a_source(sandbox, make_proxy, http, tmp_path, monkeypatch):
    # A token already minted elsewhere, handed over through the environment.
    async with http.post(
        sandbox.urls.idp + "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers={
            "Authorization": "Basic " + base64.b64encode(b"demo-client:demo-client-secret").decode()
        },
    ) as response:
        token = (await response.json())["access_token"]
    monkeypatch.setenv("IICS_OAUTH_TOKEN", token)
    auth = {
        "type": "iics-oauth",
        "login_url": sandbox.urls.login,
        "org_id": ORG_UUID,
        "oauth_token": {"env": "IICS_OAUTH_TOKEN"},
    }
    server = await make_proxy(routes=[route("oauth", auth)])
    assert (await get(http, server, "/oauth/saas/api/v2/agent"))[0] == 200
    assert sandbox.state.logins_for("iics-oauth")[0].json()["oauthToken"] == token


# --------------------------------------------------------------------------- iics-salesforce


def sf_route(sandbox: Sandbox, **salesforce: Any) -> dict[str, Any]:
    auth = {
        "type": "iics-salesforce",
        "login_url": sandbox.urls.login,
        "salesforce": {
            "login_url": sandbox.urls.idp,
            "username": "demo@sf.example",
            "password": "sf-password",
            "security_token": "SFTOKEN123",
            **salesforce,
        },
    }
    return route("sf", auth)


async def test_salesforce_soap_login_chains_into_login_sf(sandbox, make_proxy, http):
    sandbox.state.sf_users["demo@sf.example"] = SalesforceUser("p<&>'\"w", "SFTOKEN123")
    server = await make_proxy(routes=[sf_route(sandbox, password="p<&>'\"w")])
    assert (await get(http, server, "/sf/saas/api/v2/agent"))[0] == 200
    soap, login = sandbox.state.logins
    assert soap.url == sandbox.urls.idp + "/services/Soap/u/64.0"
    assert soap.headers["Content-Type"] == "text/xml; charset=UTF-8"
    assert soap.headers["SOAPAction"] == "login"
    assert b"<n1:password>p&lt;&amp;&gt;'\"wSFTOKEN123</n1:password>" in (soap.body or b"")
    assert login.url == sandbox.urls.login + "/ma/api/v2/user/loginSf"
    sf_session = login.json()["sfSessionId"]
    assert sf_session in sandbox.state.sf_sessions and sf_session != "00Dsandbox!AQdemoSfSession"
    assert login.json()["sfServerUrl"] == sandbox.urls.idp + "/services/Soap/u/64.0/00Dxx0000001gEH"
    (session_id,) = sandbox.state.iics_sessions
    seen = last_call(sandbox, "iics-pod")
    assert seen.url.startswith(sandbox.urls.pod)
    assert_iics_headers(seen, session_id)


async def test_salesforce_idle_expiry_runs_the_whole_chain_once(
    sandbox, make_proxy, http, clock: ManualClock
):
    server = await make_proxy(routes=[sf_route(sandbox, api_version=58)])
    assert (await get(http, server, "/sf/saas/api/v2/agent"))[0] == 200
    clock.advance(1801)
    assert (await get(http, server, "/sf/saas/api/v2/agent"))[0] == 200
    assert services(sandbox) == ["sf-soap", "iics-sf", "sf-soap", "iics-sf"]
    assert sandbox.state.logins[0].url.endswith("/services/Soap/u/58.0")


async def test_salesforce_invalid_login_fault_is_rejected_once(sandbox, make_proxy, http):
    server = await make_proxy(routes=[sf_route(sandbox, security_token="WRONG")])
    await assert_rejected_once(
        http,
        server,
        sandbox,
        "/sf/saas/api/v2/agent",
        "INVALID_LOGIN: Invalid username, password, security token; or user locked out.",
    )
    assert services(sandbox) == ["sf-soap"]


async def test_salesforce_configured_session(sandbox, make_proxy, http):
    auth = {
        "type": "iics-salesforce",
        "login_url": sandbox.urls.login,
        "sf_session_id": "00Dsandbox!AQdemoSfSession",
        "sf_server_url": "https://sandbox.my.salesforce.com/services/Soap/u/64.0/00D",
    }
    server = await make_proxy(routes=[route("sf", auth)])
    assert (await get(http, server, "/sf/saas/api/v2/agent"))[0] == 200
    (login,) = sandbox.state.logins
    assert login.json() == {
        "sfSessionId": "00Dsandbox!AQdemoSfSession",
        "sfServerUrl": "https://sandbox.my.salesforce.com/services/Soap/u/64.0/00D",
    }


# --------------------------------------------------------------------------- idmc-jwt

CDGC_PATH = "/cdgc/data360/search/v1/assets?query=*"


def idmc_route(sandbox: Sandbox, **auth: Any) -> dict[str, Any]:
    return route(
        "cdgc",
        {
            "type": "idmc-jwt",
            "login_url": sandbox.urls.login,
            "username": "demo",
            "password": "demo-password",
            "upstream": sandbox.urls.cdgc,
            **auth,
        },
    )


def cdgc_bearer(sandbox: Sandbox) -> str:
    return last_call(sandbox, "cdgc").headers["Authorization"].removeprefix("Bearer ")


async def test_idmc_login_mint_and_bearer_on_cdgc(sandbox, make_proxy, http, clock: ManualClock):
    server = await make_proxy(routes=[idmc_route(sandbox)])
    status, body, _ = await get(http, server, CDGC_PATH)
    assert status == 200 and body["summary"]["total_hits"] == 2
    login, mint = sandbox.state.logins
    assert login.url == sandbox.urls.login + "/identity-service/api/v1/Login"
    assert login.headers["Content-Type"] == "application/json"
    assert login.json() == {"username": "demo", "password": "demo-password"}
    (session_id,) = sandbox.state.iics_sessions
    url = urlsplit(mint.url)
    assert (mint.method, url.path) == ("POST", "/identity-service/api/v1/jwt/Token")
    assert parse_qs(url.query)["client_id"] == ["idmc_api"]
    assert mint.headers["Cookie"] == f"USER_SESSION={session_id}"
    assert mint.headers["IDS-SESSION-ID"] == session_id
    seen = last_call(sandbox, "cdgc")
    assert seen.url == sandbox.urls.cdgc + "/data360/search/v1/assets?query=*"
    claims = jwt_claims(cdgc_bearer(sandbox))
    assert claims["nonce"] == parse_qs(url.query)["nonce"][0]
    assert seen.headers["X-INFA-ORG-ID"] == ORG_UUID
    assert seen.headers["IDS-SESSION-ID"] == session_id


async def test_idmc_jwt_is_reminted_then_ids_session_end_logs_in(
    sandbox, make_proxy, http, clock: ManualClock
):
    sandbox.state.ids_session_lifetime = 2500
    server = await make_proxy(routes=[idmc_route(sandbox)])
    assert (await get(http, server, CDGC_PATH))[0] == 200
    first = cdgc_bearer(sandbox)

    clock.advance(1700)  # the JWT has 100 s left: re-minted in the background
    assert (await get(http, server, CDGC_PATH))[0] == 200
    await wait_for(lambda: len(sandbox.state.logins) == 3, what="JWT re-mint")
    assert services(sandbox) == ["ids-login", "ids-jwt", "ids-jwt"]
    clock.advance(200)  # the first JWT is dead; the new one serves
    assert (await get(http, server, CDGC_PATH))[0] == 200
    second = cdgc_bearer(sandbox)
    assert second != first
    nonces = [parse_qs(urlsplit(s.url).query)["nonce"][0] for s in sandbox.state.logins[1:]]
    assert len(set(nonces)) == 2

    clock.advance(601)  # past sessionExpireTime: a full login, exactly once
    assert (await get(http, server, CDGC_PATH))[0] == 200
    assert (await get(http, server, CDGC_PATH))[0] == 200
    assert services(sandbox) == ["ids-login", "ids-jwt", "ids-jwt", "ids-login", "ids-jwt"]


async def test_idmc_jwt_that_ran_out_unused_is_reminted_without_a_login(
    sandbox, make_proxy, http, clock: ManualClock
):
    sandbox.state.iics_idle_timeout = 7200  # keep the IDS session alive while unused
    server = await make_proxy(routes=[idmc_route(sandbox)])
    assert (await get(http, server, CDGC_PATH))[0] == 200
    clock.advance(1900)  # no request in the refresh window: the JWT is already dead
    assert (await get(http, server, CDGC_PATH))[0] == 200
    assert services(sandbox) == ["ids-login", "ids-jwt", "ids-jwt"]


async def test_idmc_mint_refused_with_401_leads_to_a_full_login(
    sandbox, make_proxy, http, clock: ManualClock
):
    server = await make_proxy(routes=[idmc_route(sandbox)])
    assert (await get(http, server, CDGC_PATH))[0] == 200
    sandbox.state.iics_sessions.clear()  # the IDS session died early on the vendor side
    clock.advance(1700)
    assert (await get(http, server, CDGC_PATH))[0] == 200
    await wait_for(lambda: len(sandbox.state.logins) == 5, what="re-login after a refused mint")
    assert services(sandbox) == ["ids-login", "ids-jwt", "ids-jwt", "ids-login", "ids-jwt"]
    clock.advance(200)
    assert (await get(http, server, CDGC_PATH))[0] == 200
    (session_id,) = sandbox.state.iics_sessions
    assert last_call(sandbox, "cdgc").headers["IDS-SESSION-ID"] == session_id
    assert len(sandbox.state.logins) == 5


async def test_idmc_401_from_cdgc_remints_and_replays(sandbox, make_proxy, http):
    server = await make_proxy(routes=[idmc_route(sandbox)])
    assert (await get(http, server, CDGC_PATH))[0] == 200
    sandbox.state.ids_jwts.clear()  # CDGC no longer honours the JWT
    assert (await get(http, server, CDGC_PATH))[0] == 200
    assert services(sandbox) == ["ids-login", "ids-jwt", "ids-jwt"]


async def test_idmc_bad_password_is_rejected_once_and_logout(sandbox, make_proxy, http):
    bad = await make_proxy(routes=[idmc_route(sandbox, password="wrong")])
    await assert_rejected_once(http, bad, sandbox, CDGC_PATH, "IDS_085")
    assert services(sandbox) == ["ids-login"]

    good = await make_proxy(routes=[idmc_route(sandbox)])
    assert (await get(http, good, CDGC_PATH))[0] == 200
    (session_id,) = sandbox.state.iics_sessions
    await good.stop(drain_timeout=1)
    (logout,) = sandbox.state.requests_to("/identity-service/api/v1/Logout")
    assert logout.headers["IDS-SESSION-ID"] == session_id
    assert not sandbox.state.iics_sessions


# --------------------------------------------------------------------------- ivanti-session

INCIDENTS = "/api/odata/businessobject/incidents"


def ivanti_route(sandbox: Sandbox, **auth: Any) -> dict[str, Any]:
    return route(
        "ivanti",
        {
            "type": "ivanti-session",
            "url": sandbox.urls.ivanti,
            "tenant": sandbox.state.ivanti_tenant,
            "username": "demo",
            "password": "demo-password",
            "role": "Admin",
            **auth,
        },
    )


async def test_ivanti_session_key_sent_raw(sandbox, make_proxy, http, clock: ManualClock):
    server = await make_proxy(routes=[ivanti_route(sandbox)])
    status, body, _ = await get(http, server, f"/ivanti{INCIDENTS}?$top=1")
    assert status == 200 and body["@odata.count"] == 1
    (login,) = sandbox.state.logins
    assert login.url == sandbox.urls.ivanti + "/api/rest/authentication/login"
    assert login.headers["Content-Type"] == "application/json"
    assert login.json() == {
        "tenant": sandbox.state.ivanti_tenant,
        "username": "demo",
        "password": "demo-password",
        "role": "Admin",
    }
    (key,) = sandbox.state.ivanti_sessions
    seen = last_call(sandbox, "ivanti")
    assert seen.url == sandbox.urls.ivanti + INCIDENTS + "?$top=1"
    assert seen.headers["Authorization"] == key
    assert key.startswith(sandbox.state.ivanti_tenant + "#")

    clock.advance(1201)  # the 1200 s idle default
    assert (await get(http, server, f"/ivanti{INCIDENTS}"))[0] == 200
    assert services(sandbox) == ["ivanti-login", "ivanti-login"]


async def test_ivanti_heat_prefix_is_kept(sandbox, make_proxy, http):
    server = await make_proxy(routes=[ivanti_route(sandbox, url=sandbox.urls.ivanti + "/HEAT")])
    assert (await get(http, server, f"/ivanti{INCIDENTS}"))[0] == 200
    (login,) = sandbox.state.logins
    assert login.url == sandbox.urls.ivanti + "/HEAT/api/rest/authentication/login"
    assert last_call(sandbox, "ivanti").url == sandbox.urls.ivanti + "/HEAT" + INCIDENTS


async def test_ivanti_jwt_is_bearer_and_its_exp_ends_the_session(
    sandbox, make_proxy, http, clock: ManualClock
):
    sandbox.state.ivanti_session_kind = "jwt"
    sandbox.state.ivanti_jwt_lifetime = 600
    server = await make_proxy(routes=[ivanti_route(sandbox)])
    assert (await get(http, server, f"/ivanti{INCIDENTS}"))[0] == 200
    (token,) = sandbox.state.ivanti_sessions
    assert last_call(sandbox, "ivanti").headers["Authorization"] == f"Bearer {token}"
    clock.advance(601)  # used recently enough for the idle clock, but past exp
    assert (await get(http, server, f"/ivanti{INCIDENTS}"))[0] == 200
    assert services(sandbox) == ["ivanti-login", "ivanti-login"]


async def test_ivanti_bad_password_is_rejected_once(sandbox, make_proxy, http):
    server = await make_proxy(routes=[ivanti_route(sandbox, password="wrong")])
    await assert_rejected_once(
        http, server, sandbox, f"/ivanti{INCIDENTS}", "ISM_4000", "Tenant Not Found"
    )
    assert services(sandbox) == ["ivanti-login"]


async def test_ivanti_400_passes_through_without_login_but_401_relogs(sandbox, make_proxy, http):
    server = await make_proxy(routes=[ivanti_route(sandbox)])
    assert (await get(http, server, f"/ivanti{INCIDENTS}"))[0] == 200
    status, body, headers = await get(http, server, f"/ivanti{INCIDENTS}('NOPE')")
    assert (status, body["code"]) == (400, "ISM_4000")
    assert "X-Auth-Proxy-Error" not in headers
    assert services(sandbox) == ["ivanti-login"]

    sandbox.state.expire_all_sessions()  # the tenant forgot the key: 401 ISM_4001
    assert (await get(http, server, f"/ivanti{INCIDENTS}"))[0] == 200
    assert services(sandbox) == ["ivanti-login", "ivanti-login"]


def test_ivanti_config_refuses_reauth_on_400() -> None:
    from proxy.config import ConfigError, parse_config

    data = {
        "routes": [
            route(
                "ivanti",
                {
                    "type": "ivanti-session",
                    "tenant": "t",
                    "username": "u",
                    "password": "p",
                    "role": "Admin",
                    "reauth_on": [400],
                },
            )
        ]
    }
    with pytest.raises(ConfigError, match="reauth_on"):
        parse_config(data)


async def test_ivanti_api_key_is_injected_and_a_bad_key_is_not_retried(sandbox, make_proxy, http):
    good = {
        "type": "ivanti-api-key",
        "url": sandbox.urls.ivanti + "/HEAT",
        "api_key": "demo-api-key",
    }
    server = await make_proxy(
        routes=[
            route("key", good),
            route("badkey", {**good, "api_key": "not-a-key"}),
        ]
    )
    status, body, _ = await get(http, server, "/key/api/odata/businessobject/incidents?$top=1")
    assert status == 200 and len(body["value"]) == 1
    seen = last_call(sandbox, "ivanti")
    assert seen.url == sandbox.urls.ivanti + "/HEAT/api/odata/businessobject/incidents?$top=1"
    assert seen.headers["Authorization"] == "rest_api_key=demo-api-key"
    assert sandbox.state.logins == []  # no login exists for API keys
    calls = len(sandbox.state.requests_for("ivanti"))
    status, body, _ = await get(http, server, "/badkey/api/odata/businessobject/incidents")
    assert status == 401 and body["code"] == "ISM_4001"
    assert len(sandbox.state.requests_for("ivanti")) == calls + 1  # a key is never replayed

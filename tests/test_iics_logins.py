"""Every IICS auth type end to end: a client request through the proxy to the sandbox.

For each type: the exact login the vendor saw, the headers injected on the proxied call,
the upstream chosen, what happens when the session runs out, and what bad credentials
look like to the client (and that they are not retried).
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs

from helpers import (
    ORG_UUID,
    assert_iics_headers,
    assert_rejected_once,
    base,
    fetch,
    iics_route,
    jwt_claims,
    last_call,
    login_services,
    newest_session,
    prefix_route,
    status_of,
    wait_for,
)

from proxy.core.clock import ManualClock
from proxy.sandbox import Sandbox, mint_saml_token
from proxy.sandbox.state import SalesforceUser

# --------------------------------------------------------------------------- iics-password-v3


def v3_route(sandbox: Sandbox, **auth: Any) -> dict[str, Any]:
    return iics_route(sandbox, name="v3", prefix="/v3", type="iics-password-v3", **auth)


async def test_v3_login_injects_session_and_goes_to_base_api_url(sandbox, make_proxy, http):
    server = await make_proxy(routes=[v3_route(sandbox)])
    status, body, _ = await fetch(
        http, "GET", base(server, "/v3/saas/public/core/v3/objects?limit=2")
    )
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
    assert await status_of(http, base(server, "/v3/saas/api/v2/agent")) == 200
    clock.advance(1801)
    assert await status_of(http, base(server, "/v3/saas/api/v2/agent")) == 200
    assert await status_of(http, base(server, "/v3/saas/api/v2/agent")) == 200
    assert login_services(sandbox) == ["iics-v3-login", "iics-v3-login"]
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
    assert login_services(sandbox) == ["iics-v3-login"]


# --------------------------------------------------------------------------- JWT session ids


async def test_jwt_session_id_is_renewed_before_its_exp(
    sandbox, make_proxy, http, clock: ManualClock
):
    sandbox.state.iics_users["demo"].session_kind = "jwt"
    sandbox.state.jwt_lifetime = 600  # well inside the 1800 s idle timeout
    server = await make_proxy(routes=[iics_route(sandbox)])
    assert await status_of(http, base(server, "/iics/saas/api/v2/agent")) == 200
    first = last_call(sandbox, "iics-pod").headers["icSessionId"]
    assert jwt_claims(first)["exp"] == int(clock.now()) + 600

    clock.advance(500)  # 100 s left: inside refresh_margin, still valid
    assert await status_of(http, base(server, "/iics/saas/api/v2/agent")) == 200
    assert last_call(sandbox, "iics-pod").headers["icSessionId"] == first
    await wait_for(lambda: len(sandbox.state.logins) == 2, what="proactive re-login")

    clock.advance(200)  # the first JWT is past its exp now
    assert await status_of(http, base(server, "/iics/saas/api/v2/agent")) == 200
    second = last_call(sandbox, "iics-pod").headers["icSessionId"]
    assert second != first
    assert login_services(sandbox) == ["iics-v2-login", "iics-v2-login"]


# --------------------------------------------------------------------------- iics-saml


def saml_route(sandbox: Sandbox, command: str) -> dict[str, Any]:
    auth = {
        "type": "iics-saml",
        "login_url": sandbox.urls.login,
        "saml_token": {"command": command},
        "org_id": ORG_UUID,
    }
    return prefix_route("saml", auth)


async def test_saml_reads_a_fresh_assertion_for_every_login(
    sandbox, make_proxy, http, clock: ManualClock, tmp_path
):
    assertion_file = tmp_path / "assertion.b64"
    assertion_file.write_text(mint_saml_token(sandbox.state, "demo") + "\n")
    server = await make_proxy(routes=[saml_route(sandbox, f"cat {assertion_file}")])
    assert await status_of(http, base(server, "/saml/saas/api/v2/agent")) == 200
    first = assertion_file.read_text().strip()

    assertion_file.write_text(mint_saml_token(sandbox.state, "demo"))
    clock.advance(1801)
    assert await status_of(http, base(server, "/saml/saas/api/v2/agent")) == 200
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
    assert login_services(sandbox) == ["iics-saml"]


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
    return prefix_route("oauth", auth)


async def test_oauth_client_credentials_basic_then_login_oauth(
    sandbox, make_proxy, http, clock: ManualClock
):
    server = await make_proxy(routes=[oauth_route(sandbox, scope="iics")])
    assert await status_of(http, base(server, "/oauth/saas/api/v2/agent")) == 200
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
    assert await status_of(http, base(server, "/oauth/saas/api/v2/agent")) == 200
    assert login_services(sandbox) == ["idp-token", "iics-oauth", "idp-token", "iics-oauth"]
    jtis = [
        jwt_claims(s.json()["oauthToken"])["jti"] for s in sandbox.state.logins_for("iics-oauth")
    ]
    assert len(set(jtis)) == 2
    assert set(jtis) == sandbox.state.used_jtis


async def test_oauth_form_client_authentication(sandbox, make_proxy, http):
    server = await make_proxy(routes=[oauth_route(sandbox, auth_method="form")])
    assert await status_of(http, base(server, "/oauth/saas/api/v2/agent")) == 200
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
    assert login_services(sandbox) == ["idp-token"]


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
    server = await make_proxy(routes=[prefix_route("oauth", auth)])
    assert await status_of(http, base(server, "/oauth/saas/api/v2/agent")) == 200
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
    return prefix_route("sf", auth)


async def test_salesforce_soap_login_chains_into_login_sf(sandbox, make_proxy, http):
    sandbox.state.sf_users["demo@sf.example"] = SalesforceUser("p<&>'\"w", "SFTOKEN123")
    server = await make_proxy(routes=[sf_route(sandbox, password="p<&>'\"w")])
    assert await status_of(http, base(server, "/sf/saas/api/v2/agent")) == 200
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
    assert await status_of(http, base(server, "/sf/saas/api/v2/agent")) == 200
    clock.advance(1801)
    assert await status_of(http, base(server, "/sf/saas/api/v2/agent")) == 200
    assert login_services(sandbox) == ["sf-soap", "iics-sf", "sf-soap", "iics-sf"]
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
    assert login_services(sandbox) == ["sf-soap"]


async def test_salesforce_configured_session(sandbox, make_proxy, http):
    auth = {
        "type": "iics-salesforce",
        "login_url": sandbox.urls.login,
        "sf_session_id": "00Dsandbox!AQdemoSfSession",
        "sf_server_url": "https://sandbox.my.salesforce.com/services/Soap/u/64.0/00D",
    }
    server = await make_proxy(routes=[prefix_route("sf", auth)])
    assert await status_of(http, base(server, "/sf/saas/api/v2/agent")) == 200
    (login,) = sandbox.state.logins
    assert login.json() == {
        "sfSessionId": "00Dsandbox!AQdemoSfSession",
        "sfServerUrl": "https://sandbox.my.salesforce.com/services/Soap/u/64.0/00D",
    }

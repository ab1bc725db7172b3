"""Login flows as pure protocol logic: drive each generator by feeding it answers, no sockets."""

from __future__ import annotations

import base64
import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from proxy.config import (
    AUTH_TYPES,
    IdmcJwtAuth,
    IicsOAuthAuth,
    IicsPasswordV3Auth,
    IicsSalesforceAuth,
    IicsSamlAuth,
    IvantiSessionAuth,
)
from proxy.core.errors import LoginFailed, LoginRejected, UntrustedUpstream
from proxy.core.secrets import Secret
from proxy.flows import FLOWS
from proxy.flows.base import FlowGen, LoginRequest, LoginResponse, Session
from proxy.flows.idmc import IdmcJwtFlow
from proxy.flows.iics import (
    IicsOAuthFlow,
    IicsPasswordV3Flow,
    IicsSalesforceFlow,
    IicsSamlFlow,
)
from proxy.flows.ivanti import IvantiSessionFlow

LOGIN = "https://dm-us.informaticacloud.com"
POD = "https://na1.dm-us.informaticacloud.com"
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SF_NS = "urn:partner.soap.sforce.com"

Responder = Callable[[LoginRequest], LoginResponse]


def answer(status: int = 200, body: Any = None, *, raw: bytes | None = None) -> LoginResponse:
    data = raw if raw is not None else json.dumps(body).encode()
    return LoginResponse(status, {"Content-Type": "application/json"}, data, "")


def jwt(**claims: Any) -> str:
    def part(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256'})}.{part(claims)}.c2ln"


class Driver:
    """Plays the session manager: resolves secrets from a table, answers calls in order."""

    def __init__(self, *responses: LoginResponse | Responder, secrets: Mapping[str, str] = {}):
        self.responses = list(responses)
        self.secrets = dict(secrets)
        self.requests: list[LoginRequest] = []
        self.resolved: list[Secret] = []

    def run(self, gen: FlowGen) -> Session:
        reply: LoginResponse | str | None = None
        try:
            while True:
                step = next(gen) if reply is None else gen.send(reply)
                if isinstance(step, Secret):
                    self.resolved.append(step)
                    reply = self.secrets.get(step.ref, step.ref)
                else:
                    self.requests.append(step)
                    assert self.responses, f"unexpected call {step!r}"
                    nxt = self.responses.pop(0)
                    reply = nxt(step) if callable(nxt) else nxt
        except StopIteration as stop:
            assert not self.responses, "the flow made fewer calls than expected"
            return stop.value


def v2_user(session_id: str = "SID22charsSID22charsXX", server_url: str = POD + "/saas") -> Any:
    return {"icSessionId": session_id, "serverUrl": server_url, "orgUuid": "ORG22", "name": "u"}


def headers_of(session: Session) -> dict[str, str]:
    return dict(session.headers)


# --------------------------------------------------------------------------- registry


def test_every_auth_type_has_a_flow() -> None:
    assert set(FLOWS) == AUTH_TYPES
    assert len(AUTH_TYPES) == 8


# --------------------------------------------------------------------------- IICS v3


def v3_flow(**extra: Any) -> IicsPasswordV3Flow:
    auth = IicsPasswordV3Auth.model_validate(
        {"type": "iics-password-v3", "login_url": LOGIN, "username": "u", "password": "pw", **extra}
    )
    return IicsPasswordV3Flow(auth)


def v3_answer(session_id: str = "V3SESSION", base: str = POD + "/saas") -> LoginResponse:
    return answer(
        body={
            "products": [{"name": "Integration Cloud", "baseApiUrl": base}],
            "userInfo": {"sessionId": session_id, "orgId": "ORG22", "name": "u"},
        }
    )


def test_v3_login_request_and_session() -> None:
    driver = Driver(v3_answer())
    session = driver.run(v3_flow().login())
    (req,) = driver.requests
    assert (req.method, req.url) == ("POST", LOGIN + "/saas/public/core/v3/login")
    assert json.loads(req.body or b"") == {"username": "u", "password": "pw"}
    assert req.headers["Content-Type"] == "application/json"
    assert headers_of(session) == {
        "icSessionId": "V3SESSION",
        "INFA-SESSION-ID": "V3SESSION",
        "IDS-SESSION-ID": "V3SESSION",
    }
    assert session.upstream == POD
    assert session.base_for("/ma/api/v2/user") == LOGIN
    assert session.org == "ORG22"


def test_v3_logout_goes_to_login_host_with_infa_session_id() -> None:
    flow = v3_flow()
    session = Driver(v3_answer()).run(flow.login())
    req = flow.logout(session)
    assert req.url == LOGIN + "/saas/public/core/v3/logout"
    assert req.headers["INFA-SESSION-ID"] == "V3SESSION"


@pytest.mark.parametrize(
    ("body", "missing"),
    [
        ({"products": [], "userInfo": {"sessionId": "x"}}, "baseApiUrl"),
        ({"products": [{"baseApiUrl": POD}]}, "userInfo"),
        ({"products": [{"baseApiUrl": POD}], "userInfo": {}}, "sessionId"),
    ],
)
def test_v3_incomplete_answer_is_a_failure(body: Any, missing: str) -> None:
    with pytest.raises(LoginFailed, match=missing):
        Driver(answer(body=body)).run(v3_flow().login())


def test_v3_bad_password_is_rejected_with_vendor_code() -> None:
    err = {"error": {"code": "IDS_085", "message": "User name or password is not valid."}}
    with pytest.raises(LoginRejected, match="IDS_085: User name or password is not valid"):
        Driver(answer(403, err)).run(v3_flow().login())


def test_v3_base_api_url_is_ssrf_checked() -> None:
    with pytest.raises(UntrustedUpstream, match=r"evil\.example"):
        Driver(v3_answer(base="https://evil.example/saas")).run(v3_flow().login())


def test_jwt_session_id_bounds_the_session() -> None:
    token = jwt(sub="u", exp=2_000_000_000)
    session = Driver(v3_answer(session_id=token)).run(v3_flow().login())
    assert session.hard_expiry == 2_000_000_000
    assert session.sliding


# --------------------------------------------------------------------------- SAML


def test_saml_resolves_its_source_on_every_login() -> None:
    auth = IicsSamlAuth.model_validate(
        {
            "type": "iics-saml",
            "login_url": LOGIN,
            "saml_token": {"command": "mint"},
            "org_id": "ORG",
        }
    )
    flow = IicsSamlFlow(auth)
    bodies = []
    for assertion in ("first-assertion", "second-assertion"):
        driver = Driver(answer(body=v2_user()), secrets={"mint": assertion})
        driver.run(flow.login())
        assert driver.resolved == [Secret("command", "mint")]
        (req,) = driver.requests
        assert req.url == LOGIN + "/ma/api/v2/user/loginSaml"
        bodies.append(json.loads(req.body or b""))
    assert bodies == [
        {"samlToken": "first-assertion", "orgId": "ORG"},
        {"samlToken": "second-assertion", "orgId": "ORG"},
    ]


# --------------------------------------------------------------------------- OAuth


def oauth_flow(**extra: Any) -> IicsOAuthFlow:
    auth = IicsOAuthAuth.model_validate(
        {"type": "iics-oauth", "login_url": LOGIN, "org_id": "ORG", **extra}
    )
    return IicsOAuthFlow(auth)


CC = {
    "token_url": "https://idp.example/oauth2/token",
    "client_id": "my client",
    "client_secret": "s3cr&t:x",
}


def test_oauth_with_configured_token_source() -> None:
    driver = Driver(answer(body=v2_user()), secrets={"TOKEN": "the.jwt.value"})
    session = driver.run(oauth_flow(oauth_token={"env": "TOKEN"}).login())
    (req,) = driver.requests
    assert req.url == LOGIN + "/ma/api/v2/user/loginOAuth"
    assert json.loads(req.body or b"") == {"oauthToken": "the.jwt.value", "orgId": "ORG"}
    assert "the.jwt.value" in session.secrets


def test_oauth_client_credentials_with_basic_auth() -> None:
    token = answer(body={"access_token": "fresh.jwt.token", "token_type": "Bearer"})
    driver = Driver(token, answer(body=v2_user()))
    driver.run(oauth_flow(client_credentials={**CC, "scope": "api://iics"}).login())
    grant, login = driver.requests
    assert grant.url == CC["token_url"]
    assert grant.headers["Content-Type"] == "application/x-www-form-urlencoded"
    # RFC 6749 §2.3.1: id and secret are form-urlencoded, then base64'd together.
    assert (
        grant.headers["Authorization"]
        == "Basic " + base64.b64encode(b"my+client:s3cr%26t%3Ax").decode()
    )
    assert parse_qs((grant.body or b"").decode()) == {
        "grant_type": ["client_credentials"],
        "scope": ["api://iics"],
    }
    assert json.loads(login.body or b"")["oauthToken"] == "fresh.jwt.token"


def test_oauth_client_credentials_with_form_auth() -> None:
    token = answer(body={"access_token": "fresh.jwt.token"})
    driver = Driver(token, answer(body=v2_user()))
    driver.run(oauth_flow(client_credentials={**CC, "auth_method": "form"}).login())
    grant = driver.requests[0]
    assert "Authorization" not in grant.headers
    assert parse_qs((grant.body or b"").decode()) == {
        "grant_type": ["client_credentials"],
        "client_id": ["my client"],
        "client_secret": ["s3cr&t:x"],
    }


def test_oauth_rfc6749_error_is_a_rejection_naming_the_error() -> None:
    err = {"error": "invalid_client", "error_description": "Client authentication failed."}
    with pytest.raises(LoginRejected) as caught:
        Driver(answer(401, err)).run(oauth_flow(client_credentials=CC).login())
    assert caught.value.message == (
        "OAuth token endpoint idp.example rejected the client "
        "(HTTP 401: invalid_client: Client authentication failed.)"
    )


def test_oauth_scope_error_is_a_rejection_of_the_request() -> None:
    err = {"error": "invalid_scope", "error_description": "Unknown scope."}
    with pytest.raises(LoginRejected, match=r"rejected the token request .*invalid_scope"):
        Driver(answer(400, err)).run(oauth_flow(client_credentials=CC).login())


@pytest.mark.parametrize(
    "response",
    [
        answer(503, {"error": "temporarily_unavailable"}),
        answer(200, raw=b"<html>sign in</html>"),
        answer(200, {"token_type": "Bearer"}),
    ],
)
def test_oauth_endpoint_trouble_is_a_failure(response: LoginResponse) -> None:
    with pytest.raises(LoginFailed):
        Driver(response).run(oauth_flow(client_credentials=CC).login())


# --------------------------------------------------------------------------- Salesforce


def sf_flow(**extra: Any) -> IicsSalesforceFlow:
    auth = IicsSalesforceAuth.model_validate(
        {"type": "iics-salesforce", "login_url": LOGIN, **extra}
    )
    return IicsSalesforceFlow(auth)


SF = {"username": "a&b@sf.example", "password": "p<&>w", "security_token": "TOK"}


def sf_ok(session_id: str = "00D!AQsession", server: str = "https://sf.example/u/64.0/00D") -> Any:
    xml = (
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_NS}" xmlns="{SF_NS}"><soapenv:Body>'
        f"<loginResponse><result><passwordExpired>false</passwordExpired>"
        f"<serverUrl>{server}</serverUrl><sessionId>{session_id}</sessionId>"
        "<userInfo><userName>x</userName></userInfo></result></loginResponse>"
        "</soapenv:Body></soapenv:Envelope>"
    )
    return LoginResponse(200, {"Content-Type": "text/xml"}, xml.encode(), "")


def sf_fault(code: str, text: str, status: int = 500) -> LoginResponse:
    xml = (
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_NS}"><soapenv:Body><soapenv:Fault>'
        f"<faultcode>{code}</faultcode><faultstring>{text}</faultstring>"
        "</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )
    return LoginResponse(status, {"Content-Type": "text/xml"}, xml.encode(), "")


def test_salesforce_soap_chain_escapes_values_and_feeds_login_sf() -> None:
    driver = Driver(sf_ok(), answer(body=v2_user()))
    session = driver.run(sf_flow(salesforce=SF).login())
    soap, login = driver.requests
    assert soap.url == "https://login.salesforce.com/services/Soap/u/64.0"
    assert soap.headers["Content-Type"] == "text/xml; charset=UTF-8"
    assert soap.headers["SOAPAction"] == "login"
    assert b"p&lt;&amp;&gt;wTOK" in (soap.body or b"")
    root = ET.fromstring(soap.body or b"")
    sent = root.find(f"{{{SOAP_NS}}}Body/{{{SF_NS}}}login")
    assert sent is not None
    assert sent.findtext(f"{{{SF_NS}}}username") == "a&b@sf.example"
    assert sent.findtext(f"{{{SF_NS}}}password") == "p<&>wTOK"
    assert login.url == LOGIN + "/ma/api/v2/user/loginSf"
    assert json.loads(login.body or b"") == {
        "sfSessionId": "00D!AQsession",
        "sfServerUrl": "https://sf.example/u/64.0/00D",
    }
    assert "00D!AQsession" in session.secrets


def test_salesforce_configured_session() -> None:
    driver = Driver(answer(body=v2_user()), secrets={"SFSID": "00D!given"})
    driver.run(sf_flow(sf_session_id={"env": "SFSID"}, sf_server_url="https://sf.example").login())
    (login,) = driver.requests
    assert json.loads(login.body or b"") == {
        "sfSessionId": "00D!given",
        "sfServerUrl": "https://sf.example",
    }


def test_salesforce_invalid_login_is_rejected_with_faultstring() -> None:
    text = "INVALID_LOGIN: Invalid username, password, security token; or user locked out."
    with pytest.raises(LoginRejected, match="INVALID_LOGIN: Invalid username"):
        Driver(sf_fault("sf:INVALID_LOGIN", text)).run(sf_flow(salesforce=SF).login())


@pytest.mark.parametrize(
    "response",
    [
        sf_fault("sf:SERVER_UNAVAILABLE", "SERVER_UNAVAILABLE: try later"),
        LoginResponse(503, {}, b"<html>down</html>", ""),
        LoginResponse(502, {}, b"", ""),
        LoginResponse(200, {}, b"<ok/>", ""),
    ],
)
def test_salesforce_other_trouble_is_a_failure(response: LoginResponse) -> None:
    with pytest.raises(LoginFailed):
        Driver(response).run(sf_flow(salesforce=SF).login())


def test_salesforce_api_version_is_capped() -> None:
    flow = sf_flow(salesforce={**SF, "api_version": 58})
    driver = Driver(sf_ok(), answer(body=v2_user()))
    driver.run(flow.login())
    assert driver.requests[0].url.endswith("/services/Soap/u/58.0")
    with pytest.raises(ValueError, match=r"65\.0"):
        sf_flow(salesforce={**SF, "api_version": "65.0"})


# --------------------------------------------------------------------------- IDMC JWT


def idmc_flow() -> IdmcJwtFlow:
    auth = IdmcJwtAuth.model_validate(
        {
            "type": "idmc-jwt",
            "login_url": LOGIN,
            "username": "u",
            "password": "pw",
            "upstream": "https://cdgc-api.dm-us.informaticacloud.com",
        }
    )
    return IdmcJwtFlow(auth)


def ids_answer(sid: str = "IDSSID", expire: str = "2030-01-01T00:00:00.000Z") -> LoginResponse:
    return answer(body={"sessionId": sid, "orgId": "ORG22", "sessionExpireTime": expire})


def test_idmc_login_then_mint() -> None:
    token = jwt(sub="u", exp=1_900_000_000)
    driver = Driver(ids_answer(), answer(body={"jwt_token": token}))
    session = driver.run(idmc_flow().login())
    login, mint = driver.requests
    assert login.url == LOGIN + "/identity-service/api/v1/Login"
    assert json.loads(login.body or b"") == {"username": "u", "password": "pw"}
    url = urlsplit(mint.url)
    assert url.path == "/identity-service/api/v1/jwt/Token"
    query = parse_qs(url.query)
    assert query["client_id"] == ["idmc_api"]
    assert len(query["nonce"][0]) >= 16
    assert mint.headers["Cookie"] == "USER_SESSION=IDSSID"
    assert mint.headers["IDS-SESSION-ID"] == "IDSSID"
    assert headers_of(session) == {
        "Authorization": f"Bearer {token}",
        "X-INFA-ORG-ID": "ORG22",
        "IDS-SESSION-ID": "IDSSID",
    }
    assert session.upstream == "https://cdgc-api.dm-us.informaticacloud.com"
    assert session.hard_expiry == 1_893_456_000  # 2030-01-01T00:00:00Z
    assert session.token_expiry == 1_900_000_000
    assert not session.sliding


def test_idmc_nonce_is_fresh_per_mint() -> None:
    flow = idmc_flow()
    driver = Driver(ids_answer(), answer(body={"jwt_token": jwt(exp=1)}))
    session = driver.run(flow.login())
    again = Driver(answer(body={"jwt_token": jwt(exp=2)}))
    again.run(flow.renew(session))
    nonces = {
        parse_qs(urlsplit(r.url).query)["nonce"][0] for r in (driver.requests[1], *again.requests)
    }
    assert len(nonces) == 2


def test_idmc_renew_reminits_without_login() -> None:
    flow = idmc_flow()
    session = Driver(ids_answer(), answer(body={"jwt_token": jwt(exp=100)})).run(flow.login())
    driver = Driver(answer(body={"jwt_token": jwt(exp=200)}))
    renewed = driver.run(flow.renew(session))
    (mint,) = driver.requests
    assert "/jwt/Token?" in mint.url
    assert renewed.token_expiry == 200
    assert renewed.hard_expiry == session.hard_expiry
    assert dict(renewed.headers)["IDS-SESSION-ID"] == "IDSSID"


def test_idmc_renew_falls_back_to_full_login_on_401() -> None:
    flow = idmc_flow()
    session = Driver(ids_answer(), answer(body={"jwt_token": jwt(exp=100)})).run(flow.login())
    driver = Driver(
        answer(401, {"error": {"code": "IDS_401", "message": "expired"}}),
        ids_answer(sid="NEWSID"),
        answer(body={"jwt_token": jwt(exp=300)}),
    )
    renewed = driver.run(flow.renew(session))
    assert [urlsplit(r.url).path.rsplit("/", 1)[-1] for r in driver.requests] == [
        "Token",
        "Login",
        "Token",
    ]
    assert dict(renewed.headers)["IDS-SESSION-ID"] == "NEWSID"


def test_idmc_jwt_without_exp_lives_30_minutes_from_iat() -> None:
    driver = Driver(ids_answer(), answer(body={"jwt_token": jwt(iat=1000)}))
    assert driver.run(idmc_flow().login()).token_expiry == 2800


def test_idmc_opaque_token_lives_30_minutes() -> None:
    before = time.time()
    driver = Driver(ids_answer(), answer(body={"jwt_token": "opaque"}))
    expiry = driver.run(idmc_flow().login()).token_expiry
    assert expiry is not None and before + 1800 <= expiry <= time.time() + 1800


def test_idmc_bad_password_is_rejected() -> None:
    err = {"error": {"code": "IDS_085", "message": "User name or password is not valid."}}
    with pytest.raises(LoginRejected, match="IDS_085"):
        Driver(answer(401, err)).run(idmc_flow().login())


def test_idmc_unreadable_expire_time_is_a_failure() -> None:
    with pytest.raises(LoginFailed, match="sessionExpireTime"):
        Driver(ids_answer(expire="next tuesday")).run(idmc_flow().login())


def test_idmc_logout() -> None:
    flow = idmc_flow()
    session = Driver(ids_answer(), answer(body={"jwt_token": jwt(exp=1)})).run(flow.login())
    req = flow.logout(session)
    assert req.url == LOGIN + "/identity-service/api/v1/Logout"
    assert req.headers["IDS-SESSION-ID"] == "IDSSID"


# --------------------------------------------------------------------------- Ivanti


def ivanti_flow(**extra: Any) -> IvantiSessionFlow:
    auth = IvantiSessionAuth.model_validate(
        {
            "type": "ivanti-session",
            "tenant": "t.saasit.com",
            "username": "u",
            "password": "pw",
            "role": "Admin",
            **extra,
        }
    )
    return IvantiSessionFlow(auth)


def test_ivanti_session_key_is_sent_raw() -> None:
    driver = Driver(answer(body="t.saasit.com#ABC#2"))
    session = driver.run(ivanti_flow().login())
    (req,) = driver.requests
    assert req.url == "https://t.saasit.com/api/rest/authentication/login"
    assert json.loads(req.body or b"") == {
        "tenant": "t.saasit.com",
        "username": "u",
        "password": "pw",
        "role": "Admin",
    }
    assert headers_of(session) == {"Authorization": "t.saasit.com#ABC#2"}
    assert session.upstream == "https://t.saasit.com"
    assert session.hard_expiry is None and session.sliding


def test_ivanti_jwt_is_sent_as_bearer_and_bounds_the_session() -> None:
    token = jwt(sub="u", exp=1_800_000_000)
    session = Driver(answer(body=token)).run(ivanti_flow().login())
    assert headers_of(session) == {"Authorization": f"Bearer {token}"}
    assert session.hard_expiry == 1_800_000_000


def test_ivanti_heat_url_keeps_its_path() -> None:
    driver = Driver(answer(body="t.saasit.com#K#2"))
    session = driver.run(ivanti_flow(url="https://onprem.example/HEAT").login())
    assert driver.requests[0].url == "https://onprem.example/HEAT/api/rest/authentication/login"
    assert session.upstream == "https://onprem.example/HEAT"


def test_ivanti_bad_login_is_rejected_with_vendor_text() -> None:
    err = {
        "code": "ISM_4000",
        "description": "Bad Request",
        "message": ["Unhandled system exception: Tenant Not Found or wrong Password."],
    }
    with pytest.raises(LoginRejected, match="ISM_4000: Unhandled system exception: Tenant"):
        Driver(answer(400, err)).run(ivanti_flow().login())


@pytest.mark.parametrize("body", [{"key": "x"}, "", None])
def test_ivanti_answer_that_is_not_a_string_is_a_failure(body: Any) -> None:
    with pytest.raises(LoginFailed):
        Driver(answer(body=body)).run(ivanti_flow().login())


def test_ivanti_has_no_rest_logout() -> None:
    flow = ivanti_flow()
    session = Driver(answer(body="t.saasit.com#K#2")).run(flow.login())
    assert flow.logout(session) is None

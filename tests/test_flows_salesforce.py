"""The IICS Salesforce login flow as protocol logic: Salesforce's SOAP login (or a
configured session) fed to loginSf; run by the product's driver on canned answers."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from helpers import LOGIN, FlowCalls, answer, run_flow, v2_user

from proxy.config import IicsSalesforceAuth
from proxy.core.errors import LoginFailed, LoginRejected
from proxy.flows.base import LoginResponse
from proxy.flows.iics import IicsSalesforceFlow

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SF_NS = "urn:partner.soap.sforce.com"


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


async def test_salesforce_soap_chain_escapes_values_and_feeds_login_sf() -> None:
    calls = FlowCalls()
    flow = sf_flow(salesforce=SF)
    session = await run_flow(flow.login(), sf_ok(), answer(body=v2_user()), calls=calls)
    soap, login = calls.requests
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


async def test_salesforce_configured_session() -> None:
    calls = FlowCalls()
    flow = sf_flow(sf_session_id={"env": "SFSID"}, sf_server_url="https://sf.example")
    await run_flow(
        flow.login(), answer(body=v2_user()), secrets={"SFSID": "00D!given"}, calls=calls
    )
    (login,) = calls.requests
    assert json.loads(login.body or b"") == {
        "sfSessionId": "00D!given",
        "sfServerUrl": "https://sf.example",
    }


async def test_salesforce_invalid_login_is_rejected_with_faultstring() -> None:
    text = "INVALID_LOGIN: Invalid username, password, security token; or user locked out."
    with pytest.raises(LoginRejected, match="INVALID_LOGIN: Invalid username"):
        await run_flow(sf_flow(salesforce=SF).login(), sf_fault("sf:INVALID_LOGIN", text))


@pytest.mark.parametrize(
    "response",
    [
        sf_fault("sf:SERVER_UNAVAILABLE", "SERVER_UNAVAILABLE: try later"),
        LoginResponse(503, {}, b"<html>down</html>", ""),
        LoginResponse(502, {}, b"", ""),
        LoginResponse(200, {}, b"<ok/>", ""),
    ],
)
async def test_salesforce_other_trouble_is_a_failure(response: LoginResponse) -> None:
    with pytest.raises(LoginFailed):
        await run_flow(sf_flow(salesforce=SF).login(), response)


async def test_salesforce_api_version_is_capped() -> None:
    flow = sf_flow(salesforce={**SF, "api_version": 58})
    calls = FlowCalls()
    await run_flow(flow.login(), sf_ok(), answer(body=v2_user()), calls=calls)
    assert calls.requests[0].url.endswith("/services/Soap/u/58.0")
    with pytest.raises(ValueError, match=r"65\.0"):
        sf_flow(salesforce={**SF, "api_version": "65.0"})

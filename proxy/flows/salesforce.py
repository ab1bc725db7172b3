"""Salesforce SOAP ``login()``, as the first step of IICS ``loginSf``.

A legacy path: ``login()`` is gone from API 65.0 on and retires for older versions in
Summer '27, so the config caps ``api_version`` at 64.0.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Generator
from dataclasses import dataclass
from xml.sax.saxutils import escape

from proxy.config import SalesforceLogin
from proxy.core.errors import LoginFailed, LoginRejected
from proxy.core.masking import clip
from proxy.flows.base import LoginRequest, LoginResponse, Reply, Step, call, secret

WHAT = "Salesforce SOAP login"
SOAP_HEADERS = {
    "Content-Type": "text/xml; charset=UTF-8",
    "SOAPAction": "login",
    "Accept": "text/xml",
}

# Faults that mean "these credentials will not do": retrying them only walks the
# account towards a lockout, so they are rejections, not failures.
CREDENTIAL_FAULTS = frozenset(
    {
        "INVALID_LOGIN",
        "LOGIN_MUST_USE_SECURITY_TOKEN",
        "PASSWORD_LOCKOUT",
        "INVALID_OPERATION_WITH_EXPIRED_PASSWORD",
        "LOGIN_CHALLENGE_ISSUED",
        "LOGIN_DURING_RESTRICTED_DOMAIN",
        "LOGIN_DURING_RESTRICTED_TIME",
        "API_DISABLED_FOR_ORG",
    }
)


@dataclass(frozen=True, slots=True)
class SalesforceSession:
    session_id: str
    server_url: str

    def __repr__(self) -> str:
        return f"SalesforceSession(server_url={self.server_url!r})"


def envelope(username: str, password: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<env:Envelope xmlns:xsd="http://www.w3.org/2001/XMLSchema"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
        ' xmlns:env="http://schemas.xmlsoap.org/soap/envelope/">'
        "<env:Body>"
        '<n1:login xmlns:n1="urn:partner.soap.sforce.com">'
        f"<n1:username>{escape(username)}</n1:username>"
        f"<n1:password>{escape(password)}</n1:password>"
        "</n1:login>"
        "</env:Body>"
        "</env:Envelope>"
    ).encode()


def soap_login(sf: SalesforceLogin) -> Generator[Step, Reply, SalesforceSession]:
    """Log in to Salesforce; the password has the security token appended (SF-LOGIN)."""
    password = yield from secret(sf.password)
    token = (yield from secret(sf.security_token)) if sf.security_token is not None else ""
    response = yield from call(
        LoginRequest(
            "POST",
            f"{sf.login_url}/services/Soap/u/{sf.api_version}",
            SOAP_HEADERS,
            envelope(sf.username, password + token),
            purpose="salesforce login",
        )
    )
    return parse_login_response(response)


def parse_login_response(response: LoginResponse) -> SalesforceSession:
    try:
        root = ET.fromstring(response.body)
    except ET.ParseError:
        raise LoginFailed(
            f"{WHAT} answered HTTP {response.status} with a body that is not XML"
        ) from None
    fault = _first(root, "Fault")
    if fault is not None:
        raise _fault_error(fault, response.status)
    if not response.ok:
        raise LoginFailed(f"{WHAT} failed (HTTP {response.status})")
    result = _first(root, "result")
    if result is None:
        raise LoginFailed(f"{WHAT} answer has no loginResponse result")
    if _child_text(result, "passwordExpired") == "true":
        raise LoginRejected(f"{WHAT} was rejected (the Salesforce password has expired)")
    session_id = _child_text(result, "sessionId")
    server_url = _child_text(result, "serverUrl")
    if not session_id or not server_url:
        raise LoginFailed(f"{WHAT} answer has no sessionId or serverUrl")
    return SalesforceSession(session_id, server_url)


def _fault_error(fault: ET.Element, status: int) -> LoginRejected | LoginFailed:
    code = (_child_text(fault, "faultcode") or "").rpartition(":")[2]
    text = clip(_child_text(fault, "faultstring") or code or "no faultstring", 300)
    if code in CREDENTIAL_FAULTS:
        return LoginRejected(f"{WHAT} was rejected (HTTP {status}: {text})")
    return LoginFailed(f"{WHAT} failed (HTTP {status}: {text})")


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _first(root: ET.Element, name: str) -> ET.Element | None:
    """The first element named ``name`` in any namespace (SOAP servers vary prefixes)."""
    return next((el for el in root.iter() if _local(el.tag) == name), None)


def _child_text(parent: ET.Element, name: str) -> str | None:
    for child in parent:
        if _local(child.tag) == name:
            return (child.text or "").strip()
    return None

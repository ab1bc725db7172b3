"""SAML assertions for IICS loginSaml: minted by tests, standing in for the customer's IdP,
and read by the login host, which accepts each assertion once."""

from __future__ import annotations

import base64
import binascii
import secrets
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

from proxy.sandbox.iics import iso_utc
from proxy.sandbox.state import SandboxState

_SAML_PROTOCOL = "urn:oasis:names:tc:SAML:2.0:protocol"
_SAML_ASSERTION = "urn:oasis:names:tc:SAML:2.0:assertion"


def mint_saml_token(state: SandboxState, username: str) -> str:
    """A base64 SAML Response for ``username`` that loginSaml accepts exactly once."""
    assertion_id = "_" + secrets.token_hex(16)
    state.saml_assertions[assertion_id] = username
    instant = iso_utc(state.clock.now())
    xml = (
        f'<samlp:Response xmlns:samlp="{_SAML_PROTOCOL}" xmlns:saml="{_SAML_ASSERTION}"'
        f' ID="_{secrets.token_hex(16)}" Version="2.0" IssueInstant="{instant}">'
        "<saml:Issuer>sandbox-saml-idp</saml:Issuer>"
        f'<saml:Assertion ID={quoteattr(assertion_id)} Version="2.0" IssueInstant="{instant}">'
        "<saml:Issuer>sandbox-saml-idp</saml:Issuer>"
        f"<saml:Subject><saml:NameID>{escape(username)}</saml:NameID></saml:Subject>"
        "</saml:Assertion></samlp:Response>"
    )
    return base64.b64encode(xml.encode()).decode("ascii")


def read_saml_assertion(token: str) -> tuple[str, str] | None:
    """(assertion id, subject name) from a base64 SAML Response, or ``None``."""
    try:
        root = ET.fromstring(base64.b64decode(token, validate=True))
    except (binascii.Error, ValueError, ET.ParseError):
        return None
    assertion = root.find(f"{{{_SAML_ASSERTION}}}Assertion")
    if assertion is None:
        return None
    name_id = assertion.find(f"{{{_SAML_ASSERTION}}}Subject/{{{_SAML_ASSERTION}}}NameID")
    assertion_id = assertion.get("ID")
    if assertion_id is None or name_id is None or name_id.text is None:
        return None
    return assertion_id, name_id.text

"""Fake identity providers that feed the alternative IICS logins.

* an OAuth2 token endpoint (RFC 6749 §4.4 client credentials) minting the single-use JWTs
  that loginOAuth takes;
* Salesforce's SOAP ``login()``, whose session ids loginSf takes.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import unquote_plus
from xml.sax.saxutils import escape

from aiohttp import web

from proxy.sandbox.appkit import add_handlers, journal_middleware, route
from proxy.sandbox.state import SandboxState, SandboxUrls
from proxy.sandbox.tokens import random_id, sign_jwt

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
_SF_FAULT = "urn:fault.partner.soap.sforce.com"
_SF_PARTNER = "urn:partner.soap.sforce.com"
_SF_ORG_ID = "00Dxx0000001gEH"
# Salesforce removed SOAP login() from API 65.0 on.
_LAST_SOAP_LOGIN_VERSION = 64.0


def _oauth_error(
    status: int, error: str, description: str, *, basic_challenge: bool = False
) -> web.Response:
    headers = dict(_NO_STORE)
    if basic_challenge:
        headers["WWW-Authenticate"] = 'Basic realm="sandbox"'
    body = {"error": error, "error_description": description}
    return web.json_response(body, status=status, headers=headers)


def _basic_credentials(header: str) -> tuple[str, str] | None:
    """(client id, secret) from ``Basic base64(urlencode(id):urlencode(secret))``."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        return None
    return unquote_plus(client_id), unquote_plus(secret)


def _soap_fault(code: str, message: str) -> web.Response:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<soapenv:Envelope xmlns:soapenv="{_SOAP_ENV}" xmlns:sf="{_SF_FAULT}">'
        "<soapenv:Body><soapenv:Fault>"
        f"<faultcode>{escape(code)}</faultcode><faultstring>{escape(message)}</faultstring>"
        "</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )
    return web.Response(status=500, text=xml, content_type="text/xml", charset="utf-8")


def _invalid_login() -> web.Response:
    return _soap_fault(
        "sf:INVALID_LOGIN",
        "INVALID_LOGIN: Invalid username, password, security token; or user locked out.",
    )


def _read_soap_login(body: bytes) -> tuple[str, str] | None:
    """(username, password) from a partner-WSDL login envelope, or ``None``."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    login = root.find(f"{{{_SOAP_ENV}}}Body/{{{_SF_PARTNER}}}login")
    if login is None:
        return None
    username = login.findtext(f"{{{_SF_PARTNER}}}username")
    password = login.findtext(f"{{{_SF_PARTNER}}}password")
    if username is None or password is None:
        return None
    return username, password


class _IdentityProviders:
    def __init__(self, state: SandboxState, urls: SandboxUrls) -> None:
        self.state = state
        self.urls = urls

    @route("POST", "/oauth2/token")
    async def oauth_token(self, request: web.Request) -> web.Response:
        if request.content_type != "application/x-www-form-urlencoded":
            return _oauth_error(400, "invalid_request", "Send application/x-www-form-urlencoded.")
        form = {name: value for name, value in (await request.post()).items()}
        authorization = request.headers.get("Authorization")
        if authorization is not None and "client_secret" in form:
            return _oauth_error(
                400, "invalid_request", "Use one client authentication method, not two."
            )
        if authorization is not None:
            credentials = _basic_credentials(authorization)
            if credentials is None or not self._client_is_valid(*credentials):
                return _oauth_error(
                    401, "invalid_client", "Client authentication failed.", basic_challenge=True
                )
            client_id = credentials[0]
        elif isinstance(form.get("client_id"), str):
            client_id = str(form["client_id"])
            if not self._client_is_valid(client_id, form.get("client_secret")):
                return _oauth_error(400, "invalid_client", "Client authentication failed.")
        else:
            return _oauth_error(
                401, "invalid_client", "No client authentication was sent.", basic_challenge=True
            )
        grant_type = form.get("grant_type")
        if not isinstance(grant_type, str):
            return _oauth_error(400, "invalid_request", "grant_type is required.")
        if grant_type != "client_credentials":
            return _oauth_error(
                400, "unsupported_grant_type", f"Grant type {grant_type!r} is not supported."
            )
        scope = form.get("scope")
        return self._issue_token(client_id, scope if isinstance(scope, str) else None)

    def _client_is_valid(self, client_id: str, secret: Any) -> bool:
        expected = self.state.oauth_clients.get(client_id)
        if expected is None or not isinstance(secret, str):
            return False
        return secrets.compare_digest(secret.encode(), expected.encode())

    def _issue_token(self, client_id: str, scope: str | None) -> web.Response:
        now = int(self.state.clock.now())
        lifetime = int(self.state.idp_token_lifetime)
        jti = secrets.token_hex(16)
        claims: dict[str, Any] = {
            "iss": self.urls.idp,
            "sub": client_id,
            "aud": self.state.oauth_audience,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": jti,
            "client_id": client_id,
        }
        body: dict[str, Any] = {"token_type": "Bearer", "expires_in": lifetime}
        if scope is not None:
            claims["scope"] = body["scope"] = scope
        body["access_token"] = sign_jwt(claims, self.state.idp_key)
        self.state.issued_jtis.append(jti)
        return web.json_response(body, headers=_NO_STORE)

    @route("POST", "/services/Soap/u/{version}")
    async def salesforce_login(self, request: web.Request) -> web.Response:
        version = request.match_info["version"]
        soap_action = request.headers.get("SOAPAction")
        if soap_action is None or soap_action.strip('"') not in ("login", ""):
            return _soap_fault("soapenv:Client", "SOAPAction must be 'login' or empty.")
        if request.content_type != "text/xml":
            return _soap_fault("soapenv:Client", "Content-Type must be text/xml.")
        try:
            too_new = float(version) > _LAST_SOAP_LOGIN_VERSION
        except ValueError:
            too_new = True
        if too_new:
            return _soap_fault(
                "sf:UNSUPPORTED_API_VERSION",
                f"UNSUPPORTED_API_VERSION: login() is not available in API version {version}.",
            )
        credentials = _read_soap_login(await request.read())
        if credentials is None:
            return _soap_fault("soapenv:Client", "The body is not a login envelope.")
        username, password = credentials
        user = self.state.sf_users.get(username)
        if user is None or not secrets.compare_digest(
            password.encode(), (user.password + user.security_token).encode()
        ):
            return _invalid_login()
        session_id = f"{_SF_ORG_ID}!AQ{random_id(96)}"
        self.state.sf_sessions.add(session_id)
        return self._login_response(version, username, session_id)

    def _login_response(self, version: str, username: str, session_id: str) -> web.Response:
        soap = f"{self.urls.idp}/services/Soap"
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<soapenv:Envelope xmlns:soapenv="{_SOAP_ENV}" xmlns="{_SF_PARTNER}">'
            "<soapenv:Body><loginResponse><result>"
            f"<metadataServerUrl>{soap}/m/{escape(version)}/{_SF_ORG_ID}</metadataServerUrl>"
            "<passwordExpired>false</passwordExpired>"
            "<sandbox>true</sandbox>"
            f"<serverUrl>{soap}/u/{escape(version)}/{_SF_ORG_ID}</serverUrl>"
            f"<sessionId>{session_id}</sessionId>"
            "<userId>005xx000001Sv6AAAS</userId>"
            "<userInfo>"
            f"<organizationId>{_SF_ORG_ID}EAY</organizationId>"
            "<organizationName>Sandbox Org</organizationName>"
            "<sessionSecondsValid>7200</sessionSecondsValid>"
            "<userId>005xx000001Sv6AAAS</userId>"
            f"<userName>{escape(username)}</userName>"
            "</userInfo>"
            "</result></loginResponse></soapenv:Body></soapenv:Envelope>"
        )
        return web.Response(text=xml, content_type="text/xml", charset="utf-8")


def _login_service(request: web.Request) -> str | None:
    if request.path == "/oauth2/token":
        return "idp-token"
    if request.path.startswith("/services/Soap/u/"):
        return "sf-soap"
    return None


def build_idp_app(state: SandboxState, urls: SandboxUrls) -> web.Application:
    app = web.Application(middlewares=[journal_middleware(state, "idp", _login_service)])
    add_handlers(app, _IdentityProviders(state, urls))
    return app

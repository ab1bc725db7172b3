"""Fake Informatica IICS / IDMC hosts: the login host, a POD, and the CDGC API host.

Shapes follow /work/shared/protocols.md §2-§5. Where the real behaviour is unknown (the
code for an expired session, the login-failure status) the sandbox picks one answer and
sticks to it: 401 ``AUTH_01`` for a dead session, 403 ``UI_10000`` for a failed login.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import math
import re
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from proxy.sandbox.state import (
    IicsSession,
    IicsUser,
    SandboxState,
    SandboxUrls,
    body_chunks,
    journal_middleware,
    random_id,
    read_json_object,
    read_jwt,
    rejection_text,
    sign_jwt,
)

EXPORT_CHUNK = 64 * 1024
# A prime-length pattern never lines up with chunk boundaries, so a dropped, repeated
# or reordered chunk changes the digest.
_PATTERN_LENGTH = 251
_PATTERN_TILE = bytes(range(_PATTERN_LENGTH)) * (EXPORT_CHUNK // _PATTERN_LENGTH + 2)

_LOGIN_SERVICES = {
    "/ma/api/v2/user/login": "iics-v2-login",
    "/ma/api/v2/user/loginSaml": "iics-saml",
    "/ma/api/v2/user/loginOAuth": "iics-oauth",
    "/ma/api/v2/user/loginSf": "iics-sf",
    "/saas/public/core/v3/login": "iics-v3-login",
    "/identity-service/api/v1/Login": "ids-login",
    "/identity-service/api/v1/jwt/Token": "ids-jwt",
}

_SAML_PROTOCOL = "urn:oasis:names:tc:SAML:2.0:protocol"
_SAML_ASSERTION = "urn:oasis:names:tc:SAML:2.0:assertion"


def export_bytes(size: int) -> Iterator[bytes]:
    """The deterministic content of export ``size-<size>``, in 64 KiB chunks."""
    offset = 0
    while offset < size:
        length = min(EXPORT_CHUNK, size - offset)
        start = offset % _PATTERN_LENGTH
        yield _PATTERN_TILE[start : start + length]
        offset += length


def expected_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for chunk in export_bytes(size):
        digest.update(chunk)
    return digest.hexdigest()


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


def iso_utc(timestamp: float) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``, as identity-service writes times."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def v2_error(status: int, code: str, description: str) -> web.Response:
    body = {"@type": "error", "code": code, "description": description, "statusCode": status}
    return web.json_response(body, status=status)


def v3_error(status: int, code: str, message: str) -> web.Response:
    body = {
        "error": {
            "code": code,
            "message": message,
            "requestId": secrets.token_urlsafe(16),
            "details": None,
        }
    }
    return web.json_response(body, status=status)


def ids_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


_BAD_LOGIN = "User name or password is not valid."


def _bad_login_v2(text: str = _BAD_LOGIN) -> web.Response:
    return v2_error(403, "UI_10000", text)


def _malformed_v2() -> web.Response:
    return v2_error(400, "APP_10000", "The request body is not a valid JSON object.")


def _str_field(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    return value if isinstance(value, str) else None


def _session_header(path: str) -> tuple[str, ...]:
    if path.startswith("/saas/api/v2/"):
        return ("icSessionId", "INFA-SESSION-ID")
    if path.startswith("/saas/public/core/v3/"):
        return ("INFA-SESSION-ID",)
    return ("IDS-SESSION-ID",)


def _dead_session(path: str) -> web.Response:
    message = "Invalid or expired session ID."
    if path.startswith("/saas/api/v2/"):
        return v2_error(401, "AUTH_01", message)
    if path.startswith("/saas/public/core/v3/"):
        return v3_error(401, "AUTH_01", message)
    return ids_error(401, "AUTH_01", message)


def _api_base(state: SandboxState, urls: SandboxUrls) -> str:
    return state.server_url_override or urls.pod + "/saas"


def _v2_user(
    state: SandboxState, urls: SandboxUrls, username: str, session_id: str | None
) -> dict[str, Any]:
    user = state.iics_users[username]
    body: dict[str, Any] = {
        "@type": "user",
        "id": user.user_id,
        "orgId": user.legacy_org_id,
        "orgUuid": user.org_id,
        "name": username,
        "description": "",
        "createTime": "2024-01-15T09:30:00.000Z",
        "updateTime": "2024-01-15T09:30:00.000Z",
        "createdBy": "admin",
        "updatedBy": "admin",
        "sfUsername": None,
        "firstName": user.first_name,
        "lastName": user.last_name,
        "title": "",
        "password": "********",
        "phone": "",
        "emails": user.email,
        "timezone": "America/Los_Angeles",
        "serverUrl": _api_base(state, urls),
        "securityQuestion": "",
        "securityAnswer": "********",
        "uuid": user.user_id,
        "forceChangePassword": False,
        "roles": [{"name": "Admin", "description": "Administers the organization."}],
        "usergroups": [],
        "spiUrl": urls.pod,
    }
    if session_id is not None:
        body["icSessionId"] = session_id
    return body


def _check_password(state: SandboxState, body: dict[str, Any]) -> str | None:
    """The user name if ``body`` carries that user's password, else ``None``."""
    username = _str_field(body, "username")
    password = _str_field(body, "password")
    user = state.iics_users.get(username or "")
    if (
        user is None
        or password is None
        or not secrets.compare_digest(password.encode(), user.password.encode())
    ):
        return None
    return username


def _read_saml_assertion(token: str) -> tuple[str, str] | None:
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


def _org_matches(user: IicsUser, org_id: str | None) -> bool:
    return org_id in (user.org_id, user.legacy_org_id)


class _LoginHost:
    """Handlers of the login host (``dm-us.informaticacloud.com``)."""

    def __init__(self, state: SandboxState, urls: SandboxUrls) -> None:
        self.state = state
        self.urls = urls

    def _v2_login_success(self, username: str, service: str) -> web.Response:
        session = self.state.open_iics_session(username, service)
        return web.json_response(_v2_user(self.state, self.urls, username, session.session_id))

    async def v2_login(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        if body is None:
            return _malformed_v2()
        username = _check_password(self.state, body)
        if username is None:
            return _bad_login_v2(await rejection_text(self.state, request, _BAD_LOGIN))
        return self._v2_login_success(username, "iics-v2-login")

    async def login_saml(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        if body is None:
            return _malformed_v2()
        assertion = _read_saml_assertion(_str_field(body, "samlToken") or "")
        if assertion is None:
            return v2_error(403, "UI_10000", "The SAML token is not valid.")
        assertion_id, username = assertion
        if self.state.saml_assertions.get(assertion_id) != username:
            return v2_error(403, "UI_10000", "The SAML token is not valid.")
        if assertion_id in self.state.used_saml_assertions:
            return v2_error(403, "UI_10000", "The SAML assertion has already been used.")
        self.state.used_saml_assertions.add(assertion_id)
        user = self.state.iics_users.get(username)
        if user is None or not _org_matches(user, _str_field(body, "orgId")):
            return v2_error(403, "UI_10000", "The SAML user is not valid for this organization.")
        return self._v2_login_success(username, "iics-saml")

    async def login_oauth(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        if body is None:
            return _malformed_v2()
        claims = read_jwt(_str_field(body, "oauthToken") or "", self.state.idp_key)
        if claims is None:
            return v2_error(403, "UI_10000", "The OAuth token is not valid.")
        jti = claims.get("jti")
        if not isinstance(jti, str) or jti in self.state.used_jtis:
            return v2_error(403, "UI_10000", "The OAuth token has already been used.")
        self.state.used_jtis.add(jti)
        problem = self._oauth_claims_problem(claims)
        if problem is not None:
            return v2_error(403, "UI_10000", problem)
        subject = str(claims["sub"])
        username = self.state.oauth_client_users.get(subject, subject)
        user = self.state.iics_users.get(username)
        if user is None or not _org_matches(user, _str_field(body, "orgId")):
            return v2_error(403, "UI_10000", "The OAuth user is not valid for this organization.")
        return self._v2_login_success(username, "iics-oauth")

    def _oauth_claims_problem(self, claims: dict[str, Any]) -> str | None:
        now = self.state.clock.now()
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if claims.get("iss") != self.urls.idp:
            return "The OAuth token issuer is not registered."
        if self.state.oauth_audience not in audiences:
            return "The OAuth token audience does not match the organization."
        if "sub" not in claims:
            return "The OAuth token has no subject."
        try:
            if not float(claims["nbf"]) <= now < float(claims["exp"]):
                return "The OAuth token is expired or not yet valid."
        except (KeyError, TypeError, ValueError):
            return "The OAuth token lacks a valid nbf or exp."
        return None

    async def login_sf(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        if body is None:
            return _malformed_v2()
        session_id = _str_field(body, "sfSessionId")
        if session_id not in self.state.sf_sessions or _str_field(body, "sfServerUrl") is None:
            return v2_error(403, "UI_10000", "The Salesforce session is not valid.")
        return self._v2_login_success(self.state.sf_iics_user, "iics-sf")

    async def v3_login(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        if body is None:
            return v3_error(400, "APP_10000", "The request body is not a valid JSON object.")
        username = _check_password(self.state, body)
        if username is None:
            text = await rejection_text(self.state, request, _BAD_LOGIN)
            return v3_error(403, "IDS_085", text)
        user = self.state.iics_users[username]
        session = self.state.open_iics_session(username, "iics-v3-login")
        return web.json_response(
            {
                "products": [
                    {"name": name, "baseApiUrl": url or _api_base(self.state, self.urls)}
                    for name, url in self.state.iics_products.items()
                ],
                "userInfo": {
                    "sessionId": session.session_id,
                    "id": user.user_id,
                    "name": username,
                    "parentOrgId": user.org_id,
                    "orgId": user.org_id,
                    "orgName": user.org_name,
                    "groups": {"Admins": "0aB1cD2eF3gH4iJ5kL6mN7"},
                    "status": "Active",
                },
            }
        )

    async def v3_logout(self, request: web.Request) -> web.Response:
        session = self.state.use_iics_session(request.headers.get("INFA-SESSION-ID"))
        if session is None:
            return _dead_session("/saas/public/core/v3/")
        del self.state.iics_sessions[session.session_id]
        return web.json_response({})

    async def logout_all(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        if body is None:
            return _malformed_v2()
        username = _check_password(self.state, body)
        if username is None:
            return _bad_login_v2()
        org_id = self.state.iics_users[username].org_id
        sessions = self.state.iics_sessions
        for session_id in [sid for sid, s in sessions.items() if s.org_id == org_id]:
            del sessions[session_id]
        return web.Response(status=200)

    async def list_users(self, request: web.Request) -> web.Response:
        session = self.state.use_iics_session(request.headers.get("icSessionId"))
        if session is None:
            return _dead_session("/saas/api/v2/")
        users = [
            _v2_user(self.state, self.urls, name, None)
            for name, user in self.state.iics_users.items()
            if user.org_id == session.org_id
        ]
        return web.json_response(users)

    async def ids_login(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        if body is None:
            return ids_error(400, "IDS_400", "The request body is not a valid JSON object.")
        username = _check_password(self.state, body)
        if username is None:
            return ids_error(401, "IDS_085", "User name or password is not valid.")
        user = self.state.iics_users[username]
        session = self.state.open_iics_session(
            username, "ids-login", lifetime=self.state.ids_session_lifetime
        )
        expires_at = session.expires_at or session.created + self.state.ids_session_lifetime
        return web.json_response(
            {
                "sessionId": session.session_id,
                "sessionExpireTime": iso_utc(expires_at),
                "id": user.user_id,
                "name": username,
                "currentOrgId": user.org_id,
                "currentOrgName": user.org_name,
                "parentOrgId": user.org_id,
                "orgId": user.org_id,
                "orgName": user.org_name,
                "groups": [],
                "effectiveRoles": ["Admin"],
                "effectivePrivileges": [],
                "status": "Active",
                "timeZoneId": "America/Los_Angeles",
                "authenticator": "Native",
            }
        )

    async def ids_jwt_token(self, request: web.Request) -> web.Response:
        nonce = request.query.get("nonce")
        if not nonce:
            return ids_error(400, "IDS_345", "A nonce is required to get a JWT.")
        session_id = request.headers.get("IDS-SESSION-ID") or request.cookies.get("USER_SESSION")
        session = self.state.use_iics_session(session_id)
        if session is None:
            return ids_error(401, "IDS_401", "The session is not valid or has expired.")
        now = self.state.clock.now()
        expires_at = now + self.state.jwt_lifetime_ids
        jti = secrets.token_hex(16)
        claims = {
            "iss": self.urls.login + "/identity-service",
            "sub": session.username,
            "org": session.org_id,
            "client_id": request.query.get("client_id"),
            "nonce": nonce,
            "iat": int(now),
            "exp": int(expires_at),
            "jti": jti,
        }
        self.state.ids_jwts[jti] = expires_at
        return web.json_response({"jwt_token": sign_jwt(claims, self.state.ids_jwt_key)})

    async def ids_logout(self, request: web.Request) -> web.Response:
        session = self.state.use_iics_session(request.headers.get("IDS-SESSION-ID"))
        if session is None:
            return ids_error(401, "IDS_401", "The session is not valid or has expired.")
        del self.state.iics_sessions[session.session_id]
        return web.json_response({})


def build_login_app(state: SandboxState, urls: SandboxUrls) -> web.Application:
    host = _LoginHost(state, urls)
    app = web.Application(
        middlewares=[
            journal_middleware(state, "iics-login-host", lambda r: _LOGIN_SERVICES.get(r.path))
        ]
    )
    app.router.add_post("/ma/api/v2/user/login", host.v2_login)
    app.router.add_post("/ma/api/v2/user/loginSaml", host.login_saml)
    app.router.add_post("/ma/api/v2/user/loginOAuth", host.login_oauth)
    app.router.add_post("/ma/api/v2/user/loginSf", host.login_sf)
    app.router.add_post("/ma/api/v2/user/logoutall", host.logout_all)
    app.router.add_get("/ma/api/v2/user", host.list_users)
    app.router.add_post("/saas/public/core/v3/login", host.v3_login)
    app.router.add_post("/saas/public/core/v3/logout", host.v3_logout)
    app.router.add_post("/identity-service/api/v1/Login", host.ids_login)
    app.router.add_route("POST", "/identity-service/api/v1/jwt/Token", host.ids_jwt_token)
    app.router.add_route("GET", "/identity-service/api/v1/jwt/Token", host.ids_jwt_token)
    app.router.add_post("/identity-service/api/v1/Logout", host.ids_logout)
    return app


def _presented_session_id(request: web.Request) -> str | None:
    """The session id from the header that the request's path calls for."""
    headers = _session_header(request.path)
    return next((request.headers[h] for h in headers if h in request.headers), None)


_VALID_SESSION_ID = "/saas/api/v2/user/validSessionId"


def _require_session(state: SandboxState) -> Middleware:
    """Refuse any POD request without a live session (and mark the session as used).

    validSessionId is the exception: the session it asks about is in its body.
    """

    @web.middleware
    async def require_session(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == _VALID_SESSION_ID:
            return await handler(request)
        if state.use_iics_session(_presented_session_id(request)) is None:
            return _dead_session(request.path)
        return await handler(request)

    return require_session


class _Pod:
    """Handlers of a POD host (``na1.dm-us.informaticacloud.com``); all need a session."""

    def __init__(self, state: SandboxState, urls: SandboxUrls) -> None:
        self.state = state
        self.urls = urls

    def _session(self, request: web.Request) -> IicsSession:
        """The session that ``_require_session`` already found live."""
        return self.state.iics_sessions[_presented_session_id(request) or ""]

    async def agents(self, request: web.Request) -> web.Response:
        org_id = self.state.iics_users[self._session(request).username].legacy_org_id
        agents = [
            {
                "@type": "agent",
                "id": f"01000008000000000{number:03d}",
                "orgId": org_id,
                "name": f"sandbox-agent-{number}",
                "description": "",
                "createTime": "2024-02-01T08:00:00.000Z",
                "updateTime": "2024-02-01T08:00:00.000Z",
                "createdBy": "demo",
                "updatedBy": "demo",
                "active": active,
                "readyToRun": active,
                "platform": "linux64",
                "agentHost": f"agent{number}.sandbox.localhost",
                "agentVersion": "65.0.4",
            }
            for number, active in ((1, True), (2, False))
        ]
        return web.json_response(agents)

    async def v2_logout(self, request: web.Request) -> web.Response:
        self.state.iics_sessions.pop(self._session(request).session_id, None)
        return web.Response(status=200)

    async def v3_logout(self, request: web.Request) -> web.Response:
        self.state.iics_sessions.pop(self._session(request).session_id, None)
        return web.json_response({})

    async def valid_session_id(self, request: web.Request) -> web.Response:
        """How long the session in the body has left, in whole minutes; not a use of it."""
        body = await read_json_object(request)
        if body is None:
            return _malformed_v2()
        username, token = _str_field(body, "userName"), _str_field(body, "icToken")
        if username is None or token is None:
            return v2_error(400, "APP_10000", "userName and icToken are required.")
        session = self.state.iics_sessions.get(token)
        left = 0.0
        if session is not None and session.username == username:
            left = self.state.iics_time_left(session)
        return web.json_response(
            {
                "@type": "validatedToken",
                "timeUntilExpire": max(0, math.floor(left / 60)),
                "isValidToken": left > 0,
            }
        )

    async def objects(self, request: web.Request) -> web.Response:
        objects = [
            {
                "id": f"obj{number:019d}",
                "path": f"Default/mapping_{number}",
                "type": "DTEMPLATE",
                "description": "",
                "updateTime": "2024-03-01T10:00:00.000Z",
            }
            for number in range(1, 4)
        ]
        try:
            limit = int(request.query.get("limit", len(objects)))
        except ValueError:
            return v3_error(400, "APP_10001", "limit must be an integer.")
        shown = objects[: max(limit, 0)]
        return web.json_response(
            {"count": len(shown), "objects": shown, "rawQuery": request.rel_url.raw_query_string}
        )

    async def export_package(self, request: web.Request) -> web.StreamResponse:
        match = re.fullmatch(r"size-(\d{1,15})", request.match_info["id"])
        if match is None:
            return v3_error(404, "MIGRATION_404", "Export job not found.")
        size = int(match.group(1))
        response = web.StreamResponse(
            headers={"Content-Disposition": f'attachment; filename="export-{size}.zip"'}
        )
        response.content_type = "application/zip"
        response.content_length = size
        await response.prepare(request)
        for chunk in export_bytes(size):
            await response.write(chunk)
        await response.write_eof()
        return response

    async def import_package(self, request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        size = 0
        async for chunk in body_chunks(request):
            digest.update(chunk)
            size += len(chunk)
        return web.json_response(
            {"jobId": random_id(22), "size": size, "sha256": digest.hexdigest()}
        )

    async def echo(self, request: web.Request) -> web.Response:
        """Test helper, not a vendor API: shows exactly what arrived."""
        body = await request.read()
        try:
            text, encoding = body.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(body).decode("ascii"), "base64"
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return web.json_response(
            {
                "method": request.method,
                "path": request.raw_path,
                "headers": headers,
                "body": text,
                "bodyEncoding": encoding,
            }
        )

    async def redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(self.urls.pod + "/saas/api/v2/agent")

    async def status(self, request: web.Request) -> web.Response:
        try:
            code = int(request.match_info["code"])
        except ValueError:
            code = 0
        if not 200 <= code <= 599:
            return v2_error(400, "APP_10001", "The status must be between 200 and 599.")
        if code in (204, 304):
            return web.Response(status=code)
        if code >= 400:
            return v2_error(code, f"SANDBOX_{code}", f"Sandbox answered {code} as asked.")
        return web.json_response({"@type": "status", "code": code}, status=code)

    async def slow(self, request: web.Request) -> web.Response:
        try:
            seconds = float(request.query.get("seconds", "1"))
        except ValueError:
            seconds = -1
        if not 0 <= seconds <= 600:
            return v2_error(400, "APP_10001", "seconds must be a number from 0 to 600.")
        await asyncio.sleep(seconds)
        return web.json_response({"@type": "slow", "seconds": seconds})


def build_pod_app(state: SandboxState, urls: SandboxUrls) -> web.Application:
    pod = _Pod(state, urls)
    app = web.Application(
        middlewares=[journal_middleware(state, "iics-pod", lambda r: None), _require_session(state)]
    )
    app.router.add_get("/saas/api/v2/agent", pod.agents)
    app.router.add_post("/saas/api/v2/user/logout", pod.v2_logout)
    app.router.add_post(_VALID_SESSION_ID, pod.valid_session_id)
    app.router.add_route("*", "/saas/api/v2/echo", pod.echo)
    app.router.add_get("/saas/api/v2/redirect", pod.redirect)
    app.router.add_get("/saas/api/v2/status/{code}", pod.status)
    app.router.add_get("/saas/api/v2/slow", pod.slow)
    app.router.add_post("/saas/public/core/v3/logout", pod.v3_logout)
    app.router.add_get("/saas/public/core/v3/objects", pod.objects)
    app.router.add_get("/saas/public/core/v3/export/{id}/package", pod.export_package)
    app.router.add_post("/saas/public/core/v3/import/package", pod.import_package)
    app.router.add_route("*", "/saas/public/core/v3/echo", pod.echo)
    # A path outside /saas, so tests can see IDS-SESSION-ID auth for "other" services.
    app.router.add_route("*", "/echo", pod.echo)
    return app


def _cdgc_unauthorized() -> web.Response:
    return web.json_response({"error": {"code": "AUTH_401", "message": "Unauthorized"}}, status=401)


class _Cdgc:
    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def _jwt_is_good(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        claims = read_jwt(token.strip(), self.state.ids_jwt_key)
        if claims is None or claims.get("jti") not in self.state.ids_jwts:
            return False
        try:
            alive = self.state.clock.now() < float(claims["exp"])
        except (KeyError, TypeError, ValueError):
            return False
        return alive and request.headers.get("X-INFA-ORG-ID") == claims.get("org")

    async def search_assets(self, request: web.Request) -> web.Response:
        if not self._jwt_is_good(request):
            return _cdgc_unauthorized()
        hits = [
            {"core.identity": f"asset-{number}", "summary": {"core.name": name}}
            for number, name in ((1, "CUSTOMERS"), (2, "ORDERS"))
        ]
        return web.json_response(
            {
                "summary": {"total_hits": len(hits)},
                "hits": hits,
                "rawQuery": request.rel_url.raw_query_string,
            }
        )


def build_cdgc_app(state: SandboxState, urls: SandboxUrls) -> web.Application:
    cdgc = _Cdgc(state)
    app = web.Application(middlewares=[journal_middleware(state, "cdgc", lambda r: None)])
    app.router.add_get("/data360/search/v1/assets", cdgc.search_assets)
    return app

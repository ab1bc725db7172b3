"""The fake IICS / IDMC login host (``dm-us.informaticacloud.com``): the v2 logins
(password, SAML, OAuth, Salesforce), the v3 login, identity-service sessions and JWTs."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any, Literal

from aiohttp import web

from proxy.sandbox.appkit import (
    add_handlers,
    journal_middleware,
    read_json_object,
    rejection_text,
    route,
)
from proxy.sandbox.iics import (
    NOT_JSON,
    dead_session,
    ids_error,
    iso_utc,
    malformed_v2,
    str_field,
    v2_error,
    v3_error,
)
from proxy.sandbox.saml import read_saml_assertion
from proxy.sandbox.state import SandboxState, SandboxUrls
from proxy.sandbox.tokens import read_jwt, sign_jwt

_LOGIN_SERVICES = {
    "/ma/api/v2/user/login": "iics-v2-login",
    "/ma/api/v2/user/loginSaml": "iics-saml",
    "/ma/api/v2/user/loginOAuth": "iics-oauth",
    "/ma/api/v2/user/loginSf": "iics-sf",
    "/saas/public/core/v3/login": "iics-v3-login",
    "/identity-service/api/v1/Login": "ids-login",
    "/identity-service/api/v1/jwt/Token": "ids-jwt",
}
_BAD_LOGIN = "User name or password is not valid."


# How each login API answers a body that is not JSON, and a wrong user name or password.
_REFUSALS: dict[str, tuple[Callable[[], web.Response], Callable[[str], web.Response]]] = {
    "v2": (malformed_v2, lambda text: v2_error(403, "UI_10000", text)),
    "v3": (
        lambda: v3_error(400, "APP_10000", NOT_JSON),
        lambda text: v3_error(403, "IDS_085", text),
    ),
    "ids": (
        lambda: ids_error(400, "IDS_400", NOT_JSON),
        lambda text: ids_error(401, "IDS_085", text),
    ),
}


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


class _LoginHost:
    """Handlers of the login host (``dm-us.informaticacloud.com``)."""

    def __init__(self, state: SandboxState, urls: SandboxUrls) -> None:
        self.state = state
        self.urls = urls

    async def _password_user(
        self,
        request: web.Request,
        api: Literal["v2", "v3", "ids"],
        *,
        echo: bool = True,
    ) -> str | web.Response:
        """The user whose name and password the JSON body carries, or the API's refusal.

        ``echo``: the refusal's text obeys ``state.rejection_echo``.
        """
        malformed, refused = _REFUSALS[api]
        body = await read_json_object(request)
        if body is None:
            return malformed()
        username = str_field(body, "username")
        password = str_field(body, "password")
        user = self.state.iics_users.get(username or "")
        if (
            username is None
            or user is None
            or password is None
            or not secrets.compare_digest(password.encode(), user.password.encode())
        ):
            text = await rejection_text(self.state, request, _BAD_LOGIN) if echo else _BAD_LOGIN
            return refused(text)
        return username

    def _v2_login_success(self, username: str, service: str) -> web.Response:
        session = self.state.open_iics_session(username, service)
        return web.json_response(_v2_user(self.state, self.urls, username, session.session_id))

    def _org_user_login(
        self, username: str, org_id: str | None, what: str, service: str
    ) -> web.Response:
        """Log ``username`` in if it is a user of ``org_id``; ``what`` names its token."""
        user = self.state.iics_users.get(username)
        if user is None or org_id not in (user.org_id, user.legacy_org_id):
            return v2_error(403, "UI_10000", f"The {what} user is not valid for this organization.")
        return self._v2_login_success(username, service)

    @route("POST", "/ma/api/v2/user/login")
    async def v2_login(self, request: web.Request) -> web.Response:
        username = await self._password_user(request, "v2")
        if isinstance(username, web.Response):
            return username
        return self._v2_login_success(username, "iics-v2-login")

    @route("POST", "/ma/api/v2/user/loginSaml")
    async def login_saml(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        if body is None:
            return malformed_v2()
        assertion = read_saml_assertion(str_field(body, "samlToken") or "")
        if assertion is None:
            return v2_error(403, "UI_10000", "The SAML token is not valid.")
        assertion_id, username = assertion
        if self.state.saml_assertions.get(assertion_id) != username:
            return v2_error(403, "UI_10000", "The SAML token is not valid.")
        if assertion_id in self.state.used_saml_assertions:
            return v2_error(403, "UI_10000", "The SAML assertion has already been used.")
        self.state.used_saml_assertions.add(assertion_id)
        return self._org_user_login(username, str_field(body, "orgId"), "SAML", "iics-saml")

    @route("POST", "/ma/api/v2/user/loginOAuth")
    async def login_oauth(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        if body is None:
            return malformed_v2()
        claims = read_jwt(str_field(body, "oauthToken") or "", self.state.idp_key)
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
        return self._org_user_login(username, str_field(body, "orgId"), "OAuth", "iics-oauth")

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

    @route("POST", "/ma/api/v2/user/loginSf")
    async def login_sf(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        if body is None:
            return malformed_v2()
        session_id = str_field(body, "sfSessionId")
        if session_id not in self.state.sf_sessions or str_field(body, "sfServerUrl") is None:
            return v2_error(403, "UI_10000", "The Salesforce session is not valid.")
        return self._v2_login_success(self.state.sf_iics_user, "iics-sf")

    @route("POST", "/saas/public/core/v3/login")
    async def v3_login(self, request: web.Request) -> web.Response:
        username = await self._password_user(request, "v3")
        if isinstance(username, web.Response):
            return username
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

    @route("POST", "/saas/public/core/v3/logout")
    async def v3_logout(self, request: web.Request) -> web.Response:
        session = self.state.use_iics_session(request.headers.get("INFA-SESSION-ID"))
        if session is None:
            return dead_session("/saas/public/core/v3/")
        del self.state.iics_sessions[session.session_id]
        return web.json_response({})

    @route("POST", "/ma/api/v2/user/logoutall")
    async def logout_all(self, request: web.Request) -> web.Response:
        username = await self._password_user(request, "v2", echo=False)
        if isinstance(username, web.Response):
            return username
        org_id = self.state.iics_users[username].org_id
        sessions = self.state.iics_sessions
        for session_id in [sid for sid, s in sessions.items() if s.org_id == org_id]:
            del sessions[session_id]
        return web.Response(status=200)

    @route("GET", "/ma/api/v2/user")
    async def list_users(self, request: web.Request) -> web.Response:
        session = self.state.use_iics_session(request.headers.get("icSessionId"))
        if session is None:
            return dead_session("/saas/api/v2/")
        users = [
            _v2_user(self.state, self.urls, name, None)
            for name, user in self.state.iics_users.items()
            if user.org_id == session.org_id
        ]
        return web.json_response(users)

    @route("POST", "/identity-service/api/v1/Login")
    async def ids_login(self, request: web.Request) -> web.Response:
        username = await self._password_user(request, "ids", echo=False)
        if isinstance(username, web.Response):
            return username
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

    @route("POST", "/identity-service/api/v1/jwt/Token")
    @route("GET", "/identity-service/api/v1/jwt/Token")
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

    @route("POST", "/identity-service/api/v1/Logout")
    async def ids_logout(self, request: web.Request) -> web.Response:
        session = self.state.use_iics_session(request.headers.get("IDS-SESSION-ID"))
        if session is None:
            return ids_error(401, "IDS_401", "The session is not valid or has expired.")
        del self.state.iics_sessions[session.session_id]
        return web.json_response({})


def build_login_app(state: SandboxState, urls: SandboxUrls) -> web.Application:
    app = web.Application(
        middlewares=[
            journal_middleware(state, "iics-login-host", lambda r: _LOGIN_SERVICES.get(r.path))
        ]
    )
    add_handlers(app, _LoginHost(state, urls))
    return app

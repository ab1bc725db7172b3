"""Informatica IICS logins (protocols.md §2, §3, §5): v2 password, v3, SAML, OAuth, Salesforce.

Every IICS flow ends in the same kind of session: one id injected as ``icSessionId``,
``INFA-SESSION-ID`` and ``IDS-SESSION-ID``; the upstream is the origin of ``serverUrl``
(or v3 ``baseApiUrl``), checked against the SSRF guard; ``/ma/`` and
``/identity-service/`` paths go to the login host. When the org uses JWT
authentication the id is a JWT whose ``exp`` bounds the session.
"""

from __future__ import annotations

from typing import Any

from proxy.config import IicsPasswordAuth
from proxy.flows.base import (
    JSON_HEADERS,
    Flow,
    FlowGen,
    LoginRequest,
    Session,
    call,
    check_login,
    json_body,
    jwt_exp,
    require_str,
    secret,
    trust_upstream,
)

LOGIN_HOST_PATHS = ("/ma/", "/identity-service/")


class IicsFlow(Flow):
    """What all IICS flows share: building the session from a v2/v3 login answer."""

    auth: Any  # one of the IICS auth configs; each has login_origin

    @property
    def login_origin(self) -> str:
        return str(self.auth.login_origin)

    def session_from(self, session_id: str, server_url: str, user: dict[str, Any]) -> Session:
        upstream = trust_upstream(server_url, self.login_origin, self.allowed_hosts)
        org = user.get("orgUuid") or user.get("orgId")
        return Session(
            headers=(
                ("icSessionId", session_id),
                ("INFA-SESSION-ID", session_id),
                ("IDS-SESSION-ID", session_id),
            ),
            upstream=upstream,
            alt_upstreams=tuple((p, self.login_origin) for p in LOGIN_HOST_PATHS),
            default_headers=(("Accept", "application/json"),),
            hard_expiry=jwt_exp(session_id),
            org=org if isinstance(org, str) else None,
            user=user.get("name") if isinstance(user.get("name"), str) else None,
            secrets=(session_id,),
            data={"session_id": session_id, "server_url": server_url},
        )

    def v2_login(self, endpoint: str, body: dict[str, Any], what: str) -> FlowGen:
        response = yield from call(
            LoginRequest(
                "POST",
                f"{self.login_origin}/ma/api/v2/user/{endpoint}",
                JSON_HEADERS,
                json_body(body),
            )
        )
        check_login(response, what)
        user = response.json(what)
        session_id = require_str(user, "icSessionId", what)
        server_url = require_str(user, "serverUrl", what)
        return self.session_from(session_id, server_url, user)

    def logout(self, session: Session) -> LoginRequest:
        sid = session.data["session_id"]
        return LoginRequest(
            "POST",
            f"{session.data['server_url'].rstrip('/')}/api/v2/user/logout",
            {**JSON_HEADERS, "icSessionId": sid},
            purpose="logout",
        )


class IicsPasswordFlow(IicsFlow):
    type_name = "iics-password"
    auth: IicsPasswordAuth

    def login(self) -> FlowGen:
        password = yield from secret(self.auth.password)
        body = {"@type": "login", "username": self.auth.username, "password": password}
        return (yield from self.v2_login("login", body, "IICS v2 login"))

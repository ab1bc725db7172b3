"""Informatica IICS logins: v2 password, v3, SAML, OAuth, Salesforce.

Every IICS flow ends in the same kind of session: one id injected as ``icSessionId``,
``INFA-SESSION-ID`` and ``IDS-SESSION-ID``; the upstream is the origin of ``serverUrl``
(or v3 ``baseApiUrl``), checked against the SSRF guard; ``/ma/`` and
``/identity-service/`` paths go to the login host. When the org uses JWT
authentication the id is a JWT whose ``exp`` bounds the session.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Generator
from typing import Any, ClassVar
from urllib.parse import urlsplit

from proxy.config import (
    IicsOAuthAuth,
    IicsPasswordAuth,
    IicsPasswordV3Auth,
    IicsSalesforceAuth,
    IicsSamlAuth,
)
from proxy.core.errors import Forbidden, LoginFailed, ProxyError
from proxy.flows.base import (
    JSON_HEADERS,
    PLACEHOLDER_SESSION,
    Emulated,
    Flow,
    FlowGen,
    LoginRequest,
    LoginResponse,
    Reply,
    Session,
    Step,
    json_body,
    jwt_exp,
    logout_call,
    post_json,
    require_str,
    secret,
    trust_upstream,
)
from proxy.flows.oauth2 import client_credentials_token
from proxy.flows.salesforce import soap_login

LOGIN_HOST_PATHS = ("/ma/", "/identity-service/")

# Fields of a login answer that describe the user and org; no credentials among them.
PROFILE_FIELDS = (
    "id",
    "orgId",
    "orgUuid",
    "orgName",
    "parentOrgId",
    "name",
    "firstName",
    "lastName",
    "emails",
    "timezone",
    "uuid",
    "status",
)
V2_LOGINS = ("login", "loginSaml", "loginOAuth", "loginSf")


class IicsFlow(Flow):
    """What all IICS flows share: building the session from a v2/v3 login answer."""

    credential_headers = ("icSessionId", "INFA-SESSION-ID", "IDS-SESSION-ID")

    auth: Any  # one of the IICS auth configs; each has login_origin

    emulated_paths: ClassVar[dict[str, str]] = {
        **{f"/ma/api/v2/user/{name.lower()}": "v2-login" for name in V2_LOGINS},
        "/saas/public/core/v3/login": "v3-login",
        "/ma/api/v2/user/logout": "logout",
        "/saas/api/v2/user/logout": "logout",
        "/saas/public/core/v3/logout": "logout",
        # The session id is also an identity-service session (sent as IDS-SESSION-ID).
        "/identity-service/api/v1/logout": "logout",
        "/ma/api/v2/user/logoutall": "logoutall",
        "/saas/api/v2/user/logoutall": "logoutall",
    }

    @property
    def login_origin(self) -> str:
        return str(self.auth.login_origin)

    def session_from(self, session_id: str, server_url: str, user: dict[str, Any]) -> Session:
        usable = trust_upstream(server_url, self.login_origin, self.allowed_hosts)
        org = user.get("orgUuid") or user.get("orgId")
        return Session(
            headers=(
                ("icSessionId", session_id),
                ("INFA-SESSION-ID", session_id),
                ("IDS-SESSION-ID", session_id),
            ),
            upstream=usable.origin,
            alt_upstreams=tuple((p, self.login_origin) for p in LOGIN_HOST_PATHS),
            default_headers=(("Accept", "application/json"),),
            hard_expiry=jwt_exp(session_id),
            org=org if isinstance(org, str) else None,
            user=user.get("name") if isinstance(user.get("name"), str) else None,
            secrets=(session_id,),
            data={
                "session_id": session_id,
                "server_url": str(usable),
                "profile": {k: user[k] for k in PROFILE_FIELDS if k in user},
            },
        )

    def emulate(self, kind: str, session: Session | None, public_base: str | None) -> Emulated:
        if kind == "logoutall":
            # It would end every session of the org, other integrations' included.
            raise Forbidden("logoutall is refused: it would log out the whole organization")
        if kind == "logout":
            return Emulated(200, {})
        assert session is not None
        server_url = session.data["server_url"]
        if public_base is not None:
            server_url = public_base + (urlsplit(server_url).path.rstrip("/") or "")
        profile: dict[str, Any] = dict(session.data.get("profile", {}))
        if kind == "v3-login":
            user_info: dict[str, Any] = {
                k: profile[k]
                for k in ("id", "name", "orgId", "orgName", "parentOrgId")
                if k in profile
            }
            if "orgUuid" in profile:
                user_info["orgId"] = profile["orgUuid"]
            user_info["sessionId"] = PLACEHOLDER_SESSION
            user_info["status"] = "Active"
            return Emulated(
                200,
                {
                    "products": [{"name": "Integration Cloud", "baseApiUrl": server_url}],
                    "userInfo": user_info,
                },
            )
        return Emulated(
            200,
            {
                "@type": "user",
                **profile,
                "serverUrl": server_url,
                "icSessionId": PLACEHOLDER_SESSION,
                "forceChangePassword": False,
            },
        )

    def org_idle_timeout(self, session: Session) -> Generator[Step, Reply, float | None]:
        """The org's idle timeout in seconds, asked of the vendor; ``None`` if unknown.

        Not asked for a JWT session (its exp ends it, busy or not). Never raises.
        """
        if session.hard_expiry is not None or session.user is None:
            return None
        return (
            yield from valid_session_probe(
                session.data["server_url"], session.user, session.data["session_id"]
            )
        )

    def v2_login(self, endpoint: str, body: dict[str, Any], what: str) -> FlowGen:
        user = yield from post_json(f"{self.login_origin}/ma/api/v2/user/{endpoint}", body, what)
        session_id = require_str(user, "icSessionId", what)
        server_url = require_str(user, "serverUrl", what)
        return self.session_from(session_id, server_url, user)

    def token_login(self, endpoint: str, field: str, token: str, what: str) -> FlowGen:
        """A v2 login with a single-use ``token`` for the org, masked with the session."""
        body = {field: token, "orgId": self.auth.org_id}
        session = yield from self.v2_login(endpoint, body, what)
        return with_secrets(session, token)

    def logout(self, session: Session) -> LoginRequest:
        url = f"{session.data['server_url'].rstrip('/')}/api/v2/user/logout"
        return logout_call(url, "icSessionId", session.data["session_id"])


class IicsPasswordFlow(IicsFlow):
    type_name = "iics-password"
    auth: IicsPasswordAuth

    def login(self) -> FlowGen:
        password = yield from secret(self.auth.password)
        body = {"@type": "login", "username": self.auth.username, "password": password}
        return (yield from self.v2_login("login", body, "IICS v2 login"))


class IicsPasswordV3Flow(IicsFlow):
    """v3 login: a JSON body without ``@type``; the id and base URL sit deeper."""

    type_name = "iics-password-v3"
    auth: IicsPasswordV3Auth

    def login(self) -> FlowGen:
        what = "IICS v3 login"
        password = yield from secret(self.auth.password)
        data = yield from post_json(
            f"{self.login_origin}/saas/public/core/v3/login",
            {"username": self.auth.username, "password": password},
            what,
        )
        user = data.get("userInfo") if isinstance(data, dict) else None
        if not isinstance(user, dict):
            raise LoginFailed(f"{what} answer has no userInfo")
        session_id = require_str(user, "sessionId", what)
        base_api_url = select_product(data.get("products"), self.auth.product, what)
        return self.session_from(session_id, base_api_url, user)

    def logout(self, session: Session) -> LoginRequest:
        url = f"{self.login_origin}/saas/public/core/v3/logout"
        return logout_call(url, "INFA-SESSION-ID", session.data["session_id"])


class IicsSamlFlow(IicsFlow):
    """loginSaml: the assertion is single-use, so its source is read on every login."""

    type_name = "iics-saml"
    auth: IicsSamlAuth

    def login(self) -> FlowGen:
        token = yield from secret(self.auth.saml_token)
        return (yield from self.token_login("loginSaml", "samlToken", token, "IICS SAML login"))


class IicsOAuthFlow(IicsFlow):
    """loginOAuth: a JWT is good for one login, so every login gets a new one."""

    type_name = "iics-oauth"
    auth: IicsOAuthAuth

    def login(self) -> FlowGen:
        if self.auth.oauth_token is not None:
            token = yield from secret(self.auth.oauth_token)
        else:
            assert self.auth.client_credentials is not None  # config: exactly one source
            token = yield from client_credentials_token(self.auth.client_credentials)
        return (yield from self.token_login("loginOAuth", "oauthToken", token, "IICS OAuth login"))


class IicsSalesforceFlow(IicsFlow):
    """loginSf with a Salesforce session: configured, or from a SOAP login() first."""

    type_name = "iics-salesforce"
    auth: IicsSalesforceAuth

    def login(self) -> FlowGen:
        if self.auth.salesforce is not None:
            sf = yield from soap_login(self.auth.salesforce)
            sf_session_id, sf_server_url = sf.session_id, sf.server_url
        else:
            assert self.auth.sf_session_id is not None and self.auth.sf_server_url is not None
            sf_session_id = yield from secret(self.auth.sf_session_id)
            sf_server_url = self.auth.sf_server_url
        body = {"sfSessionId": sf_session_id, "sfServerUrl": sf_server_url}
        session = yield from self.v2_login("loginSf", body, "IICS Salesforce login")
        return with_secrets(session, sf_session_id)


def select_product(products: Any, name: str | None, what: str = "IICS v3 login") -> str:
    """The ``baseApiUrl`` of the v3 login's ``products[]`` entry called ``name``.

    ``None`` takes the first entry, as most clients do. Names compare without regard to
    case or surrounding spaces. A name not in the answer fails the login, listing the
    names that were there, so that the user can correct ``auth.product``.
    """
    entries = [p for p in products if isinstance(p, dict)] if isinstance(products, list) else []
    if name is None:
        return require_str(entries[0] if entries else None, "baseApiUrl", what)
    wanted = name.strip().casefold()
    for entry in entries:
        if isinstance(entry.get("name"), str) and entry["name"].strip().casefold() == wanted:
            return require_str(entry, "baseApiUrl", what)
    names = [_shown(e["name"]) for e in entries if isinstance(e.get("name"), str)]
    listed = ", ".join(names) if names else "none"
    raise LoginFailed(f"{what} answer has no product named {_shown(name)}; it lists {listed}")


def _shown(text: str) -> str:
    """A vendor-supplied name, quoted, printable ASCII and short, for an error message."""
    return ascii(text[:40])


def valid_session_probe(
    server_url: str, user: str, session_id: str
) -> Generator[Step, Reply, float | None]:
    """Ask validSessionId how long ``session_id`` has left: the org's idle timeout, in
    seconds, when asked right after the login; ``None`` on any failure.

    IICS answers ``timeUntilExpire`` in whole minutes, rounded down, so the result errs
    short. Never raises, not even for a transport error thrown in by the driver: a
    failed probe must not fail the login.
    """
    request = LoginRequest(
        "POST",
        f"{server_url.rstrip('/')}/api/v2/user/validSessionId",
        JSON_HEADERS,
        json_body({"@type": "validatedToken", "userName": user, "icToken": session_id}),
        purpose="probe",
    )
    try:
        response = yield request
    except ProxyError:
        return None
    if not isinstance(response, LoginResponse) or not response.ok:
        return None
    try:
        data = json.loads(response.body)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("isValidToken") is not True:
        return None
    minutes = data.get("timeUntilExpire")
    if isinstance(minutes, bool) or not isinstance(minutes, int | float):
        return None
    if not (math.isfinite(minutes) and minutes > 0):
        return None
    return float(minutes) * 60


def with_secrets(session: Session, *values: str) -> Session:
    """``session`` also masking the credentials that obtained it (logs, cookies)."""
    return dataclasses.replace(session, secrets=(*session.secrets, *values))

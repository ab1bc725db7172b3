"""IDMC identity-service session plus a minted JWT, for CDGC and kin.

Two clocks: the identity-service session ends at ``sessionExpireTime`` (``hard_expiry``,
not sliding), and the JWT minted from it lives 30 minutes (``token_expiry``). The
session manager calls ``renew()`` when only the JWT runs out: a new mint, no new login.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from urllib.parse import urlencode

from proxy.config import IdmcJwtAuth
from proxy.core.errors import LoginFailed
from proxy.flows.base import (
    Flow,
    FlowGen,
    LoginRequest,
    LoginResponse,
    Session,
    call,
    check_login,
    jwt_claims,
    logout_call,
    post_json,
    require_str,
    secret,
)

JWT_LIFETIME = 1800.0  # "expires 30 minutes after it was granted" (D-CDGC)
LOGIN_WHAT = "IDMC identity-service login"
MINT_WHAT = "IDMC JWT mint"


class IdmcJwtFlow(Flow):
    credential_headers = ("Authorization", "IDS-SESSION-ID")
    type_name = "idmc-jwt"
    auth: IdmcJwtAuth

    @property
    def login_origin(self) -> str:
        return self.auth.login_origin

    def login(self) -> FlowGen:
        password = yield from secret(self.auth.password)
        data = yield from post_json(
            f"{self.login_origin}/identity-service/api/v1/Login",
            {"username": self.auth.username, "password": password},
            LOGIN_WHAT,
        )
        session_id = require_str(data, "sessionId", LOGIN_WHAT)
        org_id = require_str(data, "orgId", LOGIN_WHAT)
        ends = parse_time(require_str(data, "sessionExpireTime", LOGIN_WHAT))
        user = data.get("name") if isinstance(data.get("name"), str) else None
        response = yield from call(self._mint_request(session_id))
        check_login(response, MINT_WHAT)
        return self._session(response, session_id, org_id, ends, user)

    def renew(self, session: Session) -> FlowGen:
        """A new JWT from the same identity-service session; a full login if it is gone."""
        response = yield from call(self._mint_request(session.data["session_id"]))
        if response.status == 401:
            return (yield from self.login())
        check_login(response, MINT_WHAT)
        return self._session(
            response,
            session.data["session_id"],
            session.data["org_id"],
            session.hard_expiry,
            session.user,
        )

    def logout(self, session: Session) -> LoginRequest:
        url = f"{self.login_origin}/identity-service/api/v1/Logout"
        return logout_call(url, "IDS-SESSION-ID", session.data["session_id"])

    def _mint_request(self, session_id: str) -> LoginRequest:
        # The nonce is mandatory (IDS_345 without it) and fresh per call.
        query = urlencode({"client_id": self.auth.client_id, "nonce": secrets.token_hex(16)})
        return LoginRequest(
            "POST",
            f"{self.login_origin}/identity-service/api/v1/jwt/Token?{query}",
            {
                "Accept": "application/json",
                "Cookie": f"USER_SESSION={session_id}",
                "IDS-SESSION-ID": session_id,
            },
            purpose="mint",
        )

    def _session(
        self,
        mint: LoginResponse,
        session_id: str,
        org_id: str,
        ends: float | None,
        user: str | None,
    ) -> Session:
        jwt = require_str(mint.json(MINT_WHAT), "jwt_token", MINT_WHAT)
        claims = jwt_claims(jwt) or {}
        exp = claims.get("exp")
        if not isinstance(exp, int | float):
            iat = claims.get("iat")
            # No clock reaches a flow; without exp, the token's own iat is the best "now".
            minted = float(iat) if isinstance(iat, int | float) else time.time()
            exp = minted + JWT_LIFETIME
        return Session(
            headers=(
                ("Authorization", f"Bearer {jwt}"),
                ("X-INFA-ORG-ID", org_id),
                ("IDS-SESSION-ID", session_id),
            ),
            upstream=self.auth.upstream,
            default_headers=(("Accept", "application/json"),),
            hard_expiry=ends,
            token_expiry=float(exp),
            sliding=False,
            org=org_id,
            user=user,
            secrets=(session_id, jwt),
            data={"session_id": session_id, "org_id": org_id},
        )


def parse_time(text: str) -> float:
    """An identity-service ISO 8601 time (``2025-09-02T19:39:12.736Z``) as epoch seconds."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise LoginFailed(f"{LOGIN_WHAT} answer has an unreadable sessionExpireTime") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()

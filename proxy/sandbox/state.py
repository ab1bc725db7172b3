"""The sandbox's whole mutable world: users, sessions, failure switches and journals.

Tests run the sandbox in-process and read or change a ``SandboxState`` directly: they move
its clock, expire sessions, flip failure switches, and assert on the journals of what the
"vendor" received. Nothing here persists; a new state is a fresh world.
"""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from multidict import CIMultiDict

from proxy.core.clock import Clock
from proxy.sandbox.ratelimit import RateLimit
from proxy.sandbox.tokens import random_id, sign_jwt


@dataclass(frozen=True)
class SandboxUrls:
    """Origins (scheme://host:port, no trailing slash) of the five sandbox hosts."""

    login: str
    pod: str
    cdgc: str
    idp: str
    ivanti: str


@dataclass
class SeenRequest:
    """One request exactly as a fake vendor received it."""

    service: str
    method: str
    url: str
    headers: CIMultiDict[str]
    body: bytes | None

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class IicsUser:
    password: str
    org_id: str
    legacy_org_id: str
    user_id: str
    org_name: str = "Sandbox Org"
    first_name: str = "Demo"
    last_name: str = "User"
    email: str = "demo@example.com"
    session_kind: Literal["id", "jwt"] = "id"


@dataclass
class IicsSession:
    """One IICS/IDMC session; v2, v3 and identity-service logins all share one table."""

    session_id: str
    username: str
    org_id: str
    created: float
    last_used: float
    kind: Literal["id", "jwt"]
    service: str
    expires_at: float | None = None
    """Absolute deadline: the JWT ``exp``, or an identity-service ``sessionExpireTime``."""


@dataclass
class SalesforceUser:
    password: str
    security_token: str


@dataclass
class IvantiUser:
    password: str
    role: str


@dataclass
class IvantiSession:
    key: str
    username: str
    role: str
    last_used: float
    expires_at: float | None = None


def _default_iics_users() -> dict[str, IicsUser]:
    return {
        "demo": IicsUser(
            password="demo-password",
            org_id="5Xq2jG0mLwKzYbPdRt7sUe",
            legacy_org_id="015ZHE",
            user_id="9pQwErTyUiOpAsDfGhJkLz",
        )
    }


def _default_incidents() -> dict[str, dict[str, Any]]:
    rows = [
        ("6B3A1F0C2D4E4F5A8B9C0D1E2F3A4B5C", 10001, "Printer on fire", "Active"),
        ("7C4B2A1D3E5F405B9CAD1E2F3A4B5C6D", 10002, "VPN drops every hour", "Logged"),
        ("8D5C3B2E4F6A416CADBE2F3A4B5C6D7E", 10003, "Password reset", "Resolved"),
    ]
    return {
        rec_id: {"RecId": rec_id, "IncidentNumber": number, "Subject": subject, "Status": status}
        for rec_id, number, subject, status in rows
    }


@dataclass
class SandboxState:
    clock: Clock = field(default_factory=Clock)

    # IICS / IDMC
    iics_users: dict[str, IicsUser] = field(default_factory=_default_iics_users)
    iics_idle_timeout: float = 1800
    """The org's session idle timeout (an org admin can change it); validSessionId tells it."""
    jwt_lifetime: float = 1800
    iics_sessions: dict[str, IicsSession] = field(default_factory=dict)
    ids_session_lifetime: float = 7200
    jwt_lifetime_ids: float = 1800
    ids_jwts: dict[str, float] = field(default_factory=dict)
    """jti -> exp of every JWT minted by jwt/Token that the CDGC host still honours."""
    saml_assertions: dict[str, str] = field(default_factory=dict)
    """Assertion id -> IICS user name, for every token ``mint_saml_token`` made."""
    used_saml_assertions: set[str] = field(default_factory=set)
    iics_products: dict[str, str | None] = field(
        default_factory=lambda: {"Integration Cloud": None, "Data Integration": None}
    )
    """The v3 login's ``products[]``: name -> baseApiUrl (``None``: the POD's API base)."""

    # OAuth2 identity provider feeding loginOAuth
    oauth_clients: dict[str, str] = field(
        default_factory=lambda: {"demo-client": "demo-client-secret"}
    )
    oauth_client_users: dict[str, str] = field(default_factory=lambda: {"demo-client": "demo"})
    oauth_audience: str = "api://5Xq2jG0mLwKzYbPdRt7sUe.dm-us.informaticacloud.com"
    idp_token_lifetime: float = 3600
    issued_jtis: list[str] = field(default_factory=list)
    used_jtis: set[str] = field(default_factory=set)

    # Salesforce SOAP login feeding loginSf
    sf_users: dict[str, SalesforceUser] = field(
        default_factory=lambda: {"demo@sf.example": SalesforceUser("sf-password", "SFTOKEN123")}
    )
    sf_sessions: set[str] = field(default_factory=lambda: {"00Dsandbox!AQdemoSfSession"})
    sf_iics_user: str = "demo"

    # Ivanti Service Manager
    ivanti_tenant: str = "tenant.ivanti.localhost"
    ivanti_api_keys: set[str] = field(default_factory=lambda: {"demo-api-key"})
    ivanti_users: dict[str, IvantiUser] = field(
        default_factory=lambda: {"demo": IvantiUser("demo-password", "Admin")}
    )
    ivanti_session_kind: Literal["key", "jwt"] = "key"
    ivanti_idle_timeout: float = 1200
    ivanti_jwt_lifetime: float = 3600
    ivanti_sessions: dict[str, IvantiSession] = field(default_factory=dict)
    ivanti_incidents: dict[str, dict[str, Any]] = field(default_factory=_default_incidents)

    # Signing keys, one per issuer, so a token from one cannot pass as another's.
    iics_jwt_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    ids_jwt_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    idp_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    ivanti_jwt_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    # Failure switches, honoured by every login endpoint of every vendor.
    login_status_override: int | None = None
    login_delay: float = 0.0
    login_non_json: bool = False
    server_url_override: str | None = None
    rejection_echo: str | None = None
    """The text of a refused IICS v2/v3 or Ivanti login, for a vendor that echoes what it
    was sent: ``{password}`` stands for the submitted password, ``{body}`` for the raw
    request body. ``None``: the vendor's usual text."""

    rate_limits: dict[str, RateLimit] = field(default_factory=dict)
    """App name (``iics-pod``, ``ivanti``, ...) -> its rate limit; an app not here has none."""

    # Journals
    logins: list[SeenRequest] = field(default_factory=list)
    requests: list[SeenRequest] = field(default_factory=list)

    def logins_for(self, service: str) -> list[SeenRequest]:
        return [seen for seen in self.logins if seen.service == service]

    def requests_for(self, service: str) -> list[SeenRequest]:
        return [seen for seen in self.requests if seen.service == service]

    def requests_to(self, path: str) -> list[SeenRequest]:
        return [seen for seen in self.requests if seen.path == path]

    def expire_all_sessions(self) -> None:
        """End every IICS, identity-service and Ivanti session and every minted CDGC JWT."""
        self.iics_sessions.clear()
        self.ids_jwts.clear()
        self.ivanti_sessions.clear()

    def expire_session(self, session_id: str) -> None:
        self.iics_sessions.pop(session_id, None)
        self.ivanti_sessions.pop(session_id, None)

    def open_iics_session(
        self, username: str, service: str, *, lifetime: float | None = None
    ) -> IicsSession:
        """Start a session for ``username``; a JWT-mode org gets a JWT as its session id."""
        user = self.iics_users[username]
        now = self.clock.now()
        expires_at = None if lifetime is None else now + lifetime
        if user.session_kind == "jwt":
            expires_at = now + self.jwt_lifetime
            claims = {
                "sub": username,
                "org": user.org_id,
                "iat": int(now),
                "exp": int(expires_at),
                "jti": secrets.token_hex(16),
            }
            session_id = sign_jwt(claims, self.iics_jwt_key)
        else:
            session_id = random_id(22)
        session = IicsSession(
            session_id=session_id,
            username=username,
            org_id=user.org_id,
            created=now,
            last_used=now,
            kind=user.session_kind,
            service=service,
            expires_at=expires_at,
        )
        self.iics_sessions[session_id] = session
        return session

    def use_iics_session(self, session_id: str | None) -> IicsSession | None:
        """The live session for ``session_id``, marked as just used; ``None`` if dead."""
        session = self.iics_sessions.get(session_id or "")
        if session is None:
            return None
        if self.iics_time_left(session) <= 0:
            del self.iics_sessions[session.session_id]
            return None
        session.last_used = self.clock.now()
        return session

    def iics_time_left(self, session: IicsSession) -> float:
        """Seconds until ``session`` ends if nobody uses it; 0 or less once it has ended."""
        now = self.clock.now()
        left = math.inf if session.expires_at is None else session.expires_at - now
        # A JWT session ends at its exp no matter how busy it is; an id session slides.
        if session.kind == "id":
            left = min(left, session.last_used + self.iics_idle_timeout - now)
        return left

    def use_ivanti_session(self, key: str) -> IvantiSession | None:
        session = self.ivanti_sessions.get(key)
        if session is None:
            return None
        now = self.clock.now()
        expired = session.expires_at is not None and now >= session.expires_at
        idle = now - session.last_used >= self.ivanti_idle_timeout
        if expired or idle:
            del self.ivanti_sessions[key]
            return None
        session.last_used = now
        return session

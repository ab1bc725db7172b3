"""The sandbox's whole mutable world, plus the small pieces every fake vendor app shares.

Tests run the sandbox in-process and read or change a ``SandboxState`` directly: they move
its clock, expire sessions, flip failure switches, and assert on the journals of what the
"vendor" received. Nothing here persists; a new state is a fresh world.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import secrets
import string
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, Literal
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict

from proxy.core.clock import Clock

JOURNAL_BODY_LIMIT = 64 * 1024
"""Request bodies at or above this size (or of unknown size) are journaled as ``None``."""


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


@dataclass
class RateLimit:
    """A vendor rate limit on one fake app, on while it sits in ``SandboxState.rate_limits``.

    Both triggers are deterministic under a ``ManualClock``. ``refuse_next`` refuses that
    many requests outright, each with ``Retry-After: retry_after`` (``None`` sends none),
    then lets everything through. ``requests`` per ``per`` seconds is a token bucket on
    the sandbox clock: it holds ``requests`` tokens, gains one every ``per / requests``
    seconds, and a request finding it empty is refused with ``Retry-After`` saying when
    the next token comes. Refusals answer ``status`` (429, or 503 as IICS also does); with
    ``http_date`` the ``Retry-After`` is an HTTP-date on the sandbox clock. Login
    endpoints are never limited. ``refused`` counts refusals.
    """

    refuse_next: int = 0
    retry_after: float | None = 1.0
    requests: int | None = None
    per: float = 60.0
    status: int = 429
    http_date: bool = False
    refused: int = 0
    _full_at: float = field(default=-math.inf, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.requests is not None and (self.requests < 1 or self.per <= 0):
            raise ValueError("a token bucket needs requests >= 1 and per > 0")
        if self.status not in (429, 503):
            raise ValueError(f"a rate limit answers 429 or 503, not {self.status}")

    def refusal(self, now: float) -> web.Response | None:
        """The throttle answer to a request arriving at ``now``, or ``None`` to serve it."""
        if self.refuse_next > 0:
            self.refuse_next -= 1
            wait: float | None = self.retry_after
        else:
            wait = self._bucket_wait(now)
            if wait == 0:
                return None
        self.refused += 1
        headers: dict[str, str] = {}
        if wait is not None:
            # Whole seconds, rounded up: coming back at the time said must succeed.
            if self.http_date:
                headers["Retry-After"] = formatdate(math.ceil(now + wait), usegmt=True)
            else:
                headers["Retry-After"] = str(math.ceil(wait))
        body = {"error": {"code": "RATE_LIMITED", "message": "Too many requests."}}
        return web.json_response(body, status=self.status, headers=headers)

    def _bucket_wait(self, now: float) -> float:
        """Take a token: 0 if there was one, else the seconds until the next one."""
        if self.requests is None:
            return 0
        # Kept as GCRA, the same bucket by another bookkeeping: one "full again" time
        # moved by whole intervals, so that a ManualClock's steps land exactly on them.
        interval = self.per / self.requests
        full_at = max(self._full_at, now)
        early = full_at - now - (self.requests - 1) * interval
        if early > 0:
            return early
        self._full_at = full_at + interval
        return 0


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


def random_id(length: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


# --- JWT (HS256), just enough for the fakes to mint and check their own tokens ---


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_jwt(claims: dict[str, Any], key: bytes) -> str:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def read_jwt(token: str, key: bytes) -> dict[str, Any] | None:
    """The claims of ``token`` if ``key`` signed it, else ``None``. Does not check ``exp``."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    header, payload, signature = parts
    expected = hmac.new(key, f"{header}.{payload}".encode("ascii", "replace"), hashlib.sha256)
    try:
        if not hmac.compare_digest(_b64url(expected.digest()), signature):
            return None
        claims = json.loads(_b64url_decode(payload))
    except ValueError:
        return None
    return claims if isinstance(claims, dict) else None


# --- aiohttp glue shared by the fake vendor apps ---


async def read_json_object(request: web.Request) -> dict[str, Any] | None:
    """The request body as a JSON object, or ``None`` if it is anything else."""
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


async def rejection_text(state: SandboxState, request: web.Request, usual: str) -> str:
    """The text of a refused login: ``usual``, or ``state.rejection_echo`` filled in."""
    if state.rejection_echo is None:
        return usual
    body = await request.text()
    password = (await read_json_object(request) or {}).get("password")
    return state.rejection_echo.replace("{password}", str(password)).replace("{body}", body)


def _is_small(request: web.Request) -> bool:
    length = request.content_length
    return length is not None and length < JOURNAL_BODY_LIMIT


async def body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The request body piece by piece, without holding a large one in memory."""
    if _is_small(request):
        # The journal may have read it already; read() hands back that cached copy.
        yield await request.read()
        return
    async for chunk in request.content.iter_chunked(JOURNAL_BODY_LIMIT):
        yield chunk


async def _journal_body(request: web.Request) -> bytes | None:
    if not request.body_exists:
        return b""
    return await request.read() if _is_small(request) else None


def journal_middleware(
    state: SandboxState, app_name: str, login_service: Callable[[web.Request], str | None]
) -> Middleware:
    """Journal every request; login endpoints obey the state's failure switches, and
    every other request the app's rate limit.

    ``login_service`` names the login endpoint a request is for (``None`` for any other
    request, which is journaled in ``state.requests`` under ``app_name``).
    """

    @web.middleware
    async def journal(request: web.Request, handler: Handler) -> web.StreamResponse:
        service = login_service(request)
        seen = SeenRequest(
            service=service or app_name,
            method=request.method,
            url=f"{request.scheme}://{request.host}{request.raw_path}",
            headers=CIMultiDict(request.headers),
            body=await _journal_body(request),
        )
        if service is None:
            state.requests.append(seen)
            limit = state.rate_limits.get(app_name)
            refusal = limit.refusal(state.clock.now()) if limit is not None else None
            return refusal or await handler(request)
        state.logins.append(seen)
        if state.login_delay:
            await asyncio.sleep(state.login_delay)
        if state.login_status_override is not None:
            return web.json_response(
                {"error": {"code": "SANDBOX", "message": "Forced by login_status_override."}},
                status=state.login_status_override,
            )
        if state.login_non_json:
            return web.Response(
                text="<html><body><h1>Down for maintenance</h1></body></html>",
                content_type="text/html",
            )
        return await handler(request)

    return journal

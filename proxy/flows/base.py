"""The flow interface: vendor login protocols as plain generators, no sockets.

A flow's ``login()`` is a generator in the style of httpx's ``auth_flow``: it yields a
``Secret`` when it needs a credential (the driver resolves it and sends the value back),
or a ``LoginRequest`` when it needs an HTTP call (the driver performs it and sends back a
``LoginResponse``), and finally returns a ``Session``. Protocol logic therefore stays
testable by feeding it responses, and the driver in ``proxy.sessions`` owns all I/O,
timeouts and single-flight rules.

Flows raise ``LoginRejected`` when the vendor refused the credentials (never retried:
accounts lock) and ``LoginFailed`` when the answer was unusable (retried with backoff).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

from proxy.errors import LoginFailed, LoginRejected, UntrustedUpstream
from proxy.logs import clip
from proxy.secrets import Secret

MAX_LOGIN_BODY = 1 << 20


@dataclass(frozen=True, slots=True)
class LoginRequest:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    purpose: str = "login"  # names the step in logs: login, token, mint, logout

    def __repr__(self) -> str:  # bodies and headers carry credentials
        return f"LoginRequest({self.method} {self.url.split('?')[0]} purpose={self.purpose})"


@dataclass(frozen=True, slots=True)
class LoginResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str

    def json(self, what: str) -> Any:
        """The body as JSON; an unusable body is ``LoginFailed`` naming ``what``."""
        try:
            return json.loads(self.body)
        except ValueError:
            ctype = self.headers.get("Content-Type", "no content type")
            raise LoginFailed(
                f"{what} answered HTTP {self.status} with a body that is not JSON ({ctype})"
            ) from None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


Step = LoginRequest | Secret
Reply = LoginResponse | str
FlowGen = Generator[Step, Reply, "Session"]


@dataclass(frozen=True, slots=True)
class Session:
    """One vendor session, as the proxy uses it. Immutable: renewal makes a new one.

    ``headers`` are injected on every proxied call (replacing the client's).
    ``upstream`` is the base (origin plus optional path, no trailing slash) that the
    route prefix is swapped for; ``alt_upstreams`` send some path prefixes elsewhere
    (IICS ``/ma/`` goes to the login host).
    """

    headers: tuple[tuple[str, str], ...]
    upstream: str
    alt_upstreams: tuple[tuple[str, str], ...] = ()
    default_headers: tuple[tuple[str, str], ...] = ()
    hard_expiry: float | None = None  # absolute end of the whole session (JWT exp, ...)
    token_expiry: float | None = None  # absolute end of a token renewable without login
    sliding: bool = True  # idle timeout applies
    org: str | None = None
    user: str | None = None
    secrets: tuple[str, ...] = ()  # values never to be shown to a client or a log
    data: Mapping[str, Any] = field(default_factory=dict)  # flow-private state

    def __repr__(self) -> str:
        return f"Session(upstream={self.upstream!r}, org={self.org!r})"

    def base_for(self, path: str) -> str:
        for prefix, base in self.alt_upstreams:
            if path.startswith(prefix):
                return base
        return self.upstream


@dataclass(frozen=True, slots=True)
class Emulated:
    """The proxy's own answer to a client's login/logout call (SPEC §6)."""

    status: int
    body: Any  # JSON-serialisable; None for an empty body


PLACEHOLDER_SESSION = "auth-proxy-placeholder"  # 22 characters, like an IICS session id


class Flow:
    """Base class of a vendor flow; one instance per route, built from its auth config."""

    type_name: ClassVar[str]
    #: False when a new login cannot cure a 401 (a static key): no re-login, no replay
    can_relogin: ClassVar[bool] = True

    def __init__(self, auth: Any, allowed_hosts: tuple[str, ...] = ()) -> None:
        self.auth = auth
        self.allowed_hosts = allowed_hosts

    def login(self) -> FlowGen:
        raise NotImplementedError

    def renew(self, session: Session) -> FlowGen:
        """Renew a session that is about to end. Default: a fresh login."""
        return self.login()

    def logout(self, session: Session) -> LoginRequest | None:
        """The vendor call that ends ``session``, if the vendor has one."""
        return None

    @property
    def login_origin(self) -> str | None:
        """The configured login host, if the flow has one (for login emulation/admin)."""
        return None

    #: client paths (after the route prefix) answered by the proxy, POST only: path → kind
    emulated_paths: ClassVar[dict[str, str]] = {}

    def emulate(self, kind: str, session: Session | None, public_base: str | None) -> Emulated:
        """The answer to an emulated call of ``kind``, built from the real ``session``.

        ``public_base`` is the route base as the client sees it; URLs in the answer point
        there (None keeps the vendor's own, in forward-proxy mode). Never carries a secret.
        """
        raise NotImplementedError


# --------------------------------------------------------------------------- helpers


def secret(source: Secret) -> Generator[Step, Reply, str]:
    value = yield source
    assert isinstance(value, str)
    return value


def call(request: LoginRequest) -> Generator[Step, Reply, LoginResponse]:
    response = yield request
    assert isinstance(response, LoginResponse)
    return response


def post_json(url: str, body: Any, what: str) -> Generator[Step, Reply, Any]:
    """POST ``body`` as JSON to a login endpoint: the answer's JSON, or the right error."""
    response = yield from call(LoginRequest("POST", url, JSON_HEADERS, json_body(body)))
    check_login(response, what)
    return response.json(what)


def json_body(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def vendor_error_text(response: LoginResponse) -> str:
    """The vendor's own error code and text from a failed login, for the user to act on.

    Understands the IICS v2 and v3 shapes, the identity-service shape, Ivanti's
    ``{code, message: [...]}`` and RFC 6749 ``{error, error_description}``.
    """
    try:
        data = json.loads(response.body)
    except ValueError:
        return f"HTTP {response.status}"
    code: Any = None
    text: Any = None
    if isinstance(data, dict):
        inner = data.get("error")
        if isinstance(inner, dict):
            code, text = inner.get("code"), inner.get("message")
        elif isinstance(inner, str):
            code, text = inner, data.get("error_description")
        else:
            code = data.get("code")
            text = data.get("description") or data.get("message")
            if isinstance(data.get("message"), list) and data["message"]:
                text = data["message"][0]
    parts = [f"HTTP {response.status}"]
    if code:
        parts.append(clip(str(code), 64))
    if text:
        parts.append(clip(str(text), 300))
    return ": ".join(parts)


def check_login(response: LoginResponse, what: str) -> None:
    """Turn a non-2xx login answer into the right error: 4xx rejected, else failed."""
    if response.ok:
        return
    detail = vendor_error_text(response)
    if 400 <= response.status < 500:
        raise LoginRejected(f"{what} was rejected ({detail})")
    raise LoginFailed(f"{what} failed ({detail})")


def require_str(data: Any, key: str, what: str) -> str:
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        raise LoginFailed(f"{what} answer has no {key}")
    return value


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LoginFailed(f"the login answer names an unusable URL ({parts.scheme or 'no'} scheme)")
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower().rstrip(".")


def trust_upstream(url: str, login_url: str, allowed_hosts: tuple[str, ...]) -> str:
    """The origin of ``url`` if the route may follow it (SPEC §5 SSRF guard).

    Trusted: the login host, a subdomain of it, or a host in ``allowed_hosts``
    (``*.name`` patterns allowed). Ports are ignored.
    """
    origin = origin_of(url)
    host, login_host = host_of(url), host_of(login_url)
    if host == login_host or host.endswith("." + login_host) or host_matches(host, allowed_hosts):
        return origin
    raise UntrustedUpstream(
        f"the login answer points at {host}, which is neither the login host {login_host} "
        "nor in allowed_hosts; it was not contacted"
    )


def host_matches(host: str, patterns: tuple[str, ...]) -> bool:
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT-shaped string (not verified: only used to read ``exp``)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def jwt_exp(token: str) -> float | None:
    claims = jwt_claims(token)
    exp = claims.get("exp") if claims else None
    return float(exp) if isinstance(exp, int | float) else None

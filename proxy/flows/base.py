"""The flow interface: vendor login protocols as plain generators, no sockets.

A flow's ``login()`` is a generator in the style of httpx's ``auth_flow``: it yields a
``Secret`` when it needs a credential (the driver resolves it and sends the value back),
or a ``LoginRequest`` when it needs an HTTP call (the driver performs it and sends back a
``LoginResponse``), and finally returns a ``Session``. Protocol logic therefore stays
testable by feeding it responses: ``proxy.flows.driver`` runs a flow with the I/O it is
given, and the session manager, which gives it real I/O, owns timeouts and single-flight
rules.

Flows raise ``LoginRejected`` when the vendor refused the credentials (never retried:
accounts lock) and ``LoginFailed`` when the answer was unusable (retried with backoff).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

from yarl import URL

from proxy.core.errors import LoginFailed, LoginRejected, UntrustedUpstream
from proxy.core.hosts import host_matches
from proxy.core.masking import clip
from proxy.core.secrets import Secret

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
    """The proxy's own answer to a client's login/logout call (the README: "Tools that log
    in by themselves")."""

    status: int
    body: Any  # JSON-serialisable; None for an empty body


PLACEHOLDER_SESSION = "auth-proxy-placeholder"  # 22 characters, like an IICS session id


class Flow:
    """Base class of a vendor flow; one instance per route, built from its auth config."""

    type_name: ClassVar[str]
    #: False when a new login cannot cure a 401 (a static key): no re-login, no replay
    can_relogin: ClassVar[bool] = True
    #: headers that carry this vendor's credentials: injected by the proxy, and never
    #: taken from a client on any route
    credential_headers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, auth: Any, allowed_hosts: tuple[str, ...] = ()) -> None:
        self.auth = auth
        self.allowed_hosts = allowed_hosts

    def login(self) -> FlowGen:
        raise NotImplementedError

    def renew(self, session: Session) -> FlowGen:
        """Renew a session that is about to end. Default: a fresh login."""
        return self.login()

    def org_idle_timeout(self, session: Session) -> Generator[Step, Reply, float | None]:
        """The idle timeout the vendor applies to ``session``, if it can say; never raises.

        Default: unknown, without asking.
        """
        return None
        yield  # a generator that asks nothing

    def logout(self, session: Session) -> LoginRequest | None:
        """The vendor call that ends ``session``, if the vendor has one."""
        return None

    #: client paths (after the route prefix) the proxy answers itself: route key → kind.
    #: Keys are route keys (``proxy.server.paths.route_key``: lowercase, no trailing slash), as
    #: requests are matched however the vendor may read their path.
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


def logout_call(url: str, header: str, session_id: str) -> LoginRequest:
    """A JSON ``POST`` to ``url`` that ends the session sent in ``header``."""
    return LoginRequest("POST", url, {**JSON_HEADERS, header: session_id}, purpose="logout")


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


@dataclass(frozen=True, slots=True)
class UsableUrl:
    """A server URL as the HTTP client will use it: scheme, ASCII host, port, path."""

    scheme: str
    host: str  # lowercase, IDNA-encoded, no trailing dot; an IPv6 address without brackets
    port: int | None  # None for the scheme's default
    path: str  # percent-encoded, no trailing slash

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}" + ("" if self.port is None else f":{self.port}")

    def __str__(self) -> str:
        return self.origin + self.path


_HOST_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")


def server_url(url: str) -> UsableUrl:
    """``url`` from a login answer, read by yarl as the HTTP client (aiohttp) will read it.

    Checked before the SSRF guard, so that the host it checks is the host that would be
    contacted, and so that a URL the client cannot use fails the login (retried with
    backoff) instead of failing every request later. Parsers disagree about spaces,
    control characters and user info, so those are refused outright.
    """
    if _SPACE_OR_CONTROL.search(url):
        raise _unusable("it contains a space or a control character")
    authority = re.split(r"[/?#]", url.partition("://")[2], maxsplit=1)[0]
    if "@" in authority:
        raise _unusable("it carries a user name or password")  # never shown: a secret
    try:
        parsed = URL(url)
        host, port = parsed.raw_host, parsed.explicit_port
    except UnicodeError:  # IDNA encoding of the host failed
        raise _unusable("its host name is not valid IDNA") from None
    except ValueError as exc:
        raise _unusable(f"the HTTP client cannot parse it: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise _unusable(f"its scheme is {parsed.scheme or 'missing'}, not http or https")
    host = (host or "").rstrip(".")
    if not host:
        raise _unusable("it has no host")
    if not _valid_host(host):
        raise _unusable(f"its host {host!r} is not a valid host name or address")
    if port is not None:
        text = authority.rpartition(":")[2]
        if not (text.isascii() and text.isdigit()) or not 0 < port < 65536:
            raise _unusable(f"its port {text!r} is not a number from 1 to 65535")
        if parsed.is_default_port():
            port = None
    return UsableUrl(parsed.scheme, host, port, parsed.raw_path.rstrip("/"))


def _valid_host(host: str) -> bool:
    if ":" in host:  # an IPv6 address; a zone ("%eth0") names no remote host
        return "%" not in host and _ip_address(host) is not None
    return len(host) <= 253 and all(_valid_label(label) for label in host.split("."))


def _valid_label(label: str) -> bool:
    if not _HOST_LABEL.fullmatch(label):
        return False
    if not label.startswith("xn--"):
        return True
    try:  # an A-label must decode, or the name is no name at all
        label.encode("ascii").decode("idna")
    except UnicodeError:
        return False
    return True


def _ip_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _unusable(reason: str) -> LoginFailed:
    # The reason may quote the vendor's host: keep it printable, short and ASCII.
    text = reason.encode("ascii", "backslashreplace").decode()[:200]
    return LoginFailed(f"the login answer names a server URL the proxy cannot use: {text}")


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower().rstrip(".")


def trust_upstream(url: str, login_url: str, allowed_hosts: tuple[str, ...]) -> UsableUrl:
    """``url`` as the client will use it, if the route may follow it: the SSRF guard (the
    README: "Sessions and lockout safety").

    Trusted: the login host, a subdomain of it (unless it is an IP address, which has
    none), or a host in ``allowed_hosts`` (``*.name`` patterns allowed). Ports are ignored.
    """
    usable = server_url(url)
    host, login_host = usable.host, host_of(login_url)
    subdomain = host.endswith("." + login_host) and _ip_address(login_host) is None
    if host == login_host or subdomain or host_matches(host, allowed_hosts):
        return usable
    raise UntrustedUpstream(
        f"the login answer points at {host}, which is neither the login host {login_host} "
        "nor in allowed_hosts; it was not contacted"
    )


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

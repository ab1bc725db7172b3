"""The config file's shape: the top level, listeners, logging, client auth, forward-proxy
mode, and the routes with how each is matched.

The README's "Configuration reference" describes every key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, NamedTuple
from urllib.parse import urlsplit

from pydantic import Field, PlainValidator, field_validator, model_validator

from proxy.config.auth import AuthConfig
from proxy.config.clients import ClientAuth
from proxy.config.errors import key_path
from proxy.config.fields import StrictModel, resolve_path, state_path
from proxy.config.store import SessionStore
from proxy.config.upstream import UpstreamOverride, UpstreamSettings

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _host_patterns(value: Any) -> Any:
    """Host patterns (one, or a list) lowercased: ``name``, or ``*.name`` for subdomains."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        out = []
        for item in value:
            if not isinstance(item, str) or not item:
                raise ValueError("host patterns are non-empty strings")
            pattern = item.lower().rstrip(".")
            if "*" in pattern.removeprefix("*.") or ":" in pattern or "/" in pattern:
                raise ValueError(f"{item!r}: a host is a name, or *.name for subdomains")
            out.append(pattern)
        return tuple(out)
    return value


class ListenTLS(StrictModel):
    """TLS on a listener; with ``client_ca``, mutual TLS (README, Security)."""

    cert: str  # PEM: the server certificate, then any intermediates
    key: str  # PEM, unencrypted
    client_ca: str | None = None  # PEM: the CA(s) whose client certificates are accepted

    _paths = field_validator("cert", "key", "client_ca")(resolve_path)


class ListenMatch(StrictModel):
    port: int = Field(ge=1, le=65535)
    # Without a host of its own, a route's listener takes the main listener's host and tls.
    host: str | None = None
    tls: ListenTLS | None = None


class Match(StrictModel):
    prefix: str | None = None
    host: tuple[str, ...] | None = None
    listen: ListenMatch | None = None

    _hosts = field_validator("host", mode="before")(_host_patterns)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("/"):
            raise ValueError("must start with /")
        value = value.rstrip("/") or "/"
        if value == "/-" or value.startswith("/-/"):
            raise ValueError("/-/ is reserved for the proxy's admin endpoints")
        if "?" in value or "#" in value or "//" in value:
            raise ValueError("must be a plain path")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Match:
        given = [k for k in ("prefix", "host", "listen") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of prefix, host or listen")
        return self


class Header(NamedTuple):
    name: str
    value: str


class Route(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    match: Match
    auth: AuthConfig
    headers: tuple[Header, ...] = ()  # in file order
    allowed_hosts: tuple[str, ...] = ()
    upstream: UpstreamOverride | None = None

    @field_validator("headers", mode="before")
    @classmethod
    def _headers(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise ValueError("must be a mapping of header name to value")
        problems: list[str] = []
        first_spelling: dict[str, str] = {}  # lowercase name -> as first written
        for name, header_value in value.items():
            if not isinstance(name, str) or not _HEADER_NAME.match(name):
                problems.append(f"{name!r} is not a valid header name")
            elif name.lower() in first_spelling:
                first = first_spelling[name.lower()]
                problems.append(f"{name!r} repeats {first!r} (header names ignore case)")
            else:
                first_spelling[name.lower()] = name
            if not isinstance(header_value, str):
                problems.append(f"value of {name} must be a string")
            elif any(c in header_value for c in "\r\n\0"):
                problems.append(f"value of {name} contains CR, LF or NUL")
        if problems:
            raise ValueError("; ".join(problems))
        return tuple(Header(name, header_value) for name, header_value in value.items())

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _allowed(cls, value: Any) -> Any:
        if isinstance(value, list):
            return tuple(str(v).lower().rstrip(".") for v in value)
        return value


class Listen(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    tls: ListenTLS | None = None


class LogSettings(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"
    access: bool = True
    audit: str | None = None  # a JSON-lines file of changes and refusals, per client

    _audit = field_validator("audit")(resolve_path)


class ForwardProxyCA(StrictModel):
    # Defaults are validated too: they are relative to the config file's directory.
    cert: str = Field(default="ca.pem", validate_default=True)
    key: str = Field(default="ca-key.pem", validate_default=True)

    _paths = field_validator("cert", "key")(state_path)


class ForwardProxy(StrictModel):
    enabled: bool = False
    ca: ForwardProxyCA = Field(default_factory=dict, validate_default=True)
    passthrough: tuple[str, ...] = ()

    _hosts = field_validator("passthrough", mode="before")(_host_patterns)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _browser_origin(value: Any) -> str:
    """``scheme://host[:port]`` as browsers serialise it in ``Origin``, so equality works."""
    shape = "must be an origin like https://portal.example.com (scheme://host[:port])"
    if not isinstance(value, str):
        raise ValueError(shape)
    if value.strip().lower() == "null":
        raise ValueError("'null' cannot be allowed: every sandboxed or file:// page sends it")
    parts = urlsplit(value.strip())
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{value!r}: the port is not a number from 0 to 65535") from None
    if not re.fullmatch(r"[a-z][a-z0-9+.-]*", parts.scheme) or not parts.hostname:
        raise ValueError(f"{value!r} {shape}")
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"{value!r} {shape}: no path, query or user name")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is None or port == _DEFAULT_PORTS.get(parts.scheme):
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


BrowserOrigin = Annotated[str, PlainValidator(_browser_origin)]


class Config(StrictModel):
    listen: Listen = Field(default_factory=Listen)
    workers: int = Field(default=1, ge=1, le=64)
    log: LogSettings = Field(default_factory=LogSettings)
    client_auth: ClientAuth | None = None
    allow_unauthenticated: bool = False
    shutdown_timeout: float = Field(default=30, ge=0)
    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)
    forward_proxy: ForwardProxy = Field(default_factory=dict, validate_default=True)
    allowed_origins: tuple[BrowserOrigin, ...] = ()
    # Where the proxy keeps what it writes (the forward-proxy CA, the session store). None:
    # the CA next to the config file, the store in the user's XDG state directory.
    state_dir: str | None = None
    session_store: SessionStore = Field(default_factory=SessionStore)
    routes: tuple[Route, ...] = Field(min_length=1)

    _state_dir = field_validator("state_dir")(resolve_path)

    def upstream_for(self, route: Route) -> UpstreamSettings:
        return self.upstream.merged(route.upstream)

    def listeners(self) -> tuple[tuple[str, int, str | None], ...]:
        """Every address to listen on: the main listener (route None), then each route's own."""
        own = tuple(
            (r.match.listen.host or self.listen.host, r.match.listen.port, r.name)
            for r in self.routes
            if r.match.listen is not None
        )
        return ((self.listen.host, self.listen.port, None), *own)

    def listener_key(self, route: str | None) -> str:
        """Where the config sets the main listener (``route`` None) or ``route``'s own."""
        for i, r in enumerate(self.routes):
            if r.name == route:
                return key_path(("routes", i, "match", "listen"))
        return "listen"

    def listener_tls(self, route: str | None) -> tuple[str, ListenTLS] | None:
        """The TLS settings of the main listener (``route`` None) or of ``route``'s own,
        with the key path they come from; None for a plain-HTTP listener."""
        own = next((r.match.listen for r in self.routes if r.name == route), None)
        if own is not None and own.tls is not None:
            return f"{self.listener_key(route)}.tls", own.tls
        if (own is None or own.host is None) and self.listen.tls is not None:
            return "listen.tls", self.listen.tls
        return None

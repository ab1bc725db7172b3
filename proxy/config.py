"""Configuration: YAML in, typed immutable objects out (SPEC §3).

``load_config(path)`` reads the file once, interpolates ``${VAR}`` / ``${VAR:-default}``,
validates with pydantic (unknown keys are errors) and checks what spans several routes
(unique names, unambiguous matches, the reserved ``/-/`` prefix). Any problem is a
``ConfigError`` whose message starts with the key path, e.g.
``routes[1].auth.password: required``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from proxy.secrets import Secret


class ConfigError(Exception):
    """An invalid config; ``str()`` is the one line shown to the user."""


# --------------------------------------------------------------------------- helpers

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def key_path(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _interpolate(node: Any, loc: tuple[str | int, ...], env: Mapping[str, str]) -> Any:
    if isinstance(node, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            value = env.get(name)
            if value is None or (value == "" and default is not None):
                if default is None:
                    raise ConfigError(f"{key_path(loc)}: environment variable {name} is not set")
                return default
            return value

        return _VAR.sub(sub, node)
    if isinstance(node, dict):
        return {k: _interpolate(v, (*loc, str(k)), env) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, (*loc, i), env) for i, v in enumerate(node)]
    return node


def _base_dir(info: ValidationInfo) -> Path:
    ctx = info.context or {}
    return Path(ctx.get("base_dir", "."))


def _parse_secret(value: Any, info: ValidationInfo) -> Secret:
    if isinstance(value, Secret):
        return value
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        text = str(value)
        if not text:
            raise ValueError("must not be empty")
        return Secret("literal", text)
    if isinstance(value, dict):
        if len(value) != 1:
            raise ValueError("a secret source is one of {env: NAME}, {file: PATH}, {command: CMD}")
        ((kind, ref),) = value.items()
        if kind not in ("env", "file", "command"):
            raise ValueError(f"unknown secret source {kind!r}; use env, file or command")
        if not isinstance(ref, str) or not ref:
            raise ValueError(f"{kind}: must be a non-empty string")
        if kind == "file":
            ref = os.path.abspath(_base_dir(info) / ref)  # keep symlinks: rotated mounts
        return Secret(kind, ref)
    raise ValueError("must be a string or a secret source ({env:}, {file:}, {command:})")


SecretField = Annotated[Secret, PlainValidator(_parse_secret)]


def _resolve_path(value: str | None, info: ValidationInfo) -> str | None:
    if value is None:
        return None
    return os.path.abspath(_base_dir(info) / value)


def _http_url(value: str, what: str = "URL") -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) {what}, got {value!r}")
    return value.rstrip("/")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


# --------------------------------------------------------------------------- upstream


class UpstreamOverride(_Model):
    """Per-route overrides of the connection defaults; ``None`` means inherit."""

    connect_timeout: float | None = Field(default=None, gt=0)
    read_timeout: float | None = Field(default=None, gt=0)
    verify_tls: bool | None = None
    ca_bundle: str | None = None
    trust_env: bool | None = None
    retry_body_limit: int | None = Field(default=None, ge=0)
    resolve: dict[str, str] | None = None

    _paths = field_validator("ca_bundle")(_resolve_path)

    @field_validator("resolve")
    @classmethod
    def _check_resolve(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        for key, target in value.items():
            for item in (key, target):
                host, sep, port = item.rpartition(":")
                if not sep or not host or not port.isdigit():
                    raise ValueError(f"{item!r} must be host:port")
        return value


class UpstreamSettings(_Model):
    connect_timeout: float = Field(default=10, gt=0)
    read_timeout: float = Field(default=300, gt=0)
    verify_tls: bool = True
    ca_bundle: str | None = None
    trust_env: bool = True
    retry_body_limit: int = Field(default=1_048_576, ge=0)
    resolve: dict[str, str] = Field(default_factory=dict)

    _paths = field_validator("ca_bundle")(_resolve_path)
    _resolve = field_validator("resolve")(UpstreamOverride._check_resolve.__func__)  # type: ignore[attr-defined]

    def merged(self, override: UpstreamOverride | None) -> UpstreamSettings:
        if override is None:
            return self
        changes = {k: v for k, v in override.model_dump().items() if v is not None}
        return self.model_copy(update=changes)


# --------------------------------------------------------------------------- auth types


class _SessionTuning(_Model):
    idle_timeout: float = Field(default=1800, gt=0)
    refresh_margin: float = Field(default=120, ge=0)
    reauth_on: tuple[int, ...] = (401,)
    login_retry_after: float = Field(default=300, ge=0)

    @field_validator("reauth_on")
    @classmethod
    def _statuses(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for status in value:
            if not 400 <= status <= 599:
                raise ValueError(f"{status} is not an HTTP error status")
            if status == 400:
                # Ivanti answers 400 for "record not found"; re-logging in on it loops.
                raise ValueError("400 cannot trigger a re-login (it also means 'not found')")
        return value


SESSION_TUNING_KEYS = frozenset(_SessionTuning.model_fields)


class _IicsLogin(_SessionTuning):
    login_url: str | None = None
    pod: str | None = None

    @model_validator(mode="after")
    def _login_host(self) -> _IicsLogin:
        if (self.login_url is None) == (self.pod is None):
            raise ValueError("give exactly one of login_url or pod")
        if self.login_url is not None:
            object.__setattr__(self, "login_url", _http_url(self.login_url, "login_url"))
        else:
            if not re.fullmatch(r"[a-z0-9-]+", self.pod or ""):
                raise ValueError(f"pod {self.pod!r} must look like dm-us")
            object.__setattr__(self, "login_url", f"https://{self.pod}.informaticacloud.com")
        return self

    @property
    def login_origin(self) -> str:
        assert self.login_url is not None
        return self.login_url


class IicsPasswordAuth(_IicsLogin):
    type: Literal["iics-password"]
    username: str = Field(min_length=1, max_length=255)
    password: SecretField


class IicsPasswordV3Auth(_IicsLogin):
    type: Literal["iics-password-v3"]
    username: str = Field(min_length=1, max_length=255)
    password: SecretField


class IicsSamlAuth(_IicsLogin):
    type: Literal["iics-saml"]
    saml_token: SecretField
    org_id: str = Field(min_length=1)


class ClientCredentials(_Model):
    token_url: str
    client_id: str = Field(min_length=1)
    client_secret: SecretField
    scope: str | None = None
    auth_method: Literal["basic", "form"] = "basic"

    _url = field_validator("token_url")(lambda v: _http_url(v, "token_url"))


class IicsOAuthAuth(_IicsLogin):
    type: Literal["iics-oauth"]
    org_id: str = Field(min_length=1)
    oauth_token: SecretField | None = None
    client_credentials: ClientCredentials | None = None

    @model_validator(mode="after")
    def _one_source(self) -> IicsOAuthAuth:
        if (self.oauth_token is None) == (self.client_credentials is None):
            raise ValueError("give exactly one of oauth_token or client_credentials")
        return self


class SalesforceLogin(_Model):
    login_url: str = "https://login.salesforce.com"
    username: str = Field(min_length=1)
    password: SecretField
    security_token: SecretField | None = None
    api_version: str = "64.0"

    _url = field_validator("login_url")(lambda v: _http_url(v, "login_url"))

    @field_validator("api_version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> str:
        text = str(value)
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a version like 64.0") from None
        if number > 64.0:
            raise ValueError("SOAP login() does not exist in API 65.0 and later; use <= 64.0")
        return f"{number:.1f}"


class IicsSalesforceAuth(_IicsLogin):
    type: Literal["iics-salesforce"]
    sf_session_id: SecretField | None = None
    sf_server_url: str | None = None
    salesforce: SalesforceLogin | None = None

    @model_validator(mode="after")
    def _one_source(self) -> IicsSalesforceAuth:
        given = self.sf_session_id is not None or self.sf_server_url is not None
        if given == (self.salesforce is not None):
            raise ValueError("give sf_session_id with sf_server_url, or salesforce")
        if given and (self.sf_session_id is None or self.sf_server_url is None):
            raise ValueError("sf_session_id and sf_server_url go together")
        return self


class IdmcJwtAuth(_IicsLogin):
    type: Literal["idmc-jwt"]
    username: str = Field(min_length=1, max_length=255)
    password: SecretField
    upstream: str
    client_id: str = "idmc_api"

    _url = field_validator("upstream")(lambda v: _http_url(v, "upstream"))


class _Ivanti(_SessionTuning):
    idle_timeout: float = Field(default=1200, gt=0)
    tenant: str | None = None
    url: str | None = None

    @model_validator(mode="after")
    def _base(self) -> _Ivanti:
        if self.url is None:
            if not self.tenant:
                raise ValueError("give url or tenant")
            object.__setattr__(self, "url", f"https://{self.tenant}")
        else:
            object.__setattr__(self, "url", _http_url(self.url, "url"))
        return self

    @property
    def base_url(self) -> str:
        assert self.url is not None
        return self.url


class IvantiSessionAuth(_Ivanti):
    type: Literal["ivanti-session"]
    tenant: str = Field(min_length=1)
    username: str = Field(min_length=1)
    password: SecretField
    role: str = Field(min_length=1)


class IvantiApiKeyAuth(_Ivanti):
    type: Literal["ivanti-api-key"]
    api_key: SecretField


AuthConfig = Annotated[
    IicsPasswordAuth
    | IicsPasswordV3Auth
    | IicsSamlAuth
    | IicsOAuthAuth
    | IicsSalesforceAuth
    | IdmcJwtAuth
    | IvantiSessionAuth
    | IvantiApiKeyAuth,
    Field(discriminator="type"),
]
AUTH_TYPES = frozenset(
    get_args(model.model_fields["type"].annotation)[0]
    for model in get_args(get_args(AuthConfig)[0])
)


# --------------------------------------------------------------------------- routes


class ListenMatch(_Model):
    port: int = Field(ge=1, le=65535)
    host: str | None = None


class Match(_Model):
    prefix: str | None = None
    host: tuple[str, ...] | None = None
    listen: ListenMatch | None = None

    @field_validator("host", mode="before")
    @classmethod
    def _hosts(cls, value: Any) -> Any:
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


class Route(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    match: Match
    auth: AuthConfig
    headers: dict[str, str] = Field(default_factory=dict)
    allowed_hosts: tuple[str, ...] = ()
    upstream: UpstreamOverride | None = None

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header_value in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if any(c in header_value for c in "\r\n\0"):
                raise ValueError(f"value of {name} contains CR, LF or NUL")
        return value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _allowed(cls, value: Any) -> Any:
        if isinstance(value, list):
            return tuple(str(v).lower().rstrip(".") for v in value)
        return value


# --------------------------------------------------------------------------- top level


class Listen(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)


class LogSettings(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"
    access: bool = True


class ClientAuth(_Model):
    tokens: tuple[SecretField, ...] = Field(min_length=1)


class ForwardProxyCA(_Model):
    # Defaults are validated too: they are relative to the config file's directory.
    cert: str = Field(default="ca.pem", validate_default=True)
    key: str = Field(default="ca-key.pem", validate_default=True)

    _paths = field_validator("cert", "key")(_resolve_path)


class ForwardProxy(_Model):
    enabled: bool = False
    ca: ForwardProxyCA = Field(default_factory=dict, validate_default=True)
    passthrough: tuple[str, ...] = ()

    _hosts = field_validator("passthrough", mode="before")(Match._hosts.__func__)  # type: ignore[attr-defined]


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


class Config(_Model):
    listen: Listen = Field(default_factory=Listen)
    workers: int = Field(default=1, ge=1, le=64)
    log: LogSettings = Field(default_factory=LogSettings)
    client_auth: ClientAuth | None = None
    allow_unauthenticated: bool = False
    shutdown_timeout: float = Field(default=30, ge=0)
    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)
    forward_proxy: ForwardProxy = Field(default_factory=dict, validate_default=True)
    allowed_origins: tuple[BrowserOrigin, ...] = ()
    routes: tuple[Route, ...] = Field(min_length=1)

    def upstream_for(self, route: Route) -> UpstreamSettings:
        return self.upstream.merged(route.upstream)


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_routes(config: Config) -> None:
    seen: dict[str, int] = {}
    prefixes: list[tuple[str, int]] = []
    hosts: dict[str, int] = {}
    ports: dict[int, int] = {}
    for i, route in enumerate(config.routes):
        where = f"routes[{i}]"
        if route.name in seen:
            raise ConfigError(
                f"{where}.name: {route.name!r} is already used by routes[{seen[route.name]}]"
            )
        seen[route.name] = i
        m = route.match
        if m.prefix is not None:
            for other, j in prefixes:
                if _prefixes_overlap(m.prefix, other):
                    raise ConfigError(
                        f"{where}.match.prefix: {m.prefix!r} overlaps routes[{j}] prefix {other!r}"
                    )
            prefixes.append((m.prefix, i))
        elif m.host is not None:
            for pattern in m.host:
                if pattern in hosts:
                    owner = f"routes[{hosts[pattern]}]"
                    raise ConfigError(
                        f"{where}.match.host: {pattern!r} is already matched by {owner}"
                    )
                hosts[pattern] = i
        elif m.listen is not None:
            port = m.listen.port
            if port == config.listen.port:
                raise ConfigError(f"{where}.match.listen.port: {port} is the main listener's port")
            if port in ports:
                raise ConfigError(
                    f"{where}.match.listen.port: {port} is already used by routes[{ports[port]}]"
                )
            ports[port] = i


def _prefixes_overlap(a: str, b: str) -> bool:
    if a == "/" or b == "/":
        return True
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _format_validation_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p in AUTH_TYPES)]
    kind = err["type"]
    if kind == "missing":
        message = "required"
    elif kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "too_short":
        message = "must have at least one entry"
    elif kind == "union_tag_invalid":
        message = f"unknown auth type; expected one of {', '.join(sorted(AUTH_TYPES))}"
    elif kind == "union_tag_not_found":
        loc.append("type")
        message = "required"
    else:
        message = err["msg"].removeprefix("Value error, ")
    return f"{key_path(loc)}: {message}"


def parse_config(
    data: Any, *, base_dir: Path | str = ".", env: Mapping[str, str] | None = None
) -> Config:
    """Validate an already-loaded YAML document."""
    if not isinstance(data, dict):
        raise ConfigError("(top level): the config must be a mapping")
    data = _interpolate(data, (), os.environ if env is None else env)
    try:
        config = Config.model_validate(data, context={"base_dir": str(base_dir)})
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None
    _check_routes(config)
    return config


def default_config_path(explicit: str | None) -> Path:
    return Path(explicit or os.environ.get("AUTH_PROXY_CONFIG") or "config.yaml")


def load_config(path: Path | str) -> Config:
    """Read and validate the config file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: {problem}{where}") from None
    # absolute(), not resolve(): a Kubernetes mount is a symlink into a directory that the
    # next update deletes, so relative secret paths must hang off the link itself.
    return parse_config(data, base_dir=path.absolute().parent)

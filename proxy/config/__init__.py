"""Configuration: YAML in, typed immutable objects out (SPEC §3).

``load.load_config(path)`` reads the file once, interpolates ``${VAR}`` / ``${VAR:-default}``,
validates with pydantic (unknown keys are errors) and checks what spans several routes
(unique names, unambiguous matches, the reserved ``/-/`` prefix). The result holds no
dict or list: mappings from the file become tuples of typed pairs, so the model is
hashable and comparable (a reload compares old and new settings).

Problems are reported all at once in a ``ConfigError``: one line each, in file order,
starting with the key path, e.g. ``routes[1].auth.password: required``; an unknown key
names the nearest valid one.
"""

from __future__ import annotations

import difflib
import os
import re
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, Union, get_args, get_origin
from urllib.parse import urlsplit

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

from proxy.core.secrets import Secret


class ConfigError(Exception):
    """An invalid config: one line per problem, each starting with its key path."""

    def __init__(self, *lines: str) -> None:
        super().__init__(*lines)
        self.lines = lines

    def __str__(self) -> str:
        return "\n".join(self.lines)


# --------------------------------------------------------------------------- helpers

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]  # a key path and what is wrong there


def key_path(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _interpolate(node: Any, loc: Loc, env: Mapping[str, str], problems: list[Problem]) -> Any:
    """``node`` with variables substituted; an unset one is a problem and stays as written."""
    if isinstance(node, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            value = env.get(name)
            if value is None or (value == "" and default is not None):
                if default is None:
                    problems.append((loc, f"environment variable {name} is not set"))
                    return m.group(0)
                return default
            return value

        return _VAR.sub(sub, node)
    if isinstance(node, dict):
        return {k: _interpolate(v, (*loc, str(k)), env, problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, (*loc, i), env, problems) for i, v in enumerate(node)]
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


class HostPort(NamedTuple):
    host: str  # lowercase, without IPv6 brackets
    port: int


class ResolveRule(NamedTuple):
    """One ``resolve`` entry: connections for ``name`` go to ``address`` (curl --resolve)."""

    name: HostPort
    address: HostPort


def _host_port(text: str) -> HostPort | None:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return HostPort(host.strip("[]").lower(), int(port))


def _parse_resolve(value: Any) -> Any:
    """The ``{"host:port": "address:port"}`` mapping as sorted typed rules, parsed once here."""
    if not isinstance(value, Mapping):
        raise ValueError('must be a mapping like {"name:443": "10.0.0.5:443"}')
    rules, bad = [], []
    for key, target in value.items():
        name, address = _host_port(str(key)), _host_port(str(target))
        bad += [repr(str(text)) for text, hp in ((key, name), (target, address)) if hp is None]
        if name is not None and address is not None:
            rules.append(ResolveRule(name, address))
    if bad:
        raise ValueError("; ".join(f"{item} must be host:port" for item in bad))
    return tuple(sorted(rules))  # one order, so equal maps share a pooled session


class UpstreamOverride(_Model):
    """Per-route overrides of the connection defaults; ``None`` means inherit."""

    connect_timeout: float | None = Field(default=None, gt=0)
    read_timeout: float | None = Field(default=None, gt=0)
    verify_tls: bool | None = None
    ca_bundle: str | None = None
    trust_env: bool | None = None
    retry_body_limit: int | None = Field(default=None, ge=0)
    resolve: tuple[ResolveRule, ...] | None = None

    _paths = field_validator("ca_bundle")(_resolve_path)
    _resolve = field_validator("resolve", mode="before")(
        lambda v: None if v is None else _parse_resolve(v)
    )


class UpstreamSettings(_Model):
    connect_timeout: float = Field(default=10, gt=0)
    read_timeout: float = Field(default=300, gt=0)
    verify_tls: bool = True
    ca_bundle: str | None = None
    trust_env: bool = True
    retry_body_limit: int = Field(default=1_048_576, ge=0)
    resolve: tuple[ResolveRule, ...] = ()

    _paths = field_validator("ca_bundle")(_resolve_path)
    _resolve = field_validator("resolve", mode="before")(_parse_resolve)

    def merged(self, override: UpstreamOverride | None) -> UpstreamSettings:
        if override is None:
            return self
        # getattr, not model_dump(): the dump would turn the typed rules into plain tuples.
        fields = type(override).model_fields
        changes = {k: getattr(override, k) for k in fields if getattr(override, k) is not None}
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


def _pod_url(pod: object) -> str:
    return f"https://{pod}.informaticacloud.com"


class _IicsLogin(_SessionTuning):
    login_url: str  # given, or derived from pod before validation
    pod: str | None = None

    GIVEN_INSTEAD: ClassVar[tuple[str, str]] = ("login_url", "pod")  # for "required" errors
    _url = field_validator("login_url")(lambda v: _http_url(v, "login_url"))

    @model_validator(mode="before")
    @classmethod
    def _derive_login_url(cls, data: Any) -> Any:
        # Not raising here when neither is given: a failing before-validator would hide
        # every other error in the block; a missing login_url is reported with the rest.
        if isinstance(data, dict) and data.get("login_url") is None and data.get("pod") is not None:
            return {**data, "login_url": _pod_url(data["pod"])}
        return data

    @model_validator(mode="after")
    def _not_both(self) -> _IicsLogin:
        if self.pod is not None and self.login_url != _pod_url(self.pod):
            raise ValueError("give exactly one of login_url or pod")
        return self

    @field_validator("pod")
    @classmethod
    def _pod(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z0-9-]+", value):
            raise ValueError(f"{value!r} must look like dm-us")
        return value

    @property
    def login_origin(self) -> str:
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
    url: str  # given, or derived from tenant before validation

    GIVEN_INSTEAD: ClassVar[tuple[str, str]] = ("url", "tenant")  # for "required" errors
    _url = field_validator("url")(lambda v: _http_url(v, "url"))

    @model_validator(mode="before")
    @classmethod
    def _derive_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("url") is None and data.get("tenant"):
            return {**data, "url": f"https://{data['tenant']}"}
        return data

    @property
    def base_url(self) -> str:
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
AUTH_MODELS: dict[str, type[_SessionTuning]] = {
    get_args(model.model_fields["type"].annotation)[0]: model
    for model in get_args(get_args(AuthConfig)[0])
}
AUTH_TYPES = frozenset(AUTH_MODELS)


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


class Header(NamedTuple):
    name: str
    value: str


class Route(_Model):
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


from proxy.config.store import SessionStore  # noqa: E402 - it uses SecretField, defined above


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
    session_store: SessionStore = Field(default_factory=SessionStore)
    routes: tuple[Route, ...] = Field(min_length=1)

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


def _check_routes(config: Config) -> list[Problem]:
    """What spans several routes: unique names, unambiguous matches."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    prefixes: list[tuple[str, int]] = []
    hosts: dict[str, int] = {}
    ports: dict[int, int] = {}
    for i, route in enumerate(config.routes):
        if route.name in seen:
            message = f"{route.name!r} is already used by routes[{seen[route.name]}]"
            problems.append((("routes", i, "name"), message))
        seen.setdefault(route.name, i)
        m = route.match
        at: Loc = ("routes", i, "match")
        if m.prefix is not None:
            for other, j in prefixes:
                if _prefixes_overlap(m.prefix, other):
                    message = f"{m.prefix!r} overlaps routes[{j}] prefix {other!r}"
                    problems.append(((*at, "prefix"), message))
                    break
            prefixes.append((m.prefix, i))
        elif m.host is not None:
            for pattern in m.host:
                if pattern in hosts:
                    message = f"{pattern!r} is already matched by routes[{hosts[pattern]}]"
                    problems.append(((*at, "host"), message))
                hosts.setdefault(pattern, i)
        elif m.listen is not None:
            port = m.listen.port
            if port == config.listen.port:
                problems.append(((*at, "listen", "port"), f"{port} is the main listener's port"))
            elif port in ports:
                message = f"{port} is already used by routes[{ports[port]}]"
                problems.append(((*at, "listen", "port"), message))
            ports.setdefault(port, i)
    return problems


def _prefixes_overlap(a: str, b: str) -> bool:
    if a == "/" or b == "/":
        return True
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


# --------------------------------------------------------------------------- messages

# pydantic error types and the words a user reads instead.
_PLAIN = {
    "too_short": "must have at least one entry",
    "string_too_short": "must not be empty",
    "string_type": "must be a string",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models a field holds, through Optional, unions and tuples."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) in (Union, types.UnionType, tuple, Annotated):
        return [m for arg in get_args(annotation) for m in _models_in(arg)]
    return []


def _models_at(loc: Loc) -> list[type[BaseModel]]:
    """The model(s) whose fields are valid at ``loc`` (a pydantic location, with tags)."""
    models: list[type[BaseModel]] = [Config]
    for part in loc:
        if isinstance(part, int):
            continue  # an entry of a tuple: the same models
        inner = [
            m
            for model in models
            if part in model.model_fields
            for m in _models_in(model.model_fields[part].annotation)
        ]
        if not inner and part in AUTH_MODELS:  # the discriminated union's selected type
            inner = [AUTH_MODELS[part]]
        if not inner:
            return []
        models = inner
    return models


def _given_instead(loc: Loc) -> str:
    """For a key that may be replaced by another one (login_url by pod): say so."""
    for model in _models_at(loc[:-1]):
        key, other = getattr(model, "GIVEN_INSTEAD", ("", ""))
        if key == loc[-1]:
            return f" (or give {other})"
    return ""


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _clean_loc(loc: Loc) -> Loc:
    """The key path as written in the file: without pydantic's union tags."""
    out: list[str | int] = []
    for part in loc:
        if out and out[-1] == "auth" and isinstance(part, str) and part in AUTH_MODELS:
            continue
        out.append(part)
    return tuple(out)


def _problems_of(exc: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc, kind, ctx = err["loc"], err["type"], err.get("ctx", {})
        where = _clean_loc(loc)
        if kind == "too_short" and len(err["input"]) >= ctx.get("min_length", 1):
            continue  # entries were given, and their own errors say what is wrong
        if kind == "missing":
            message = "required" + _given_instead(loc)
        elif kind == "extra_forbidden":
            fields = (f for model in _models_at(loc[:-1]) for f in model.model_fields)
            message = "unknown key" + _did_you_mean(str(loc[-1]), fields)
        elif kind == "union_tag_invalid":
            given, valid = str(ctx.get("tag")), list(AUTH_MODELS)
            where = (*where, "type")
            message = (
                f'unknown auth type "{given}"{_did_you_mean(given, valid)}; '
                f"valid: {', '.join(valid)}"
            )
        elif kind == "union_tag_not_found":
            where, message = (*where, "type"), "required"
        elif kind in _PLAIN:
            message = _PLAIN[kind]
        elif kind == "literal_error":
            message = f"must be one of {ctx.get('expected')}"
        elif kind == "string_pattern_mismatch" and where[-1:] == ("name",):
            message = "may contain only letters, digits, '_', '.' and '-'"
        else:
            message = err["msg"].removeprefix("Value error, ").replace("Input should", "must")
        problems.append((where, message))
    return problems


def _positions(node: Any, loc: Loc = (), out: dict[Loc, int] | None = None) -> dict[Loc, int]:
    """Each key path in the document, numbered in file order."""
    out = {} if out is None else out
    out[loc] = len(out)
    if isinstance(node, dict):
        for k, v in node.items():
            _positions(v, (*loc, str(k)), out)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _positions(v, (*loc, i), out)
    return out


def _report(problems: list[Problem], data: Any) -> ConfigError:
    """One line per key path (pydantic can report several per union), in file order."""
    positions = _positions(data)

    def order(problem: Problem) -> int:
        loc = problem[0]
        while loc not in positions:  # a missing key sorts with its parent
            loc = loc[:-1]
        return positions[loc]

    seen: dict[Loc, str] = {}
    for loc, message in sorted(problems, key=order):
        seen.setdefault(loc, message)
    return ConfigError(*(f"{key_path(loc)}: {message}" for loc, message in seen.items()))


def parse_config(
    data: Any, *, base_dir: Path | str = ".", env: Mapping[str, str] | None = None
) -> Config:
    """Validate an already-loaded YAML document."""
    if not isinstance(data, dict):
        raise ConfigError("(top level): the config must be a mapping")
    problems: list[Problem] = []
    data = _interpolate(data, (), os.environ if env is None else env, problems)
    unset = [loc for loc, _ in problems]  # what is below these follows from the variable
    try:
        config = Config.model_validate(data, context={"base_dir": str(base_dir)})
    except ValidationError as exc:
        found = _problems_of(exc)
    else:
        found = _check_routes(config)
    problems += [p for p in found if not any(p[0][: len(u)] == u for u in unset)]
    if problems:
        raise _report(problems, data)
    return config


def default_config_path(explicit: str | None) -> Path:
    return Path(explicit or os.environ.get("AUTH_PROXY_CONFIG") or "config.yaml")

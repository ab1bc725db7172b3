"""How the proxy connects upstream: the defaults, a route's overrides, ``resolve`` rules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from pydantic import Field, field_validator

from proxy.config.fields import StrictModel, resolve_path


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


_HTTP_METHOD = r"^[A-Z]+$"


class Throttle(StrictModel):
    """Waiting out the vendor's 429 (and 503 with ``Retry-After``) for idempotent methods."""

    max_wait: float = Field(default=30, ge=0)  # seconds in all per request; 0 turns it off
    methods: tuple[str, ...] = ("GET", "HEAD", "OPTIONS")

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple(str(m).strip().upper() for m in value)
        return value

    @field_validator("methods")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unsafe = sorted(set(value) & {"POST", "PATCH", "CONNECT"})
        if unsafe:
            raise ValueError(f"{', '.join(unsafe)} is not idempotent: never retried")
        return value


class UpstreamOverride(StrictModel):
    """Per-route overrides of the connection defaults; ``None`` means inherit."""

    connect_timeout: float | None = Field(default=None, gt=0)
    read_timeout: float | None = Field(default=None, gt=0)
    verify_tls: bool | None = None
    ca_bundle: str | None = None
    trust_env: bool | None = None
    retry_body_limit: int | None = Field(default=None, ge=0)
    resolve: tuple[ResolveRule, ...] | None = None
    throttle: Throttle | None = None
    max_concurrent: int | None = Field(default=None, ge=1)
    queue_timeout: float | None = Field(default=None, ge=0)

    _paths = field_validator("ca_bundle")(resolve_path)
    _resolve = field_validator("resolve", mode="before")(
        lambda v: None if v is None else _parse_resolve(v)
    )


class UpstreamSettings(StrictModel):
    connect_timeout: float = Field(default=10, gt=0)
    read_timeout: float = Field(default=300, gt=0)
    verify_tls: bool = True
    ca_bundle: str | None = None
    trust_env: bool = True
    retry_body_limit: int = Field(default=1_048_576, ge=0)
    resolve: tuple[ResolveRule, ...] = ()
    throttle: Throttle = Field(default_factory=Throttle)
    max_concurrent: int | None = Field(default=None, ge=1)  # None: no cap
    queue_timeout: float = Field(default=30, ge=0)

    _paths = field_validator("ca_bundle")(resolve_path)
    _resolve = field_validator("resolve", mode="before")(_parse_resolve)

    def connection(self) -> tuple[object, ...]:
        """What a login's connection depends on (not the data path's policies)."""
        return (
            self.connect_timeout,
            self.read_timeout,
            self.verify_tls,
            self.ca_bundle,
            self.trust_env,
            self.resolve,
        )

    def merged(self, override: UpstreamOverride | None) -> UpstreamSettings:
        if override is None:
            return self
        # getattr, not model_dump(): the dump would turn the typed rules into plain tuples.
        fields = type(override).model_fields
        changes = {k: getattr(override, k) for k in fields if getattr(override, k) is not None}
        return self.model_copy(update=changes)

"""``session_store``: where vendor sessions, login leases and login verdicts are kept.

``local`` (the default): an embedded store in a state directory (``<state_dir>/sessions``
when ``state_dir`` is set), shared by every worker and surviving restarts. ``memory``: per
process and per route, as before there was a store. ``redis``: shared by every replica.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from proxy.config.fields import SecretField, StrictModel, resolve_path

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _only_for(kind: str, key: str) -> Any:
    """A validator: ``key`` is required with store type ``kind`` and refused with others."""

    def check(value: Any, info: ValidationInfo) -> Any:
        chosen = info.data.get("type")  # absent when the type itself was invalid
        if chosen is None:
            return value
        if value is not None and chosen != kind:
            raise ValueError(f"only for type: {kind}")
        return value

    return field_validator(key)(check)


class SessionStore(StrictModel):
    type: Literal["local", "memory", "redis"] = "local"
    # local; default: <state_dir>/sessions, else $XDG_STATE_HOME/auth-proxy
    path: str | None = None
    url: str | None = Field(default=None, validate_default=True)  # redis
    key_prefix: str = Field(default="auth-proxy:", min_length=1)
    password: SecretField | None = None  # redis
    # The encryption key (and fingerprint key). local: a 0600 key file by default.
    key: SecretField | None = Field(default=None, validate_default=True)
    # How long a process that died while logging in holds the others back; a holder
    # renews its lease every third of this while its login runs.
    lease_ttl: float = Field(default=10, gt=0, le=300)

    _password = _only_for("redis", "password")
    _path_type = _only_for("local", "path")
    _path = field_validator("path")(resolve_path)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None, info: ValidationInfo) -> str | None:
        chosen = info.data.get("type")
        if value is None:
            if chosen == "redis":
                raise ValueError("required for type: redis")
            return None
        if chosen is not None and chosen != "redis":
            raise ValueError("only for type: redis")
        if not value.startswith(REDIS_SCHEMES):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.data.get("type") == "redis":
            raise ValueError("required for type: redis (the same on every replica)")
        return value

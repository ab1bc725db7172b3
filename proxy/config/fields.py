"""What every config model shares: the strict base model and the field parsers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, PlainValidator, ValidationInfo

from proxy.core.secrets import Secret


class StrictModel(BaseModel):
    """Unknown keys are errors; a parsed config never changes (a reload compares two)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


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


def resolve_path(value: str | None, info: ValidationInfo) -> str | None:
    """A file path from the config, made absolute against the config file's directory."""
    if value is None:
        return None
    return os.path.abspath(_base_dir(info) / value)


def state_path(value: str, info: ValidationInfo) -> str:
    """A file the proxy writes: under ``state_dir`` when one is set, else the config's directory."""
    state_dir = (info.context or {}).get("state_dir")
    return os.path.abspath(Path(state_dir or _base_dir(info)) / value)


def http_url(value: str, what: str = "URL") -> str:
    """``value`` if it is an http(s) URL with a host, without its trailing slash."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) {what}, got {value!r}")
    return value.rstrip("/")

"""Reading the config file: the only module that parses YAML (docs/architecture.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from proxy.config.errors import ConfigError
from proxy.config.model import Config
from proxy.config.overrides import apply_overrides
from proxy.config.parse import parse_config


def load_config(path: Path | str, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file at ``path``, with the ``AUTH_PROXY_*`` overrides
    of ``env`` (default: this process's environment)."""
    env = os.environ if env is None else env
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
    if isinstance(data, dict):
        data = apply_overrides(data, env)
    # absolute(), not resolve(): a Kubernetes mount is a symlink into a directory that the
    # next update deletes, so relative secret paths must hang off the link itself.
    return parse_config(data, base_dir=path.absolute().parent, env=env)

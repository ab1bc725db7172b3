"""The start-up policy ``serve`` applies, and a reload applies again (README, Security)."""

from __future__ import annotations

from proxy.config import Config, ConfigError
from proxy.core.hosts import is_loopback


def check_startup(config: Config) -> None:
    """Refuse to listen beyond loopback without client authentication."""
    exposed = [host for host, _port, _route in config.listeners() if not is_loopback(host)]
    if exposed and config.client_auth is None and not config.allow_unauthenticated:
        raise ConfigError(
            f"listen.host: {exposed[0]} is not a loopback address; configure client_auth "
            "or set allow_unauthenticated: true"
        )

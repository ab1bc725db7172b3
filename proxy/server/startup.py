"""The start-up policy ``serve`` applies, and a reload applies again (README, Security)."""

from __future__ import annotations

from proxy.config import Config, ConfigError
from proxy.core.hosts import is_loopback


def check_startup(config: Config) -> None:
    """Refuse to listen beyond loopback without client authentication: client tokens,
    or client certificates (mutual TLS: the listener's ``tls.client_ca``)."""
    if config.client_auth is not None or config.allow_unauthenticated:
        return
    for host, _port, route in config.listeners():
        tls = config.listener_tls(route)
        if is_loopback(host) or (tls is not None and tls[1].client_ca is not None):
            continue
        raise ConfigError(
            f"{config.listener_key(route)}.host: {host} is not a loopback address; configure "
            "client_auth or tls.client_ca (mutual TLS), or set allow_unauthenticated: true"
        )


def plain_beyond_loopback(config: Config) -> list[str]:
    """A warning for each listener beyond loopback without TLS, one line each."""
    return [
        f"{config.listener_key(route)}: {host}:{port} is beyond loopback without TLS: client "
        "tokens and vendor data cross the network in clear text; set tls (README, Security)"
        for host, port, route in config.listeners()
        if not is_loopback(host) and config.listener_tls(route) is None
    ]

"""Host names: loopback checks, ``Host`` header parsing, ``*.example.com`` patterns."""

from __future__ import annotations

import functools
import ipaddress


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (IPv6 with or without brackets)."""
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=512)
def loopback_host(host: str) -> bool:
    """``localhost``, ``*.localhost`` (RFC 6761) or a loopback address."""
    return host == "localhost" or host.endswith(".localhost") or is_loopback(host)


def host_without_port(host: str) -> str:
    """A ``Host`` header's name: lowercased, without port or trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        host = name
    return host.rstrip(".")


def host_matches(host: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``host`` is one of ``patterns``; ``*.name`` matches any subdomain of name."""
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False

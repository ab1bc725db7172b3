"""Which certificates an upstream may present: the operating system's trust store, plus
a route's ``ca_bundle`` (README, Security).

``truststore`` asks the OS to verify (the Keychain on macOS, CryptoAPI on Windows,
OpenSSL's system store on Linux), so a corporate CA that IT installed on the machine is
trusted without a ``ca_bundle``; certifi-style bundles shipped with Python would not have it.
"""

from __future__ import annotations

import ssl

import truststore


def verifying_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """A client context that verifies against the system store, ``ca_bundle`` added to it."""
    context = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    return context

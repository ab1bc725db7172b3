"""TLS on the proxy's own listeners, and mutual TLS (the README: Security, "A shared
gateway").

A listener's certificate, key and client CA are read from their files when the server
starts and again at every reload, so a certificate is rotated by replacing the files and
reloading. Each TLS listener is served with one ``RotatingContext`` for its lifetime (the
server socket's context cannot be swapped); it hands every new connection the context
loaded last, while established connections keep the one they were made with.

The files are checked before use: present, readable, PEM, the key the certificate's, and
within their validity period; a certificate that expires within ``EXPIRY_WARNING`` gives
a warning. ``serve``, ``check`` and a reload share these checks.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from proxy.config import Config, ConfigError, ListenTLS

EXPIRY_WARNING = datetime.timedelta(days=14)
# TLS 1.2 suites with forward secrecy and an AEAD cipher (TLS 1.3's are all of that kind).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

ListenerKey = tuple[str, int, str | None]  # as in Config.listeners(): host, port, route


class RotatingContext(ssl.SSLContext):
    """A server context whose connections use ``current``, which a reload replaces.

    asyncio (and uvloop) make each connection's TLS object with ``wrap_bio``; delegating
    it gives the connection every setting of the latest context: certificate, key, and
    client CAs (a CA removed from ``client_ca`` is no longer trusted after the reload).
    """

    current: ssl.SSLContext

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return self.current.wrap_bio(
            incoming,
            outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
            session=session,
        )


def rotating(context: ssl.SSLContext) -> RotatingContext:
    outer = RotatingContext(ssl.PROTOCOL_TLS_SERVER)
    outer.current = context
    return outer


@dataclass(slots=True)
class Findings:
    """What checking one listener's TLS files found, each line starting with its key."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _read(path: str, key: str, found: Findings) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        found.problems.append(f"{key}: {path} does not exist")
    except OSError as exc:
        found.problems.append(f"{key}: {path} cannot be read: {exc.strerror}")
    return None


def _certificates(path: str, key: str, found: Findings) -> list[x509.Certificate]:
    data = _read(path, key, found)
    if data is None:
        return []
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        found.problems.append(f"{key}: {path} holds no PEM certificate")
        return []


def _dates(certs: list[x509.Certificate], path: str, key: str, found: Findings) -> None:
    """Each certificate of a file within its validity; a warning when one ends soon."""
    now = _now()
    for cert in certs:
        subject = cert.subject.rfc4514_string() or "(no subject)"
        ends = cert.not_valid_after_utc
        if ends <= now:
            found.problems.append(f"{key}: {path}: {subject} expired on {ends:%Y-%m-%d}")
        elif cert.not_valid_before_utc > now:
            starts = cert.not_valid_before_utc
            found.problems.append(
                f"{key}: {path}: {subject} is not valid before {starts:%Y-%m-%d %H:%M} UTC"
            )
        elif ends - now < EXPIRY_WARNING:
            days = (ends - now).days
            found.warnings.append(
                f"{key}: {path}: {subject} expires on {ends:%Y-%m-%d} (in {days} day(s)); "
                "replace the file and reload"
            )


def _key_matches(path: str, cert: x509.Certificate, key: str, found: Findings) -> None:
    data = _read(path, key, found)
    if data is None:
        return
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        found.problems.append(f"{key}: {path} is encrypted; give the key without a passphrase")
        return
    except ValueError:
        found.problems.append(f"{key}: {path} is not a PEM private key")
        return
    if private.public_key() != cert.public_key():
        found.problems.append(f"{key}: {path} is not the key of the certificate")


def check_files(key: str, tls: ListenTLS) -> Findings:
    """Check one listener's TLS files; ``key`` is where the config sets them."""
    found = Findings()
    certs = _certificates(tls.cert, f"{key}.cert", found)
    if certs:
        _key_matches(tls.key, certs[0], f"{key}.key", found)
        _dates(certs, tls.cert, f"{key}.cert", found)
    if tls.client_ca is not None:
        cas = _certificates(tls.client_ca, f"{key}.client_ca", found)
        _dates(cas, tls.client_ca, f"{key}.client_ca", found)
    return found


def server_context(key: str, tls: ListenTLS) -> tuple[ssl.SSLContext, list[str]]:
    """A server context from the files, and their warnings; a ``ConfigError`` if unusable."""
    found = check_files(key, tls)
    if found.problems:
        raise ConfigError(*found.problems)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # no default CAs: only client_ca
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_RENEGOTIATION
    # The HTTP server behind it speaks HTTP/1.1 only; never let a client pick h2.
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(tls.cert, tls.key)
        if tls.client_ca is not None:
            context.load_verify_locations(cafile=tls.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except ssl.SSLError as exc:
        raise ConfigError(f"{key}: the files cannot be used for TLS: {exc.reason or exc}") from None
    return context, found.warnings


@dataclass(slots=True)
class Loaded:
    """Every TLS listener's context, freshly loaded, and what their files warn of."""

    contexts: dict[ListenerKey, ssl.SSLContext] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def load_listeners(config: Config) -> Loaded:
    """Load the context of every TLS listener; a ``ConfigError`` with every problem."""
    loaded = Loaded()
    problems: list[str] = []
    # A route's listener may share the main listener's settings: one load per key.
    done: dict[str, ssl.SSLContext | None] = {}
    for listener in config.listeners():
        setting = config.listener_tls(listener[2])
        if setting is None:
            continue
        key, tls = setting
        if key not in done:
            try:
                done[key], warnings = server_context(key, tls)
            except ConfigError as exc:
                done[key] = None
                problems.extend(exc.lines)
                continue
            loaded.warnings += warnings
        context = done[key]
        if context is not None:
            loaded.contexts[listener] = context
    if problems:
        raise ConfigError(*problems)
    return loaded

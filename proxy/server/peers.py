"""Who is at the other end of a request's connection: the subject of the client
certificate a mutual-TLS listener verified (README, Security, "A shared gateway")."""

from __future__ import annotations

import functools
import ssl

from aiohttp import web
from cryptography import x509


def peer_subject(request: web.BaseRequest) -> str | None:
    """The verified client certificate's subject as an RFC 4514 string, most specific
    attribute first (``CN=ci-scheduler,O=Team``); None without mutual TLS.

    A listener asks for a client certificate only when it has ``client_ca``, and then
    refuses the handshake unless one verifies against it: a certificate here is verified.
    """
    transport = request.transport
    ssl_object = None if transport is None else transport.get_extra_info("ssl_object")
    # Without verification a certificate would be whatever the client chose to send.
    if not isinstance(ssl_object, ssl.SSLObject) or ssl_object.context.verify_mode == ssl.CERT_NONE:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return None if der is None else _subject(der)


@functools.lru_cache(maxsize=256)
def _subject(der: bytes) -> str:
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()

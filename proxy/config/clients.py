"""``client_auth``: who may use the proxy, and what each client may do (README,
"Security" and its "Shared gateway" example).

An entry of ``tokens`` is either a plain secret source (a legacy token: every route,
every method, the admin endpoints) or a named client with its scope. ``certificates``
name mutual-TLS identities by their subject, with the same scopes. A scope is the routes
and methods a client may use (omitted: all), whether it may call the admin endpoints,
and an optional rate limit.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, NamedTuple

from cryptography import x509
from cryptography.x509.oid import NameOID
from pydantic import Discriminator, Field, PlainValidator, Tag, field_validator, model_validator

from proxy.config.errors import Problem
from proxy.config.fields import SecretField, StrictModel
from proxy.core.secrets import Secret

_NAME = r"^[A-Za-z0-9_.-]+$"
_METHOD = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_RATE = re.compile(r"(\d+(?:\.\d*)?)\s*/\s*([smh])")
_PER = {"s": 1, "m": 60, "h": 3600}
_SECRET_KINDS = frozenset({"env", "file", "command"})
# Spellings people copy from other tools, beyond the RFC 4514 short names.
_SUBJECT_NAMES = {"EMAILADDRESS": NameOID.EMAIL_ADDRESS, "E": NameOID.EMAIL_ADDRESS}


class Rate(NamedTuple):
    """Requests per second, and the ``N/unit`` it was written as (for messages)."""

    per_second: float
    text: str


def _rate(value: Any) -> Rate:
    if isinstance(value, Rate):
        return value
    shape = "a rate is N/s, N/m or N/h, e.g. 10/s or 600/m"
    if not isinstance(value, str):
        raise ValueError(shape)
    found = _RATE.fullmatch(value.strip())
    if found is None:
        raise ValueError(f"{value!r}: {shape}")
    count, unit = float(found[1]), found[2]
    if count <= 0:
        raise ValueError(f"{value!r}: the rate must be more than 0")
    return Rate(count / _PER[unit], f"{found[1]}/{unit}")


RateField = Annotated[Rate, PlainValidator(_rate)]


def _split_unescaped(text: str, separator: str) -> list[str]:
    """``text`` split at each ``separator`` not escaped with a backslash."""
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def normalise_subject(value: str) -> str:
    """An RFC 4514 subject in the one spelling peer certificates are compared in.

    Attribute types ignore case (``cn=`` is ``CN=``) and spaces around ``,``, ``+`` and
    ``=`` are dropped; values are compared exactly, case included, and the order is
    RFC 4514's (the most specific first: ``CN=…,O=…``), as ``openssl x509 -noout
    -subject -nameopt RFC2253`` prints it.
    """
    rdns = []
    for rdn in _split_unescaped(value.strip(), ","):
        pairs = []
        for pair in _split_unescaped(rdn, "+"):
            kind, sep, text = pair.partition("=")
            if not sep or not kind.strip() or not text.strip():
                raise ValueError(f"{value!r} is not a subject like CN=name,O=organisation")
            pairs.append(f"{kind.strip().upper()}={text.strip()}")
        rdns.append("+".join(pairs))
    try:
        name = x509.Name.from_rfc4514_string(",".join(rdns), _SUBJECT_NAMES)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid subject: {exc}") from None
    return name.rfc4514_string()


def common_name(subject: str) -> str | None:
    """The first ``CN`` of a normalised subject (its most specific), or None."""
    names = x509.Name.from_rfc4514_string(subject).get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[-1].value) if names else None  # the Name is in ASN.1 order


class ClientScope(StrictModel):
    """What one client may do. ``routes``/``methods`` omitted: all of them."""

    routes: tuple[str, ...] | None = None
    methods: tuple[str, ...] | None = None
    admin: bool = False
    rate: RateField | None = None
    burst: int | None = Field(default=None, ge=1)

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        out = []
        for item in value:
            if not isinstance(item, str) or not _METHOD.match(item):
                raise ValueError(f"{item!r} is not an HTTP method")
            out.append(item.upper())
        return tuple(out)

    @model_validator(mode="after")
    def _burst_needs_rate(self) -> ClientScope:
        if self.burst is not None and self.rate is None:
            raise ValueError("burst needs a rate, e.g. rate: 10/s")
        return self

    @property
    def bucket_size(self) -> int:
        """How many requests may come at once: ``burst``, else one second's worth."""
        if self.burst is not None:
            return self.burst
        return max(1, math.ceil(self.rate.per_second)) if self.rate is not None else 0


class TokenClient(ClientScope):
    name: str = Field(pattern=_NAME)
    token: SecretField


class CertificateClient(ClientScope):
    subject: str
    name: str | None = Field(default=None, pattern=_NAME)

    _subject = field_validator("subject")(normalise_subject)

    @property
    def client_name(self) -> str:
        """``name``, else the subject's CN, else the whole subject."""
        return self.name or common_name(self.subject) or self.subject


def _entry_kind(value: Any) -> str:
    """A ``tokens`` entry: a secret source (a legacy token) or a named client."""
    if isinstance(value, TokenClient):
        return "client"
    if isinstance(value, dict) and not set(value) <= _SECRET_KINDS:
        return "client"
    return "secret"


# The union's tags; the config error report leaves them out of key paths.
ENTRY_TAGS = frozenset({"secret", "client"})
TokenEntry = Annotated[
    Annotated[SecretField, Tag("secret")] | Annotated[TokenClient, Tag("client")],
    Discriminator(_entry_kind),
]


class ClientIdentity(NamedTuple):
    """One client as the guard sees it: its name, its scope, and how it proves itself."""

    name: str
    scope: ClientScope
    token: Secret | None = None  # tokens' entries
    subject: str | None = None  # certificates' entries (normalised)


# A legacy token (a bare secret source) may do everything, as before scopes existed.
FULL_ACCESS = ClientScope(admin=True)


class ClientAuth(StrictModel):
    tokens: tuple[TokenEntry, ...] = ()
    certificates: tuple[CertificateClient, ...] = ()

    @model_validator(mode="after")
    def _some_client(self) -> ClientAuth:
        if not self.tokens and not self.certificates:
            raise ValueError("give tokens, certificates, or both")
        return self

    def identities(self) -> tuple[ClientIdentity, ...]:
        """Every client in file order, tokens first; a legacy token is named
        ``token-N`` by its position (1-based), never by its value."""
        out = []
        for i, entry in enumerate(self.tokens, 1):
            if isinstance(entry, Secret):
                out.append(ClientIdentity(f"token-{i}", FULL_ACCESS, token=entry))
            else:
                out.append(ClientIdentity(entry.name, entry, token=entry.token))
        for cert in self.certificates:
            out.append(ClientIdentity(cert.client_name, cert, subject=cert.subject))
        return tuple(out)


def check_clients(auth: ClientAuth, routes: frozenset[str]) -> list[Problem]:
    """What spans the clients and the routes: unique names and subjects, known routes."""
    problems: list[Problem] = []
    names: dict[str, str] = {}
    subjects: dict[str, int] = {}
    entries: list[tuple[str, int, object]] = [("tokens", i, e) for i, e in enumerate(auth.tokens)]
    entries += [("certificates", i, e) for i, e in enumerate(auth.certificates)]
    for (key, i, entry), identity in zip(entries, auth.identities(), strict=True):
        at = ("client_auth", key, i)
        if identity.name in names:
            message = f"{identity.name!r} is already the name of {names[identity.name]}"
            if isinstance(entry, CertificateClient) and entry.name is None:
                problems.append(((*at, "subject"), f"its CN {message}; give this entry a name"))
            else:
                problems.append(((*at, "name"), message))
        names.setdefault(identity.name, f"client_auth.{key}[{i}]")
        if isinstance(entry, CertificateClient):
            if entry.subject in subjects:
                message = f"the same subject as client_auth.certificates[{subjects[entry.subject]}]"
                problems.append(((*at, "subject"), message))
            subjects.setdefault(entry.subject, i)
        scope = identity.scope
        for route in scope.routes or ():
            if route not in routes:
                problems.append(((*at, "routes"), f"no route is named {route!r}"))
    return problems

"""A keyed fingerprint of a route's credentials: does a login lockout still apply?

A rejected login locks a route out for *those* credentials: the auth settings that name
the account (type, login host, username, org, tenant, role...) and what its secret
sources yield. The fingerprint is an HMAC under a random key that lives only as long as
the process (and the workers it forks), so it can be kept and compared without keeping
the secret.

A route with a ``{command}`` secret is fingerprinted by its config text instead: the
command may print a single-use token (SAML, OAuth assertion), so it is never run only
to compare. For such a route a reload lifts a lockout only when the auth text changed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel

from proxy.config import SESSION_TUNING_KEYS
from proxy.core.secrets import Secret

Values = Mapping[Secret, str]


def secrets_of(auth: Any) -> Iterator[Secret]:
    """Every secret source in an auth config, nested ones (client_credentials...) too."""
    if isinstance(auth, Secret):
        yield auth
    elif isinstance(auth, BaseModel):
        for name in type(auth).model_fields:
            yield from secrets_of(getattr(auth, name))
    elif isinstance(auth, tuple | list):
        for item in auth:
            yield from secrets_of(item)


def by_command(auth: Any) -> bool:
    return any(s.kind == "command" for s in secrets_of(auth))


async def resolve_all(auth: Any) -> dict[Secret, str]:
    """The current value of each secret source (the ones a login is about to use)."""
    return {source: await source.resolve() for source in secrets_of(auth)}


def fingerprint(key: bytes, auth: Any, values: Values | None) -> str:
    """HMAC of the account settings with each secret's value (its source when ``values``
    is None). Session tuning (idle_timeout, ...) is left out: it names no account."""
    canonical = json.dumps(_canonical(auth, values), sort_keys=True, separators=(",", ":"))
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()


def _canonical(value: Any, values: Values | None) -> Any:
    if isinstance(value, Secret):
        return values[value] if values is not None else [value.kind, value.ref]
    if isinstance(value, BaseModel):
        return {
            name: _canonical(getattr(value, name), values)
            for name in type(value).model_fields
            if name not in SESSION_TUNING_KEYS
        }
    if isinstance(value, tuple | list):
        return [_canonical(item, values) for item in value]
    return value

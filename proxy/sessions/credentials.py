"""The session store key of a route's credentials: whose session is it, and may a
rejection recorded for it still hold?

A key names a set of credentials: the auth settings that name the account (type, login
host, username, org, tenant, role...) and what its secret sources yield. It is computed
by the store (``Store.fingerprint``, an HMAC under the store's key), so it names the
credentials without revealing them. Session tuning (idle_timeout, ...) is left out: it
names no account. Routes with the same account share a key; a changed secret is a new key.

A route with a ``{command}`` secret is keyed by its config text instead: the command may
print a single-use token (SAML, OAuth assertion), so it is never run only to compute a
key. For such a route a reload makes a new key only when the auth text changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from proxy.config import SESSION_TUNING_KEYS
from proxy.core.secrets import Secret
from proxy.store import Store

Values = Mapping[Secret, str]
SECRET_SLOT = "<secret>"  # where a secret sits in the identity: its value is keyed apart


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


def store_key(store: Store, auth: Any, values: Values | None, scope: Sequence[str] = ()) -> str:
    """The key of ``auth``'s credentials in ``store``: its account settings and ``scope``
    (what else must match to share a session), and each secret's value — or, when
    ``values`` is None (a ``{command}`` route), each secret's source as configured."""
    identity = json.dumps(_canonical(auth), sort_keys=True, separators=(",", ":"))
    if values is None:
        secrets = [f"{s.kind}:{s.ref}" for s in secrets_of(auth)]
    else:
        secrets = [values[s] for s in secrets_of(auth)]
    return store.fingerprint([identity, *scope], secrets)


def route_scope(allowed_hosts: Sequence[str], resolve: Sequence[Any]) -> tuple[str, ...]:
    """What besides the account two routes must share to share a session: the hosts a
    login answer may send them to, and where the login host's name resolves."""
    return (json.dumps(sorted(allowed_hosts)), json.dumps([str(rule) for rule in resolve]))


def _canonical(value: Any) -> Any:
    if isinstance(value, Secret):
        return SECRET_SLOT
    if isinstance(value, BaseModel):
        return {
            name: _canonical(getattr(value, name))
            for name in type(value).model_fields
            if name not in SESSION_TUNING_KEYS
        }
    if isinstance(value, tuple | list):
        return [_canonical(item) for item in value]
    return value

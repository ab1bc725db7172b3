"""The clients of ``client_auth`` as the request path sees them (README, "Shared
gateway"): who a token or certificate subject belongs to, what that client may do, and
its rate limit.

A scope check is a couple of set lookups; a rate limit is a token bucket per client,
per process (with ``workers: N`` each worker keeps its own buckets). Buckets survive a
reload when the client's name and limit are unchanged.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from multidict import CIMultiDictProxy, istr

from proxy.config import ClientIdentity
from proxy.core.errors import Forbidden, RateLimited

# Headers by which many APIs let a POST (or GET) act as another method; the proxy
# forwards them, so a client limited in methods may name only its methods in them.
METHOD_OVERRIDES = tuple(
    istr(name) for name in ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override")
)


class TokenBucket:
    """``rate`` requests a second on average, up to ``size`` at once."""

    __slots__ = ("level", "rate", "size", "stamp")

    def __init__(self, rate: float, size: int, now: float) -> None:
        self.rate = rate
        self.size = size
        self.level = float(size)
        self.stamp = now

    def take(self, now: float) -> float | None:
        """Take one request's worth: None if there was one, else the seconds to wait."""
        elapsed = now - self.stamp
        self.stamp = now
        if elapsed > 0:  # a wall clock set back refills nothing
            self.level = min(self.size, self.level + elapsed * self.rate)
        if self.level >= 1:
            self.level -= 1
            return None
        return round((1 - self.level) / self.rate, 6)  # 10.0000001 s is not 11 s


class Client:
    """One authenticated client: its name (in logs and refusals) and its scope."""

    __slots__ = ("admin", "bucket", "methods", "name", "rate_text", "routes")

    def __init__(self, identity: ClientIdentity, bucket: TokenBucket | None) -> None:
        scope = identity.scope
        self.name = identity.name
        self.routes = None if scope.routes is None else frozenset(scope.routes)
        self.methods = None if scope.methods is None else frozenset(scope.methods)
        self.admin = scope.admin
        self.bucket = bucket
        self.rate_text = "" if scope.rate is None else scope.rate.text

    def check_route(self, route: str) -> None:
        if self.routes is not None and route not in self.routes:
            raise Forbidden(f'client "{self.name}" may not use route "{route}"')

    def check_request(self, route: str, method: str, headers: CIMultiDictProxy[str]) -> None:
        """Refuse a request on ``route`` outside the client's routes or methods; a
        method-override header counts as the method it names."""
        self.check_route(route)
        methods = self.methods
        if methods is None:
            return
        if method not in methods:
            raise Forbidden(f'client "{self.name}" may not use method {method} on route "{route}"')
        for name in METHOD_OVERRIDES:
            for value in headers.getall(name, ()):
                if (named := value.strip().upper()) not in methods:
                    raise Forbidden(
                        f'client "{self.name}" may not use method {named[:40]} on route '
                        f'"{route}" (asked for with {name})'
                    )

    def check_admin(self, method: str) -> None:
        """Refuse the admin endpoints without ``admin``, or with a method outside ``methods``."""
        if not self.admin:
            raise Forbidden(f'client "{self.name}" may not use the admin endpoints')
        if self.methods is not None and method not in self.methods:
            raise Forbidden(
                f'client "{self.name}" may not use method {method} on the admin endpoints'
            )

    def check_rate(self, now: float) -> None:
        """Count one request against the client's rate; refuse it beyond."""
        if self.bucket is None:
            return
        wait = self.bucket.take(now)
        if wait is not None:
            raise RateLimited(
                f'client "{self.name}" is over its rate limit ({self.rate_text}, '
                f"burst {self.bucket.size})",
                retry_after=wait,
            )


class Clients:
    """Every client of one config load, found by token or by certificate subject."""

    def __init__(self, tokens: list[tuple[bytes, Client]], subjects: dict[str, Client]) -> None:
        self.tokens = tokens
        self.subjects = subjects

    @classmethod
    def build(
        cls,
        identities: Iterable[tuple[ClientIdentity, bytes | None]],
        previous: Clients | None,
        now: float,
    ) -> Clients:
        """The clients of a config; each keeps its bucket from ``previous`` if its name
        and limit are unchanged."""
        kept = {} if previous is None else previous.buckets()
        tokens: list[tuple[bytes, Client]] = []
        subjects: dict[str, Client] = {}
        for identity, token in identities:
            scope = identity.scope
            bucket = None
            if scope.rate is not None:
                bucket = kept.get((identity.name, scope.rate.per_second, scope.bucket_size))
                bucket = bucket or TokenBucket(scope.rate.per_second, scope.bucket_size, now)
            client = Client(identity, bucket)
            if token is not None:
                tokens.append((token, client))
            if identity.subject is not None:
                subjects[identity.subject] = client
        return cls(tokens, subjects)

    def buckets(self) -> dict[tuple[str, float, int], TokenBucket]:
        clients = [c for _, c in self.tokens] + list(self.subjects.values())
        return {(c.name, b.rate, b.size): b for c in clients if (b := c.bucket) is not None}

    def by_token(self, candidate: bytes) -> Client | None:
        """The client whose token this is, compared in constant time against every one,
        so timing says nothing about which (or whether one) matched."""
        found = None
        for token, client in self.tokens:
            if hmac.compare_digest(candidate, token):
                found = client
        return found

"""The fleet-wide session store: Redis or Valkey (``redis://``, ``rediss://`` for TLS),
shared by every replica.

Decisions are atomic Lua scripts (take a lease, publish under it, compare-and-delete), so
no two replicas can both win. Every key carries a TTL, so nothing grows with history;
lease TTLs run on the Redis server's clock. Per store key ``K`` under the prefix ``P``:
``P{K}:session``, ``P{K}:lease``, ``P{K}:fence``, ``P{K}:rejection``, ``P{K}:backoff``
(the braces keep one key's entries in one Redis Cluster slot).
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from proxy.store.base import Clock, Store
from proxy.store.crypto import Sealer
from proxy.store.redis_scripts import (
    ACQUIRE,
    HOLDER,
    INVALIDATE,
    PUBLISH,
    RELEASE,
    RENEW,
    SNAPSHOT,
    TOUCH,
)
from proxy.store.values import (
    BACKOFF_KEEP,
    FENCE_KEEP,
    Backoff,
    Holder,
    Lease,
    LeaseLost,
    Origin,
    OriginKind,
    Record,
    Rejection,
    Snapshot,
    StoreUnavailable,
)

T = TypeVar("T")

OP_TIMEOUT = 2.0  # seconds any one store operation may take before StoreUnavailable
SOCKET_TIMEOUT = 1.0  # per connect or read; one retry fits in OP_TIMEOUT


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _fields(flat: list[Any]) -> dict[str, bytes]:
    """A Lua ``HGETALL`` reply (a flat list) as a dict with str names."""
    return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}


class RedisStore(Store):
    """Redis/Valkey through ``redis.asyncio``; reconnects by itself after an outage."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        key: bytes,
        key_prefix: str = "auth-proxy:",
        password: str | None = None,
        clock: Clock = time.time,
        op_timeout: float = OP_TIMEOUT,
    ) -> None:
        super().__init__(Sealer(key), clock)
        parts = urlsplit(url)
        self.where = f"{parts.hostname}:{parts.port or 6379}"  # for messages: no userinfo
        self.prefix = key_prefix
        self._op_timeout = op_timeout
        options: dict[str, Any] = {"password": password} if password is not None else {}
        self._redis = Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            retry=Retry(NoBackoff(), 1),  # one retry: a pooled connection a restart broke
            # Named, not left to the default: redis-py before 5.1 retries only the
            # errors listed here.
            retry_on_error=[RedisConnectionError],
            **options,
        )
        self._scripts = {
            name: self._redis.register_script(lua)
            for name, lua in {
                "acquire": ACQUIRE,
                "renew": RENEW,
                "release": RELEASE,
                "publish": PUBLISH,
                "invalidate": INVALIDATE,
                "touch": TOUCH,
                "snapshot": SNAPSHOT,
                "holder": HOLDER,
            }.items()
        }

    def _key(self, key: str, part: str) -> str:
        return f"{self.prefix}{{{key}}}:{part}"

    async def _op(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis exchange; any failure of Redis is ``StoreUnavailable``, raised
        within ``op_timeout``."""
        try:
            async with asyncio.timeout(self._op_timeout):
                return await call()
        except (RedisError, OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise StoreUnavailable(f"redis at {self.where} is unavailable: {reason}") from exc

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        script = self._scripts[name]
        return await self._op(lambda: script(keys=keys, args=args))

    async def close(self) -> None:
        await self._redis.aclose()

    # -- sessions -------------------------------------------------------------------

    def _record(self, key: str, fields: dict[str, bytes]) -> Record | None:
        if not fields or float(fields["exp"]) <= self._clock():
            return None
        version = fields["v"].decode()
        payload = self._sealer.open("session", key, fields["data"], version)
        if payload is None:
            return None  # written under another store key, or tampered with: a miss
        origin = Origin(fields["host"].decode(), int(fields["pid"]), fields["kind"].decode())  # type: ignore[arg-type]
        return Record(
            key,
            payload,
            version,
            float(fields["at"]),
            float(fields["exp"]),
            float(fields["used"]),
            origin,
        )

    async def get(self, key: str) -> Record | None:
        return self._record(key, await self._get_hash(self._key(key, "session")))

    async def publish(
        self,
        lease: Lease,
        payload: bytes,
        *,
        expires_at: float,
        logged_in_at: float | None = None,
        kind: OriginKind = "login",
    ) -> Record:
        now = self._clock()
        at = now if logged_in_at is None else logged_in_at
        version = secrets.token_hex(8)
        data = self._sealer.seal("session", lease.key, payload, version)
        keys = [self._key(lease.key, part) for part in ("lease", "session", "rejection", "backoff")]
        args = [lease.owner, version, repr(at), repr(expires_at), repr(at), self._host, self._pid]
        args += [kind, data, _ms(expires_at - now)]
        if not await self._script("publish", keys, args):
            raise LeaseLost(f"the login lease for {lease.key[:12]}… is no longer held")
        origin = Origin(self._host, self._pid, kind)
        return Record(lease.key, bytes(payload), version, at, expires_at, at, origin)

    async def invalidate(self, key: str, version: str) -> bool:
        return bool(await self._script("invalidate", [self._key(key, "session")], [version]))

    async def touch(
        self, key: str, version: str, last_used: float, expires_at: float | None = None
    ) -> bool:
        ttl = "" if expires_at is None else _ms(expires_at - self._clock())
        expiry = "" if expires_at is None else repr(expires_at)
        args = [version, repr(last_used), expiry, ttl]
        return bool(await self._script("touch", [self._key(key, "session")], args))

    async def remove(self, key: str) -> bool:
        return bool(await self._op(lambda: self._redis.delete(self._key(key, "session"))))

    # -- the login lease ------------------------------------------------------------

    async def acquire(self, key: str, ttl: float) -> Lease | None:
        owner = secrets.token_hex(16)
        keys = [self._key(key, "lease"), self._key(key, "fence")]
        args = [owner, _ms(ttl), self._host, self._pid, _ms(FENCE_KEEP)]
        fence = await self._script("acquire", keys, args)
        return None if fence is None else Lease(key=key, owner=owner, fence=int(fence), ttl=ttl)

    async def renew(self, lease: Lease) -> bool:
        args = [lease.owner, _ms(lease.ttl)]
        return bool(await self._script("renew", [self._key(lease.key, "lease")], args))

    async def release(self, lease: Lease) -> bool:
        return bool(await self._script("release", [self._key(lease.key, "lease")], [lease.owner]))

    async def lease_holder(self, key: str) -> Holder | None:
        flat, pttl = await self._script("holder", [self._key(key, "lease")], [])
        fields = _fields(flat)
        if not fields or pttl <= 0:
            return None
        return Holder(
            fields["host"].decode(), int(fields["pid"]), int(fields["fence"]), pttl / 1000
        )

    # -- verdicts -------------------------------------------------------------------

    async def _put_hash(self, name: str, mapping: dict[Any, Any], ttl: float) -> None:
        async def put() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(name)
                pipe.hset(name, mapping=mapping)
                pipe.pexpire(name, _ms(ttl))
                await pipe.execute()

        await self._op(put)

    async def _get_hash(self, name: str) -> dict[str, bytes]:
        raw: dict[Any, Any] = await self._op(lambda: self._redis.hgetall(name))
        return {field.decode(): value for field, value in raw.items()}

    async def reject(
        self, key: str, *, until: float, message: str, credentials: str | None = None
    ) -> Rejection:
        rejection = Rejection(until, message, key if credentials is None else credentials)
        sealed = self._sealer.seal("rejection", key, message.encode())
        mapping = {"until": repr(until), "credentials": rejection.credentials, "message": sealed}
        await self._put_hash(self._key(key, "rejection"), mapping, until - self._clock())
        return rejection

    def _rejection(self, key: str, fields: dict[str, bytes]) -> Rejection | None:
        if not fields or float(fields["until"]) <= self._clock():
            return None
        message = self._sealer.open("rejection", key, fields["message"])
        if message is None:
            return None
        return Rejection(float(fields["until"]), message.decode(), fields["credentials"].decode())

    async def rejection(self, key: str) -> Rejection | None:
        return self._rejection(key, await self._get_hash(self._key(key, "rejection")))

    async def clear_rejection(self, key: str) -> bool:
        name = self._key(key, "rejection")

        async def clear() -> list[Any]:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hget(name, "until")
                pipe.delete(name)
                return await pipe.execute()

        until, _deleted = await self._op(clear)
        return until is not None and float(until) > self._clock()

    async def backoff(self, key: str, *, until: float, step: float, message: str) -> Backoff:
        sealed = self._sealer.seal("backoff", key, message.encode())
        mapping = {"until": repr(until), "step": repr(step), "message": sealed}
        keep = until - self._clock() + BACKOFF_KEEP
        await self._put_hash(self._key(key, "backoff"), mapping, keep)
        return Backoff(until, step, message)

    def _backoff(self, key: str, fields: dict[str, bytes]) -> Backoff | None:
        if not fields or float(fields["until"]) + BACKOFF_KEEP <= self._clock():
            return None
        message = self._sealer.open("backoff", key, fields["message"])
        if message is None:
            return None
        return Backoff(float(fields["until"]), float(fields["step"]), message.decode())

    async def backoff_state(self, key: str) -> Backoff | None:
        return self._backoff(key, await self._get_hash(self._key(key, "backoff")))

    async def clear_backoff(self, key: str) -> bool:
        return bool(await self._op(lambda: self._redis.delete(self._key(key, "backoff"))))

    # -- waiting --------------------------------------------------------------------

    async def snapshot(self, key: str) -> Snapshot:
        keys = [self._key(key, part) for part in ("session", "rejection", "backoff", "lease")]
        session, rejection, backoff, leased = await self._script("snapshot", keys, [])
        return Snapshot(
            record=self._record(key, _fields(session)),
            rejection=self._rejection(key, _fields(rejection)),
            backoff=self._backoff(key, _fields(backoff)),
            leased=bool(leased),
        )

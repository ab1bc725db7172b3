"""The store's view while a session is in use: every ``SYNC_EVERY`` seconds of use, the
last use is written back (another process's copy of a sliding session must not look
idle) and a newer session another process stored is taken; a session logged in while
the store was down is shared once it is back.
"""

from __future__ import annotations

import structlog

from proxy.sessions import payload
from proxy.sessions.core import SessionCore
from proxy.sessions.lease import Lease
from proxy.store import StoreError

log = structlog.get_logger("auth_proxy.sessions")


class Syncing(SessionCore):
    async def _sync(self, lease: Lease) -> None:
        """Write back the last use (sliding expiry) and look for another process's newer
        session. Runs in the background, at most every SYNC_EVERY seconds of use."""
        try:
            await self._sync_once(lease)
        except StoreError:
            pass  # counted and logged by _op; the session held keeps serving
        finally:
            self._sync_task = None

    async def _sync_once(self, lease: Lease) -> None:
        store, key = self._store, lease.key
        if lease.version is not None and lease.session.sliding and lease.last_used > lease.written:
            used = lease.last_used
            until = self._stored_until(lease.session, used, lease.idle_timeout)
            if await self._op("touch", store.touch(key, lease.version, used, until)):
                lease.written = used
        record = await self._op("get", store.get(key))
        if self._lease is not lease or self._task is not None:
            return  # replaced meanwhile, or a login is under way
        if record is None:
            if lease.version is None:
                await self._restore(lease)
            return
        stored = payload.decode(record.payload)
        if stored is not None and (
            record.version == lease.version
            or self._fresh(stored.session, record.last_used, self._idle_of(stored)[0])
        ):
            self._take(record, stored, key)

    async def _restore(self, lease: Lease) -> None:
        """A session this process logged in while the store was down: shared now."""
        store = self._store
        held = await self._op("acquire", store.acquire(lease.key, self._stores.lease_ttl))
        if held is None:
            return
        until = self._stored_until(lease.session, lease.last_used, lease.idle_timeout)
        async with store.hold(held):
            if await self._op("get", store.get(lease.key)) is not None:
                return
            record = await self._op(
                "publish",
                store.publish(
                    held,
                    payload.encode(*lease.stored),
                    expires_at=until,
                    logged_in_at=lease.logged_in_at,
                    kind="restored",
                ),
            )
        lease.version, lease.written = record.version, record.last_used
        log.info("session_restored", route=self.route)

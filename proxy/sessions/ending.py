"""How a route's session ends: an operator's logout (at the vendor and in the store, for
every process), a reload that lets it go (logged out only if no route and, as far as the
store shows, no other process uses it), and the process stopping (a stored session
stays for the next process; one only this process had is logged out).
"""

from __future__ import annotations

import structlog

from proxy.flows.base import Session
from proxy.sessions import payload
from proxy.sessions.lease import Lease
from proxy.sessions.verdicts import Verdicts
from proxy.store import StoreUnavailable

log = structlog.get_logger("auth_proxy.sessions")


class Ending(Verdicts):
    async def key(self) -> str | None:
        """Where a session for the current credentials (read now if not known) is
        stored, or None if the secrets cannot be read."""
        key = await self._credentials_key()
        return None if key is None else key + self._instance

    def forget(self, stored_as: str) -> None:
        """Another route logged the session stored as ``stored_as`` out: stop using it."""
        lease = self._lease
        if lease is not None and self.held_key == stored_as:
            self._retire(lease)

    async def logout(self) -> bool:
        """End the session at the vendor and remove it from the store (``auth-proxy
        logout``); True if there was one. Every process holding it finds out at its next
        call (a 401), and logs in once."""
        key = self.held_key or await self.key()
        if key is None:
            return False
        lease = self._lease
        sessions: dict[str | None, Session] = {}
        if lease is not None:
            self._retire(lease)
            sessions[lease.version] = lease.session
        try:
            record = await self._op("get", self._store.get(key))
            if record is not None:
                stored = payload.decode(record.payload)
                if stored is not None:
                    sessions.setdefault(record.version, stored.session)
                await self._op("remove", self._store.remove(key))
        except StoreUnavailable:  # the stored copy stays; the one held here still ends
            log.warning("logout_store_unavailable", route=self.route)
        for session in sessions.values():
            await self._vendor_logout(session)
        return bool(sessions)

    async def shutdown(self) -> None:
        """The process stops. A stored session stays for the next process (and the
        others); with ``memory``, or a session only this process had, it is logged out."""
        lease = self._stop()
        if lease is None:
            return
        try:
            if not (self.shared and lease.version is not None):
                await self._vendor_logout(lease.session)
        finally:
            lease.held.release()

    async def release(self, in_use: bool) -> None:
        """A reload dropped this route or changed its credentials: log its session out
        unless something still uses it (``in_use``: a route of the new config has the
        same credentials)."""
        lease = self._stop()
        if lease is not None:
            await self._let_go(lease, in_use)

    def _stop(self) -> Lease | None:
        """Nothing more runs for this route: its tasks are cancelled, what its latest
        login resolved leaves the redactor. Returns the lease it held."""
        lease, self._lease = self._lease, None
        for task in (self._task, self._sync_task):
            if task is not None:
                task.cancel()
        self._resolved.release()
        return lease

    async def _let_go(self, lease: Lease, in_use: bool = False) -> None:
        """Log ``lease`` out if no route here and, as far as the store shows, no other
        process uses it: the stored record is still this version and nobody has written
        a use of it since this process last did."""
        try:
            logout, reason = not in_use, "another route uses it"
            if logout and self.shared and lease.version is not None:
                try:
                    record = await self._op("get", self._store.get(lease.key))
                except StoreUnavailable:
                    record, reason = None, "the store cannot tell who uses it"
                else:
                    reason = "another process uses it"
                logout = (
                    record is not None
                    and record.version == lease.version
                    and record.last_used <= lease.written
                )
                if logout:
                    await self._op("invalidate", self._store.invalidate(lease.key, lease.version))
            log.info(
                "session_released",
                route=self.route,
                logout=logout,
                reason=None if logout else reason,
            )
            if logout:
                await self._vendor_logout(lease.session)
        except StoreUnavailable:
            pass
        finally:
            lease.held.release()

    async def _vendor_logout(self, session: Session) -> None:
        """The vendor call that ends ``session``. Errors are logged, not raised."""
        try:
            request = self.flow.logout(session)
            if request is None:
                return
            response = await self._execute(request)
            log.info("logout", route=self.route, status=response.status)
        except Exception as exc:
            log.warning("logout_failed", route=self.route, error=type(exc).__name__)

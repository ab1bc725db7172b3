"""The credentials an attempt uses, and the verdicts on them: a rejection (the vendor
refused these credentials: nobody sends them again until it ends or an operator clears
it) and a backoff (a transient failure: every process waits, twice as long each time).

Verdicts are kept in the store under the credentials' key, so the whole fleet obeys
them; this process remembers those it has seen, and they hold when the store cannot be
reached (a rejected login is never retried).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import Any

import structlog

from proxy.core.errors import LoginBackoff, LoginRejected, ProxyError
from proxy.sessions.core import SessionCore
from proxy.sessions.credentials import Values, resolve_all, store_key
from proxy.store import Backoff, Rejection, StoreUnavailable, Verdict

log = structlog.get_logger("auth_proxy.sessions")

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0


class Verdicts(SessionCore):
    async def _credentials(self, started: float) -> tuple[str, Values]:
        """The key of the credentials this attempt uses, and their secret values.

        Credentials this process saw rejected are not read again (a rotated file counts
        from the next reload, an operator's clear, or the end of the rejection); the
        store is asked whether the rejection still holds (``clear`` lifts it).
        """
        key = self._key
        now = self._clock.now()
        if key is not None:
            seen = self._rejections.get(key)
            if seen is not None and seen.active(now):
                rejection = await self._rejection(key)
                if rejection is not None:
                    raise self._refusal(key, rejection)
        elif (unreadable := self._backoffs.get(None)) is not None and unreadable.active(now):
            raise self._refusal(None, unreadable)
        if self._text_key is not None:
            return self._text_key, {}
        try:
            values = await resolve_all(self.flow.auth)
        except ProxyError as exc:  # an unreadable secret source: backed off in this process
            exc.for_route(self.route)
            await self._failed(None, exc, started)
            raise
        self._key = store_key(self._verdicts, self.flow.auth, values, self._scope)
        self._backoffs.pop(None, None)
        return self._key, values

    async def _credentials_key(self) -> str | None:
        """The key of the current credentials, read now if not known; None if the secrets
        cannot be read."""
        if self._key is None:
            try:
                values = await resolve_all(self.flow.auth)
            except ProxyError:
                return None
            self._key = store_key(self._verdicts, self.flow.auth, values, self._scope)
        return self._key

    async def _rejection(self, key: str) -> Rejection | None:
        """The rejection in force for ``key``: the store's word, else this process's."""
        try:
            rejection = await self._op("rejection", self._verdicts.rejection(key))
        except StoreUnavailable:
            seen = self._rejections.get(key)
            return seen if seen is not None and seen.active(self._clock.now()) else None
        if rejection is None:
            self._rejections.pop(key, None)
        return rejection

    async def _stored_verdicts(self, key: str) -> list[Verdict]:
        """The verdicts in force for ``key`` in the verdict store (one apart from the
        sessions' store: single flight there cannot see them)."""
        now = self._clock.now()
        rejection = await self._verdicts.rejection(key)
        backoff = await self._verdicts.backoff_state(key)
        return [v for v in (rejection, backoff) if v is not None and v.active(now)]

    def _known_verdict(self, key: str | None) -> Verdict | None:
        """A verdict in force for ``key`` that this process has seen."""
        now = self._clock.now()
        rejection = None if key is None else self._rejections.get(key)
        if rejection is not None and rejection.active(now):
            return rejection
        backoff = self._backoffs.get(key)
        return backoff if backoff is not None and backoff.active(now) else None

    def _verdict_seen(self, seen: Mapping[Any, Verdict], now: float) -> float | None:
        """When a verdict in force for the current credentials (any, when not read yet)
        ends; None when there is none."""
        if self._key is not None:
            verdict = seen.get(self._key)
            return verdict.until if verdict is not None and verdict.active(now) else None
        return max((v.until for v in seen.values() if v.active(now)), default=None)

    def _refusal(self, key: str | None, verdict: Verdict) -> ProxyError:
        """The error for a verdict in force, remembered by this process."""
        self.last_error = verdict.message
        if isinstance(verdict, Rejection):
            if key is not None:
                self._rejections[key] = verdict
            return LoginRejected(verdict.message, route=self.route)
        self._backoffs[key] = verdict
        return LoginBackoff(
            f"the last login failed ({verdict.message}); retrying in a moment",
            route=self.route,
            retry_after=verdict.until - self._clock.now(),
        )

    async def _rejected(self, key: str, exc: LoginRejected, started: float) -> None:
        until = self._clock.now() + self._retry_after
        self._rejections[key] = Rejection(until, exc.message, key)
        self.last_error = exc.message
        elapsed = time.perf_counter() - started
        self._observer.login(self.route, "rejected", elapsed)
        self.attempts.record(self._clock.now(), "rejected", elapsed, exc.code)
        log.warning(
            "login_rejected", route=self.route, reason=exc.message, retry_after=self._retry_after
        )
        with contextlib.suppress(StoreUnavailable):  # this process remembers it anyway
            await self._op("reject", self._verdicts.reject(key, until=until, message=exc.message))

    async def _failed(self, key: str | None, exc: ProxyError, started: float) -> None:
        """A transient failure: every process backs off, each time twice as long."""
        prior = self._backoffs.get(key)
        if key is not None:
            with contextlib.suppress(StoreUnavailable):
                prior = await self._op("backoff_state", self._verdicts.backoff_state(key)) or prior
        step = min(BACKOFF_MAX, prior.step * 2 if prior is not None else BACKOFF_FIRST)
        until = self._clock.now() + step
        self._backoffs[key] = Backoff(until, step, exc.message)
        self.last_error = exc.message
        elapsed = time.perf_counter() - started
        self._observer.login(self.route, exc.code, elapsed)
        self.attempts.record(self._clock.now(), "failed", elapsed, exc.code)
        log.warning(
            "login_failed", route=self.route, code=exc.code, reason=exc.message, backoff=step
        )
        if key is not None:
            with contextlib.suppress(StoreUnavailable):
                await self._op(
                    "backoff",
                    self._verdicts.backoff(key, until=until, step=step, message=exc.message),
                )

    async def clear_lockout(self) -> bool:
        """Let the next request log in again (the operator says so); True if rejected.

        The rejection (and any backoff) is lifted in every process sharing the store.
        """
        now = self._clock.now()
        lifted = any(r.active(now) for r in self._rejections.values())
        key = await self._credentials_key()
        if key is not None:
            with contextlib.suppress(StoreUnavailable):
                lifted = await self._op("clear", self._verdicts.clear_rejection(key)) or lifted
                await self._op("clear", self._verdicts.clear_backoff(key))
        self._rejections.clear()
        self._backoffs.clear()
        if lifted:
            log.info("login_lockout_cleared", route=self.route)
        return lifted

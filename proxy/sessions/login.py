"""Running a route's login flow: the secrets it asks for (masked in logs, scrubbed from
the vendor's refusals), the vendor calls it makes, its outcome recorded as a verdict
when it fails, and after a login the org's idle timeout asked once (``pacing``).
"""

from __future__ import annotations

import asyncio
import time

import structlog

from proxy.core.errors import LoginFailed, LoginRejected, ProxyError
from proxy.core.masking import scrub
from proxy.core.secrets import Secret
from proxy.flows.base import FlowGen, LoginRequest, LoginResponse, Session
from proxy.flows.driver import drive
from proxy.ops.logs import Registration
from proxy.sessions.credentials import Values
from proxy.sessions.lease import Lease
from proxy.sessions.pacing import org_idle_timeout
from proxy.sessions.payload import Stored
from proxy.sessions.verdicts import Verdicts

log = structlog.get_logger("auth_proxy.sessions")


class Login(Verdicts):
    async def _login(self, key: str, values: Values, base: Lease | None, started: float) -> Stored:
        """Run the flow (a renewal of ``base``, else a login). A refusal or failure is
        recorded as the store's verdict for ``key`` before it is raised. After a login the
        vendor is asked for its idle timeout, and the login is counted (this process's
        logins only); a renewal keeps what was learned."""
        # Masked while the attempt runs: the session it renews (its lease may be retired
        # already) and every value it resolves, kept afterwards as the route's latest.
        renewed = self._register(*(base.session.secrets if base is not None else ()))
        resolved = self._register()
        try:
            gen = self.flow.renew(base.session) if base is not None else self.flow.login()
            session = await self._drive(gen, values, resolved, renewed)
        except LoginRejected as exc:
            exc.for_route(self.route)
            await self._rejected(key, exc, started)
            raise
        except ProxyError as exc:
            exc.for_route(self.route)
            await self._failed(key, exc, started)
            raise
        except Exception as exc:  # a flow bug must not wedge the route
            log.exception("login_crashed", route=self.route)
            err = LoginFailed(f"login failed unexpectedly ({type(exc).__name__})", route=self.route)
            await self._failed(key, err, started)
            raise err from None
        except asyncio.CancelledError:
            resolved.release()  # logged out: nothing of this attempt is kept
            raise
        finally:
            renewed.release()
            self._resolved.release()
            self._resolved = resolved
        self._succeeded(key, session, renewing=base is not None, started=started)
        if base is not None:
            return Stored(session, base.stored.vendor_idle)
        made = Stored(session, await self._vendor_idle(session))
        self._logins.record(self._clock.now(), self._idle_of(made)[0])
        return made

    def _succeeded(self, key: str, session: Session, *, renewing: bool, started: float) -> None:
        self._backoffs.pop(key, None)
        self.last_error = None
        elapsed = time.perf_counter() - started
        self._observer.login(self.route, "ok", elapsed)
        self.attempts.record(self._clock.now(), "renewed" if renewing else "ok", elapsed)
        log.info(
            "session_renewed" if renewing else "login_ok",
            route=self.route,
            seconds=round(elapsed, 3),
            upstream=session.upstream,
            org=session.org,
        )

    async def _vendor_idle(self, session: Session) -> float | None:
        """The org's idle timeout for a session just logged in, unless the config sets one
        (it wins) or the session does not slide; None when the vendor cannot say."""
        if self._idle_source == "config" or not session.sliding:
            return None
        found = await org_idle_timeout(self.flow, session, self._execute)
        if found is not None:
            log.info("org_idle_timeout", route=self.route, seconds=found)
        return found

    async def _drive(
        self, gen: FlowGen, values: Values, resolved: Registration, renewed: Registration
    ) -> Session:
        """Run a flow to its session; each secret value it uses is added to ``resolved``."""

        async def secret(source: Secret) -> str:
            value = values.get(source)
            if value is None:
                value = await source.resolve()
            resolved.add(value)
            return value

        async def call(request: LoginRequest) -> LoginResponse:
            log.debug(
                "login_call",
                route=self.route,
                purpose=request.purpose,
                method=request.method,
                url=request.url,
                headers=dict(request.headers),
            )
            return await self._execute(request)

        try:
            return await drive(gen, secret=secret, call=call)
        except ProxyError as exc:
            # A vendor's refusal may quote what it was sent ("password 'x' is wrong"):
            # scrubbed of this attempt's secrets before it is stored, logged or answered,
            # whatever the log redactor happens to hold.
            exc.message = scrub(exc.message, (*resolved.values, *renewed.values))
            exc.args = (exc.message,)
            raise

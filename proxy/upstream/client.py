"""Outbound HTTP: the pooled client, TLS trust, timeouts and the ``resolve`` address map.

One keep-alive ``aiohttp.ClientSession`` per process serves every route. Routes only
differ in per-request settings (TLS context, timeouts); the two connector-level settings
(``trust_env`` and ``resolve``) get their own pooled session only when a route changes
them. A reload reuses both for unchanged settings (pooled connections are keyed by TLS
context) and closes the pools no route uses any more.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.helpers import get_env_proxy_for_url, proxies_from_env
from aiohttp.resolver import DefaultResolver
from multidict import CIMultiDict
from yarl import URL

from proxy import __version__
from proxy.config import ResolveRule, UpstreamSettings
from proxy.core.errors import LoginFailed
from proxy.flows.base import MAX_LOGIN_BODY, LoginRequest, LoginResponse
from proxy.upstream.failures import failure
from proxy.upstream.trust import verifying_context
from proxy.upstream.watchdog import Watchdog

log = structlog.get_logger("auth_proxy.outbound")

POOL_LIMIT = 512


USER_AGENT = f"auth-proxy/{__version__}"
_NO_AUTO_HEADERS: CIMultiDict[None] = CIMultiDict(
    (name, None) for name in ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")
)


class TransparentRequest(aiohttp.ClientRequest):
    """A client request that adds no header of its own (Accept, User-Agent, ...).

    A transparent proxy sends what the client sent plus what the route injects. The
    session-level ``skip_auto_headers`` would do the same but rebuilds its sets on
    every request, which showed in the profile of the request path.
    """

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        self._skip_auto_headers = _NO_AUTO_HEADERS


class MappedResolver(AbstractResolver):
    """Like ``curl --resolve``: listed ``host:port`` pairs connect to the mapped address.

    TLS still verifies the original host name: aiohttp takes the SNI/verification name
    from the URL, not from the resolved address.
    """

    def __init__(self, rules: Iterable[ResolveRule]) -> None:
        self._map: dict[tuple[str, int], tuple[str, int]] = {r.name: r.address for r in rules}
        self._fallback = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        target = self._map.get((host.lower(), port))
        if target is None:
            return await self._fallback.resolve(host, port, family)
        addr, addr_port = target
        return [
            ResolveResult(
                hostname=host,
                host=addr,
                port=addr_port,
                family=socket.AF_INET6 if ":" in addr else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        await self._fallback.close()


EnvProxy = tuple[URL | None, aiohttp.BasicAuth | None]
NO_PROXY: EnvProxy = (None, None)


class EnvProxies:
    """``HTTPS_PROXY``/``NO_PROXY`` decisions, per scheme and host, read once per process.

    aiohttp's own ``trust_env`` would also send ``~/.netrc`` credentials to the vendor,
    so sessions never use it; routes with ``trust_env`` ask here instead.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], EnvProxy] = {}
        # Most machines set no proxy at all: then routes skip the lookup entirely.
        self.active = bool(proxies_from_env())

    def for_url(self, url: URL) -> EnvProxy:
        key = (url.scheme, url.host or "")
        found = self._cache.get(key)
        if found is None:
            try:
                found = get_env_proxy_for_url(url)
            except LookupError:
                found = NO_PROXY
            self._cache[key] = found
        return found


@dataclass(frozen=True, slots=True)
class RouteClient:
    """What one route needs to talk upstream: a pooled session and per-request settings."""

    session: aiohttp.ClientSession
    ssl: ssl.SSLContext | bool
    timeout: aiohttp.ClientTimeout  # proxied calls: connect only; reads use the watchdog
    login_timeout: aiohttp.ClientTimeout  # login calls: connect and every read
    settings: UpstreamSettings
    watchdog: Watchdog
    env_proxies: EnvProxies | None  # None: trust_env is off for this route

    def proxy_for(self, url: URL) -> EnvProxy:
        return NO_PROXY if self.env_proxies is None else self.env_proxies.for_url(url)

    async def execute(self, request: LoginRequest) -> LoginResponse:
        """Perform a flow's login-side call; any failure becomes ``LoginFailed``."""
        host = urlsplit(request.url).hostname or "?"
        url = URL(request.url, encoded=True)
        proxy, proxy_auth = self.proxy_for(url)
        try:
            async with self.session.request(
                request.method,
                url,
                headers={"User-Agent": USER_AGENT, **request.headers},
                data=request.body,
                ssl=self.ssl,
                timeout=self.login_timeout,
                allow_redirects=False,
                auto_decompress=True,
                proxy=proxy,
                proxy_auth=proxy_auth,
            ) as resp:
                body = await resp.content.read(MAX_LOGIN_BODY + 1)
                if len(body) > MAX_LOGIN_BODY:
                    raise LoginFailed(f"the {request.purpose} answer from {host} is too large")
                return LoginResponse(resp.status, resp.headers, body, str(resp.url))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise LoginFailed(f"the {request.purpose} call to {host} {failure(exc)}") from None


class Outbound:
    """Owns the pooled client sessions; ``client_for`` hands each route its ``RouteClient``."""

    def __init__(self) -> None:
        self._sessions: dict[tuple[ResolveRule, ...], aiohttp.ClientSession] = {}
        self._contexts: dict[tuple[str | None, bytes], ssl.SSLContext] = {}
        self._env_proxies = EnvProxies()
        self.watchdog = Watchdog()
        self._warned_insecure: set[str] = set()

    def client_for(self, route: str, settings: UpstreamSettings) -> RouteClient:
        session = self._sessions.get(settings.resolve)
        if session is None:
            session = self._sessions[settings.resolve] = self._new_session(settings)
        if not settings.verify_tls and route not in self._warned_insecure:
            self._warned_insecure.add(route)
            log.warning("tls_verification_disabled", route=route)
        return RouteClient(
            session=session,
            ssl=self._ssl_context(settings),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout),
            login_timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=settings.connect_timeout,
                sock_read=settings.read_timeout,
            ),
            settings=settings,
            watchdog=self.watchdog,
            env_proxies=self._env_proxies
            if settings.trust_env and self._env_proxies.active
            else None,
        )

    def _ssl_context(self, settings: UpstreamSettings) -> ssl.SSLContext | bool:
        """System trust plus ``ca_bundle`` (added, not substituted); False when disabled.

        The same context for the same trust, across reloads: aiohttp pools connections
        per context, so a new one would strand the pool (and a copy of the CA store).
        """
        if not settings.verify_tls:
            return False
        bundle = settings.ca_bundle
        # By content too: a rotated bundle at the same path gets a new context.
        key = (bundle, hashlib.sha256(Path(bundle).read_bytes()).digest() if bundle else b"")
        context = self._contexts.get(key)
        if context is None:
            context = verifying_context(bundle)
            self._contexts[key] = context
        return context

    async def release_unused(self, live: Iterable[RouteClient]) -> None:
        """Close the pools and drop the TLS contexts that no client in ``live`` uses."""
        clients = list(live)
        sessions = {c.session for c in clients}
        contexts = {c.ssl for c in clients}
        unused = [s for s in self._sessions.values() if s not in sessions]
        self._sessions = {k: s for k, s in self._sessions.items() if s in sessions}
        self._contexts = {k: c for k, c in self._contexts.items() if c in contexts}
        await asyncio.gather(*(s.close() for s in unused), return_exceptions=True)

    @staticmethod
    def _new_session(settings: UpstreamSettings) -> aiohttp.ClientSession:
        kwargs: dict[str, Any] = {}
        if settings.resolve:
            kwargs["resolver"] = MappedResolver(settings.resolve)
        connector = aiohttp.TCPConnector(limit=POOL_LIMIT, ttl_dns_cache=60, **kwargs)
        return aiohttp.ClientSession(
            connector=connector,
            trust_env=False,  # see EnvProxies
            # A transparent proxy: bytes pass as they are, no cookies are kept between
            # clients, and nothing the client did not send is added.
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            request_class=TransparentRequest,
        )

    async def close(self) -> None:
        await self.watchdog.close()
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)

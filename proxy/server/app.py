"""The proxy server: listeners, reload and shutdown around the request pipeline.

``ProxyServer`` owns the ``ServerState`` (the runtime built from the config, the guard,
the metrics), binds the listeners and hands each one the pipeline (``server.pipeline``).
A reload builds a new runtime and swaps it in; shutdown drains, then logs out the
sessions no other process can use. The session stores (``session_store``) are opened at
start, kept across reloads and closed at stop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import structlog

from proxy.config import Config, ConfigError
from proxy.config import SessionStore as StoreSettings
from proxy.core.clock import Clock
from proxy.core.errors import ProxyError
from proxy.core.hosts import is_loopback
from proxy.ops.audit import AuditLog
from proxy.ops.logs import ACCESS_LOG, REDACTOR
from proxy.ops.metrics import Metrics
from proxy.ops.metrics_files import PUBLISH_INTERVAL
from proxy.server.admin import Admin
from proxy.server.connect import ForwardProxyServer
from proxy.server.guard import Guard
from proxy.server.httpserver import HEADER_TIMEOUT, ProxyHttpServer
from proxy.server.listen_tls import ListenerKey, Loaded, RotatingContext, load_listeners, rotating
from proxy.server.listeners import Listener, Sockets, bind_socket
from proxy.server.pipeline import Door, Pipeline
from proxy.server.reloads import error_message, read_config, restart_needed, warn_expiring
from proxy.server.runtime import Runtime
from proxy.server.sites import Site, http_settings, open_site
from proxy.server.startup import plain_beyond_loopback
from proxy.server.state import ReloadResult, ServerState
from proxy.server.tls import LocalCA
from proxy.sessions.lease import SessionStatus
from proxy.sessions.manager import RouteSessions
from proxy.sessions.stores import SessionStores, memory_stores, open_stores
from proxy.upstream.client import Outbound

log = structlog.get_logger("auth_proxy")

LOGOUT_BUDGET = 5.0


class ProxyServer:
    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        config_path: Path | str | None = None,
        store_settings: StoreSettings | None = None,
        run_dir: Path | None = None,
        startup: Config | None = None,
        metrics_dir: Path | None = None,
    ) -> None:
        self.clock = clock or Clock()
        # Per process until start() opens the configured store (``check --login`` never
        # does: it logs in for real and logs out). ``store_settings`` replaces the
        # config's (a supervisor that found the default location unusable); ``run_dir``
        # is where workers share login verdicts when sessions are kept in memory;
        # ``metrics_dir`` where they share metrics (``metrics_files``).
        self.stores: SessionStores = memory_stores(self.clock.now)
        self._store_settings = store_settings
        self._run_dir = run_dir
        # What the listeners, the forward-proxy CA and the store's default location are
        # taken from (settings a reload cannot change): a worker that its supervisor
        # restarts after a reload listens as its siblings do, on what they started with.
        self._startup = startup
        self._stores_open = False
        self.config_path = Path(config_path) if config_path is not None else None
        self.outbound = Outbound()
        self.metrics = Metrics(self._session_statuses, self._inflight, shared=metrics_dir)
        self.state = ServerState(
            self._build(config, None), self.metrics, Guard(self.clock), self.clock
        )
        self.state.reload = self.reload_from_file
        self.metrics.reloaded(True, self.clock.now())
        self.admin = Admin(self.state)
        self.pipeline = Pipeline(self.state, self.admin)
        self._background: set[asyncio.Task[Any]] = set()
        self._publisher: asyncio.Task[None] | None = None  # metrics, with workers
        self._retiring: set[Runtime] = set()  # replaced by a reload, maybe still in use
        self.header_timeout = HEADER_TIMEOUT  # read by start()
        self.listeners: list[Listener] = []
        self._sites: list[Site] = []
        self._tls: dict[ListenerKey, RotatingContext] = {}  # what a reload rotates

    @property
    def runtime(self) -> Runtime:
        return self.state.runtime

    @property
    def config(self) -> Config:
        return self.state.runtime.config

    @property
    def guard(self) -> Guard:
        return self.state.guard

    @property
    def draining(self) -> bool:
        return self.state.draining

    @property
    def port(self) -> int:
        return self.listeners[0].port

    def _build(self, config: Config, previous: Runtime | None) -> Runtime:
        runtime = Runtime(
            config,
            self.outbound,
            clock=self.clock,
            on_secret=REDACTOR.add,
            metrics=self.metrics,
            stores=self.stores,
            previous=previous,
        )
        self.metrics.add_routes(runtime.routes)
        return runtime

    def _session_statuses(self) -> Iterator[tuple[str, SessionStatus]]:
        for name, rt in self.runtime.routes.items():
            yield name, rt.sessions.status()

    def _inflight(self) -> int:
        return self.state.inflight

    async def _publish_metrics(self) -> None:
        """With workers: this worker's state, for the scrapes other workers answer."""
        while True:
            self.metrics.refresh()
            await asyncio.sleep(PUBLISH_INTERVAL)

    # ------------------------------------------------------------------ listeners

    async def open_stores(self) -> None:
        """Open the configured session store, once: it is kept across reloads. An
        explicit location that cannot be used is a ``ConfigError``."""
        if self._stores_open:
            return
        settings = self._store_settings or self.config.session_store
        state_dir = (self._startup or self.config).state_dir
        stores = await open_stores(
            settings, self.clock.now, state_dir=state_dir, run_dir=self._run_dir
        )
        placeholder, self.stores = self.stores, stores
        self._stores_open = True
        self.state.runtime = self._build(self.config, None)  # its sessions use the store
        await placeholder.close()

    async def start(self, sockets: Sockets | None = None) -> None:
        """Bind every listener. ``sockets`` may supply pre-bound ones (workers, tests)."""
        await self.open_stores()
        sockets = dict(sockets or {})
        await self.guard.load(self.config)
        self._use_audit(self.config.log.audit)
        first = self._startup or self.config
        fp = first.forward_proxy
        ca = LocalCA.load_or_create(fp.ca.cert, fp.ca.key) if fp.enabled else None
        tls = load_listeners(first)
        if first is not self.config:  # a restarted worker: the files as of the last reload
            current = load_listeners(self.config).contexts
            tls.contexts.update({key: current.get(key, c) for key, c in tls.contexts.items()})
        reuse = first.workers > 1
        for host, port, route in first.listeners():
            sock = sockets.pop((host, port), None) or bind_socket(host, port, reuse_port=reuse)
            bound = sock.getsockname()[1]
            context = tls.contexts.get((host, port, route))
            door = Door(
                bound if route is None else port,
                is_loopback(host),
                route is None and ca is not None,
                context is not None,
            )
            if context is not None:
                self._tls[host, port, route] = rotating(context)
            await self._serve(sock, door, ca, self._tls.get((host, port, route)))
            self.listeners.append(Listener(host, bound))
        if self.metrics.shared:
            self._publisher = asyncio.get_running_loop().create_task(self._publish_metrics())
        log.info(
            "listening",
            pid=os.getpid(),
            listeners=[f"{lst.host}:{lst.port}" for lst in self.listeners],
            tls=[f"{host}:{port}" for host, port, _route in self._tls],
            routes=list(self.runtime.routes),
        )
        for line in plain_beyond_loopback(first):
            log.warning("listener_without_tls", warning=line)
        warn_expiring(tls)

    async def _serve(
        self, sock: Any, door: Door, ca: LocalCA | None, tls: RotatingContext | None
    ) -> None:
        settings = http_settings(self.header_timeout, self.config.log.level == "debug")
        handler = self.pipeline.handler(door)
        server = (
            ForwardProxyServer(handler, app=self.state, ca=ca, **settings)
            if door.forward_proxy and ca is not None
            else ProxyHttpServer(handler, **settings)
        )
        self._sites.append(await open_site(server, sock, tls, self.header_timeout))

    # ------------------------------------------------------------------ lifecycle

    def reload(self, config: Config, tls: Loaded | None = None) -> ReloadResult:
        """Swap in ``config``; routes whose login settings are unchanged keep their sessions.

        The session of a route whose auth changed, or that is gone, is logged out at the
        vendor unless another route (or, with a shared store, another process) still
        uses it. A login rejection holds until the route's credentials change: its secret
        sources are read again at its next request (a rotated password file is a change,
        and the session made with the old one is not used again). Listeners are not
        rebound; a change to them is reported as needing a restart. ``tls``, the TLS
        listeners' files read again, serves their new connections from now on.
        """
        if tls is not None:
            for key, context in self._tls.items():
                context.current = tls.contexts.get(key, context.current)
            warn_expiring(tls)
        previous = self.runtime
        self.state.runtime = self._build(config, previous)
        self._use_audit(config.log.audit)
        result = ReloadResult(ok=True, restart_needed=restart_needed(previous.config, config))
        for name, rt in self.runtime.routes.items():
            old = previous.routes.get(name)
            if old is None:
                result.added.append(name)
            elif old.sessions is rt.sessions:
                result.kept.append(name)
                rt.sessions.reread_credentials()
            else:
                result.relogin.append(name)
        kept = {rt.sessions for rt in self.runtime.routes.values()}
        logouts = []
        for name, rt in previous.routes.items():
            if name not in self.runtime.routes:
                result.removed.append(name)
            if rt.sessions not in kept:
                logouts.append(self._spawn(self._release(rt.sessions, self.runtime)))
        self._retiring.add(previous)
        self._spawn(self._retire(previous, logouts))
        self.metrics.reloaded(True, self.clock.now())
        log.info(
            "config_reloaded",
            kept=result.kept,
            relogin=result.relogin,
            added=result.added,
            removed=result.removed,
        )
        if result.restart_needed:
            log.warning("reload_needs_restart", settings=result.restart_needed)
        return result

    async def reload_from_file(self) -> ReloadResult:
        """Re-read the config file (by path, so renames and symlink swaps are seen)."""
        try:
            if self.config_path is None:
                raise ConfigError("the proxy was not started from a config file")
            config = await asyncio.to_thread(read_config, self.config_path)
        except (ConfigError, ProxyError) as exc:
            return self.reload_refused(error_message(exc))
        return await self.apply_config(config)

    async def apply_config(self, config: Config) -> ReloadResult:
        """Reload with ``config``, already read and validated (a worker gets it from its
        supervisor, README "Workers"); its client tokens are resolved here."""
        try:
            tls = await asyncio.to_thread(load_listeners, config)  # certificates rotate
            await self.guard.load(config)  # client tokens may have changed too
        except (ConfigError, ProxyError) as exc:
            return self.reload_refused(error_message(exc))
        return self.reload(config, tls)

    def reload_refused(self, error: str, *, logged: bool = False) -> ReloadResult:
        """The reload failed: the config stays as it was. ``logged``: said elsewhere
        already (a worker's supervisor logs a refused file once for all workers)."""
        self.metrics.reloaded(False, self.clock.now())
        if not logged:
            log.error("reload_failed", path=str(self.config_path), error=error)
        return ReloadResult(ok=False, error=error)

    def schedule_reload(self) -> None:
        """Reload from a signal handler (SIGHUP)."""
        self._spawn(self.reload_from_file())

    def reopen_logs(self) -> None:
        """Start a new audit log file after a rotation (SIGUSR1; a reload does it too)."""
        if self.state.audit is not None:
            self.state.audit.reopen()

    def _use_audit(self, path: str | None) -> None:
        """Open the audit log at ``path`` (``log.audit``), or reopen it there, or close it."""
        current = self.state.audit
        if current is not None and current.path == path:
            current.reopen()
            return
        if current is not None:
            self._spawn(current.close())
        if path is None:
            self.state.audit = None
        else:
            self.state.audit = AuditLog(path, self.metrics.audit_write_errors.inc)

    async def _retire(self, old: Runtime, logouts: list[asyncio.Task[Any]]) -> None:
        """Once nothing runs on ``old`` any more, close the upstream pools only it used."""
        await asyncio.gather(*logouts, return_exceptions=True)  # they use old's clients
        await old.drained()
        self._retiring.discard(old)
        live = [rt.client for r in (self.runtime, *self._retiring) for rt in r.routes.values()]
        await self.outbound.release_unused(live)

    @staticmethod
    async def _release(sessions: RouteSessions, runtime: Runtime) -> None:
        """``sessions`` left the config: its session is logged out unless a route of
        ``runtime`` has the same credentials (it goes on using it)."""
        held = sessions.held_key
        in_use = False
        if held is not None:
            keys = await asyncio.gather(*(rt.sessions.key() for rt in runtime.routes.values()))
            in_use = held in keys
        await sessions.release(in_use)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._background.discard)
        return task

    async def stop(self, *, drain_timeout: float | None = None) -> None:
        """Answer new requests 503, drain in-flight ones, close, log out the sessions
        that are this process's alone (README, "Sessions and the session store").

        The listeners stay open while draining so that clients (and ``/-/readyz``) get
        a clear 503 rather than a refused connection; nothing is forwarded any more.
        """
        state = self.state
        state.draining = True
        timeout = self.config.shutdown_timeout if drain_timeout is None else drain_timeout
        log.info("draining", inflight=state.inflight, timeout=timeout)
        if not await state.drained(timeout):
            log.warning("drain_timeout", inflight=state.inflight)
        for site in self._sites:
            await site.close()
        self._sites.clear()
        if self._publisher is not None:
            self._publisher.cancel()
        await self.logout_all()
        await self.stores.close()
        await self.outbound.close()
        ACCESS_LOG.flush()
        if self.state.audit is not None:
            await self.state.audit.close()
        log.info("stopped")

    async def logout_all(self) -> None:
        """End every route's sessions for this process (stored ones stay for the next),
        bounded to LOGOUT_BUDGET seconds in all."""
        tasks: list[Awaitable[Any]] = [
            rt.sessions.shutdown() for rt in self.runtime.routes.values()
        ]
        tasks.extend(self._background)  # logouts of routes a reload removed or changed
        if not tasks:
            return
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), LOGOUT_BUDGET)
        except TimeoutError:
            log.warning("logout_timeout", seconds=LOGOUT_BUDGET)

"""Prometheus metrics, one registry per ``ProxyServer`` (the README: "Metrics").

The request path makes one call per request (``Metrics.request``): the labelled children
for a route are created once, when a config is built, so a request costs a dictionary
lookup and a few increments. What describes the proxy's state (sessions, requests in
flight, queues) is not tracked as it changes: it is read when ``/-/metrics`` is scraped
(and, with workers, published every second, ``refresh``), so a scrape shows what
``/-/sessions`` would show at the same moment.

With ``workers: N`` the values live in files every worker writes and every scrape reads
(``ops.metrics_files``), so any worker answers a scrape for them all.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from proxy import __version__
from proxy.core.errors import STATUS_BY_CODE, ProxyError
from proxy.ops.metrics_files import ProcessPublisher, files_collector

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
UNROUTED = ""  # the route label of requests that matched no route

# Proxied calls include slow exports and long polls; logins are seconds at most.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
QUEUE_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60)
LOGIN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
# Session store operations: a local SQLite write or a Redis round trip is milliseconds; a
# "flight" (waiting for a login, this process's or another's) takes as long as the login.
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")
CLIENT_ABORTED = 499  # nginx's convention: its own label, so neither 4xx nor 5xx alerts see it
# Made at zero for every route, so that increase() sees the first one (alerts).
LOGIN_RESULTS = ("ok", "rejected", "login_failed", "untrusted_upstream")
THROTTLE_ACTIONS = ("retried", "passed_on")
SESSION_SOURCES = ("login", "another_process", "restart")
# Every code the proxy answers with, and its status: ProxyError's own is "internal", 500.
PROXY_CODES = {ProxyError.code: 500, **STATUS_BY_CODE}
EXPIRY = "auth_proxy_session_expiry_timestamp_seconds"
NO_EXPIRY = 0.0  # written for a route without an expiring session; left out of a scrape

# Counters and histograms export no `_created` series: they are one more series each,
# and Prometheus does not use them (the process-wide switch of prometheus_client).
disable_created_metrics()


def status_label(status: int) -> str:
    return str(status) if status == CLIENT_ABORTED else f"{status // 100}xx"


class SessionView(Protocol):
    """What the gauges read of a route's session status (see ``/-/sessions``)."""

    state: str
    expires_at: float | None
    logins_last_hour: int


SessionSource = Callable[[], Iterable[tuple[str, SessionView]]]


class _RouteChildren:
    """The pre-made labelled series one route's requests update."""

    __slots__ = ("aborted", "by_class", "by_code", "latency", "replays")

    def __init__(self, metrics: Metrics, route: str) -> None:
        requests = metrics.requests
        self.by_class = {int(cls[0]): requests.labels(route, cls, "") for cls in STATUS_CLASSES}
        self.by_code = {
            code: requests.labels(route, status_label(status), code)
            for code, status in PROXY_CODES.items()
        }
        self.aborted = self.by_code["client_aborted"]
        self.latency = metrics.request_seconds.labels(route)
        self.replays = metrics.replays.labels(route)


class _ExpiryKnown:
    """``source``'s metrics without the expiry of routes that have none (``NO_EXPIRY``):
    a gauge shared through files cannot leave a series out, so it writes a zero."""

    def __init__(self, source: Collector) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        for family in self._source.collect():
            if family.name == EXPIRY:
                family.samples = [s for s in family.samples if s.value != NO_EXPIRY]
            yield family


class Metrics:
    """The proxy's metrics. ``sessions`` and ``inflight`` are read at each scrape;
    ``shared``: the directory where the workers of one ``serve`` keep their values (this
    process called ``metrics_files.share_between_processes`` first), None: in memory."""

    def __init__(
        self, sessions: SessionSource, inflight: Callable[[], int], *, shared: Path | None = None
    ) -> None:
        self._sessions = sessions
        self._inflight = inflight
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "auth_proxy_requests",
            "Requests answered, by route, status class (499: the client went away) and the "
            "proxy's error code when the proxy made the answer (empty: the upstream's).",
            ["route", "status", "code"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "auth_proxy_request_duration_seconds",
            "Time from receiving a request to the end of its response, by route.",
            ["route"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.replays = Counter(
            "auth_proxy_reauth_replays",
            "Requests replayed after the upstream refused the session and a re-login.",
            ["route"],
            registry=r,
        )
        self.logins = Counter(
            "auth_proxy_logins",
            "Login and renewal attempts, by route and result "
            "(ok, rejected, login_failed, untrusted_upstream, ...).",
            ["route", "result"],
            registry=r,
        )
        self.login_seconds = Histogram(
            "auth_proxy_login_duration_seconds",
            "Time a login or renewal took, by route.",
            ["route"],
            buckets=LOGIN_BUCKETS,
            registry=r,
        )
        self._process_metrics(r)
        self._store_metrics(r)
        self._forwarding_metrics(r)
        self._client_metrics(r)
        self._session_metrics(r)
        self._routes: dict[str, _RouteChildren] = {}
        self._unrouted = _RouteChildren(self, UNROUTED)
        self._queues: dict[str, Callable[[], int]] = {}
        self._session_routes: set[str] = set()
        self.shared = shared is not None
        self._publisher = ProcessPublisher(r) if shared is not None else None
        self._scrape = CollectorRegistry(auto_describe=False)
        self._scrape.register(_ExpiryKnown(r if shared is None else files_collector(shared)))
        if shared is None:
            ProcessCollector(registry=self._scrape)

    def _process_metrics(self, r: CollectorRegistry) -> None:
        """What runs, and its configuration."""
        Gauge(
            "auth_proxy_build_info",
            "Always 1; the labels say which auth-proxy and Python run.",
            ["version", "python"],
            registry=r,
            multiprocess_mode="livemax",
        ).labels(__version__, platform.python_version()).set(1)
        self.in_flight = Gauge(
            "auth_proxy_requests_in_flight",
            "Requests being answered (admin calls included, the scrape itself not).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.reload_timestamp = Gauge(
            "auth_proxy_config_last_reload_timestamp_seconds",
            "When the config was last loaded or a reload was attempted (Unix time).",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.reload_success = Gauge(
            "auth_proxy_config_last_reload_success",
            "1 if the last config load or reload succeeded, 0 if it failed.",
            registry=r,
            multiprocess_mode="livemostrecent",
        )

    def _session_metrics(self, r: CollectorRegistry) -> None:
        """Each route's session, as ``/-/sessions`` shows it (set by ``refresh``). With
        workers: the freshest session any of them holds, and their logins together."""
        self.sessions_active = Gauge(
            "auth_proxy_sessions_active",
            "1 when the route holds a valid vendor session, else 0.",
            ["route"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.session_expiry = Gauge(
            EXPIRY,
            "When the route's session expires (Unix time: idle timeout or token exp); "
            "absent when the route has no session or it never expires.",
            ["route"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.logins_last_hour = Gauge(
            "auth_proxy_logins_last_hour",
            "Logins (not renewals) the route made in the last hour, in this serve's "
            "processes (a session taken from the store is another process's login): each "
            "may take a vendor licence; more than its idle timeout explains is logged as a "
            "warning.",
            ["route"],
            registry=r,
            multiprocess_mode="livesum",
        )

    def _store_metrics(self, r: CollectorRegistry) -> None:
        """Where sessions came from, and what the session store did."""
        self.session_sources = Counter(
            "auth_proxy_session_sources",
            "Sessions a route took into use, by where they came from: login (this "
            "process logged in), another_process (a worker or replica, via the session "
            "store), restart (a process of this host that no longer runs).",
            ["route", "source"],
            registry=r,
        )
        self.store_operations = Counter(
            "auth_proxy_store_operations",
            "Session store operations, by operation and result (ok, unavailable).",
            ["op", "result"],
            registry=r,
        )
        self.store_seconds = Histogram(
            "auth_proxy_store_operation_seconds",
            "Time a session store operation took, by operation.",
            ["op"],
            buckets=STORE_BUCKETS,
            registry=r,
        )
        self.store_fallbacks = Counter(
            "auth_proxy_store_fallbacks",
            "Logins a route ran for this process alone because the session store could "
            "not be reached.",
            ["route"],
            registry=r,
        )

    def _forwarding_metrics(self, r: CollectorRegistry) -> None:
        """What vendor-aware forwarding did: throttling, pre-flight renewals, the queue."""
        self.throttled_responses = Counter(
            "auth_proxy_throttled_responses",
            "Vendor answers that said 'too many requests' (429, or 503 with Retry-After), "
            "by route and what the proxy did: retried, or passed the answer on.",
            ["route", "action"],
            registry=r,
        )
        self.preflight_renewals = Counter(
            "auth_proxy_preflight_renewals",
            "Sessions renewed before sending a body too large to replay after a 401.",
            ["route"],
            registry=r,
        )
        self.queue_length = Gauge(
            "auth_proxy_route_queue_length",
            "Requests waiting for one of the route's max_concurrent slots.",
            ["route"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_wait_seconds = Histogram(
            "auth_proxy_route_queue_wait_seconds",
            "Time a request waited for a max_concurrent slot (0 when it did not queue).",
            ["route"],
            buckets=QUEUE_BUCKETS,
            registry=r,
        )

    def _client_metrics(self, r: CollectorRegistry) -> None:
        """What ``client_auth`` scopes and the audit log did."""
        self.client_rate_limited = Counter(
            "auth_proxy_client_rate_limited",
            "Requests refused with 429 because the client went over its own rate.",
            ["client"],
            registry=r,
        )
        self.audit_write_errors = Counter(
            "auth_proxy_audit_write_errors",
            "Audit log lines that could not be written (a full disk, a removed directory).",
            registry=r,
        )

    def add_routes(self, names: Iterable[str]) -> None:
        """Create the series of ``names`` up front (at config build, not per request)."""
        for name in names:
            if name not in self._routes:
                self._routes[name] = _RouteChildren(self, name)
                for result in LOGIN_RESULTS:
                    self.logins.labels(name, result)
                self.login_seconds.labels(name)
                self.store_fallbacks.labels(name)
                self.preflight_renewals.labels(name)
                for action in THROTTLE_ACTIONS:
                    self.throttled_responses.labels(name, action)
                for source in SESSION_SOURCES:
                    self.session_sources.labels(name, source)

    def throttled(self, route: str, retried: bool) -> None:
        self.throttled_responses.labels(route, THROTTLE_ACTIONS[not retried]).inc()

    def preflight_renewal(self, route: str) -> None:
        self.preflight_renewals.labels(route).inc()

    def watch_queue(self, route: str, queued: Callable[[], int]) -> Callable[[float], None]:
        """Export ``queued()`` as the route's queue length; the observer of its waits."""
        self._queues[route] = queued
        self.queue_length.labels(route)
        return self.queue_wait_seconds.labels(route).observe

    def request(
        self,
        route: str | None,
        status: int,
        seconds: float,
        replayed: bool,
        code: str | None = None,
    ) -> None:
        """One request answered; ``code``: the proxy's error code when it made the answer."""
        children = self._routes.get(route or UNROUTED, self._unrouted)
        counter: Counter | None
        if status == CLIENT_ABORTED:
            counter = children.aborted
        elif code is None:
            counter = children.by_class.get(status // 100)
        else:
            counter = children.by_code.get(code)
        if counter is None:  # 1xx, or a code made up on the spot: rare, made on first use
            counter = self.requests.labels(route or UNROUTED, status_label(status), code or "")
        counter.inc()
        children.latency.observe(seconds)
        if replayed:
            children.replays.inc()

    def login(self, route: str, result: str, seconds: float) -> None:
        self.logins.labels(route, result).inc()
        self.login_seconds.labels(route).observe(seconds)

    def store_op(self, op: str, seconds: float, ok: bool) -> None:
        self.store_operations.labels(op, "ok" if ok else "unavailable").inc()
        self.store_seconds.labels(op).observe(seconds)

    def store_fallback(self, route: str) -> None:
        self.store_fallbacks.labels(route).inc()

    def session_source(self, route: str, source: str) -> None:
        self.session_sources.labels(route, source).inc()

    def reloaded(self, ok: bool, when: float) -> None:
        self.reload_timestamp.set(when)
        self.reload_success.set(1 if ok else 0)

    def refresh(self, *, scraping: bool = False) -> None:
        """Set the gauges that describe the proxy's state now: requests in flight (less
        the scrape asking), queues, and each route's session. Routes a reload removed
        read 0 (with workers, a series cannot be taken back)."""
        self.in_flight.set(max(0, self._inflight() - (1 if scraping else 0)))
        for route, queued in self._queues.items():
            self.queue_length.labels(route).set(queued())
        seen = set()
        for route, status in self._sessions():
            seen.add(route)
            live = status.state == "active"
            expiry = status.expires_at if live and status.expires_at is not None else NO_EXPIRY
            self._set_session(route, 1.0 if live else 0.0, expiry, status.logins_last_hour)
        for route in self._session_routes - seen:
            self._set_session(route, 0.0, NO_EXPIRY, 0)
        self._session_routes |= seen
        if self._publisher is not None:
            self._publisher.publish()

    def _set_session(self, route: str, active: float, expiry: float, logins: int) -> None:
        self.sessions_active.labels(route).set(active)
        self.session_expiry.labels(route).set(expiry)
        self.logins_last_hour.labels(route).set(logins)

    def render(self) -> bytes:
        """The exposition of a scrape (this process's, or every worker's with ``shared``)."""
        self.refresh(scraping=True)
        return generate_latest(self._scrape)

"""Prometheus metrics, one registry per ``ProxyServer`` (the README: "Metrics").

The request path makes one call per request (``Metrics.request``): the labelled children
for a route are created once, when a config is built, so a request costs a dictionary
lookup and a few increments. Session state is not tracked as it changes: a collector
reads ``RouteSessions.status()`` at scrape time, so what ``/-/metrics`` shows is what
``/-/sessions`` would show at the same moment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

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


class SessionView(Protocol):
    """What the collector reads of a route's session status (see ``/-/sessions``)."""

    state: str
    expires_at: float | None
    logins_last_hour: int


SessionSource = Callable[[], Iterable[tuple[str, SessionView]]]


class _RouteChildren:
    """The pre-made labelled series one route's requests update."""

    __slots__ = ("aborted", "by_class", "latency", "replays")

    def __init__(self, metrics: Metrics, route: str) -> None:
        self.by_class = {int(cls[0]): metrics.requests.labels(route, cls) for cls in STATUS_CLASSES}
        self.aborted = metrics.requests.labels(route, str(CLIENT_ABORTED))
        self.latency = metrics.request_seconds.labels(route)
        self.replays = metrics.replays.labels(route)


class SessionCollector:
    """Per-route session gauges, computed from the session manager at scrape time."""

    def __init__(self, sessions: SessionSource, now: Callable[[], float]) -> None:
        self._sessions = sessions
        self._now = now

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        active, expiry, logins = self._families()
        now = self._now()
        for route, status in self._sessions():
            live = status.state == "active"
            active.add_metric([route], 1.0 if live else 0.0)
            if live and status.expires_at is not None:
                expiry.add_metric([route], max(0.0, status.expires_at - now))
            logins.add_metric([route], float(status.logins_last_hour))
        yield active
        yield expiry
        yield logins

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "auth_proxy_sessions_active",
                "1 when the route holds a valid vendor session, else 0.",
                labels=["route"],
            ),
            GaugeMetricFamily(
                "auth_proxy_session_expiry_seconds",
                "Seconds until the route's session expires (idle timeout or token exp); "
                "absent when the route has no session or it never expires.",
                labels=["route"],
            ),
            GaugeMetricFamily(
                "auth_proxy_logins_last_hour",
                "Logins (not renewals) the route made in this process in the last hour (a "
                "session taken from the store is another process's login): each may take a "
                "vendor licence; more than its idle timeout explains is logged as a warning.",
                labels=["route"],
            ),
        )


class Metrics:
    def __init__(self, sessions: SessionSource, now: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "auth_proxy_requests",
            "Requests answered, by route and status class; 499: the client went away.",
            ["route", "status"],
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
        self.reload_timestamp = Gauge(
            "auth_proxy_config_last_reload_timestamp_seconds",
            "When the config was last loaded or a reload was attempted (Unix time).",
            registry=r,
        )
        self.reload_success = Gauge(
            "auth_proxy_config_last_reload_success",
            "1 if the last config load or reload succeeded, 0 if it failed.",
            registry=r,
        )
        self._store_metrics(r)
        self._forwarding_metrics(r)
        self._client_metrics(r)
        r.register(SessionCollector(sessions, now))
        self._routes: dict[str, _RouteChildren] = {}
        self._unrouted = _RouteChildren(self, UNROUTED)

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
                self.logins.labels(name, "ok")
                self.login_seconds.labels(name)
                self.store_fallbacks.labels(name)

    def throttled(self, route: str, retried: bool) -> None:
        self.throttled_responses.labels(route, "retried" if retried else "passed_on").inc()

    def preflight_renewal(self, route: str) -> None:
        self.preflight_renewals.labels(route).inc()

    def watch_queue(self, route: str, queued: Callable[[], int]) -> Callable[[float], None]:
        """Export ``queued()`` as the route's queue length; the observer of its waits."""
        self.queue_length.labels(route).set_function(lambda: float(queued()))
        return self.queue_wait_seconds.labels(route).observe

    def request(self, route: str | None, status: int, seconds: float, replayed: bool) -> None:
        children = self._routes.get(route or UNROUTED, self._unrouted)
        counter = (
            children.aborted if status == CLIENT_ABORTED else children.by_class.get(status // 100)
        )
        if counter is None:  # 1xx: rare enough to make its series on first use
            counter = self.requests.labels(route or UNROUTED, f"{status // 100}xx")
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

    def render(self) -> bytes:
        return generate_latest(self.registry)

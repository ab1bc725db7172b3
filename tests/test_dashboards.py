"""The Grafana dashboard and the Prometheus alert rules in deploy/ query only what
``/-/metrics`` exposes: every metric, every label they match or group by, and every
label value they match exactly, checked against a real proxy in front of the sandbox
after traffic that includes a rejected login and a throttled answer. The rules also pass
``promtool check rules`` (scripts/test installs promtool where it can).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import promql_parser as promql
import pytest
import yaml
from helpers import ROOT, Samples, base, iics_route, scrape, status_of

from proxy.sandbox import RateLimit, Sandbox

DASHBOARD = ROOT / "deploy" / "grafana" / "auth-proxy.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
AGENT = "/saas/api/v2/agent"
VENV_BIN = Path(sys.executable).parent
# Labels Prometheus adds to every series it scrapes (the target's), not in /-/metrics.
TARGET_LABELS = frozenset({"job", "instance"})
# Grafana's variables, replaced by what they stand for so that PromQL parses.
GRAFANA_VARIABLES = re.compile(r"\$(\w+|\{\w+\})")
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")


def dashboard_queries() -> Iterator[str]:
    dashboard = json.loads(DASHBOARD.read_text())

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for item in items:
            yield item
            yield from panels(item.get("panels", []))

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            yield variable["query"]["query"]


def alert_queries() -> Iterator[str]:
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule["expr"]


@dataclass
class Used:
    """What one query asks of the metrics."""

    selectors: list[tuple[str, list[Any]]] = field(default_factory=list)  # name, matchers
    grouping: set[str] = field(default_factory=set)  # by/without/on/ignoring/group_x labels


def used_by(query: str) -> Used:
    """The selectors and grouping labels of a PromQL ``query`` (or a Grafana
    ``label_values(selector, label)``), by promql-parser's syntax tree."""
    query = query.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    query = GRAFANA_VARIABLES.sub(".*", query)
    used = Used()
    if (values := LABEL_VALUES.match(query.strip())) is not None:
        query = values["selector"]
        used.grouping.add(values["label"])
    _walk(promql.parse(query), used)
    return used


def _walk(node: Any, used: Used) -> None:
    if isinstance(node, promql.VectorSelector):
        used.selectors.append((node.name, list(node.matchers.matchers)))
    elif isinstance(node, promql.MatrixSelector):
        _walk(node.vector_selector, used)
    elif isinstance(node, promql.AggregateExpr):
        if node.modifier is not None:
            used.grouping.update(node.modifier.labels)
        _walk(node.expr, used)
        _walk(node.param, used)
    elif isinstance(node, promql.BinaryExpr):
        modifier = node.modifier
        if modifier is not None:
            if modifier.matching is not None:
                used.grouping.update(modifier.matching.labels)
            used.grouping.update(modifier.group_labels or ())
        _walk(node.lhs, used)
        _walk(node.rhs, used)
    elif isinstance(node, promql.Call):
        for arg in node.args:
            _walk(arg, used)
    elif isinstance(node, promql.ParenExpr | promql.SubqueryExpr | promql.UnaryExpr):
        _walk(node.expr, used)


def problems(query: str, samples: Samples) -> list[str]:
    """What ``query`` asks for that ``samples`` (one scrape) do not have."""
    series: dict[str, list[dict[str, str]]] = {}
    for name, labels in samples:
        series.setdefault(name, []).append(dict(labels))
    used = used_by(query)
    found: list[str] = []
    label_sets: list[dict[str, str]] = []
    for name, matchers in used.selectors:
        if name not in series:
            found.append(f"no metric {name}")
            continue
        label_sets.extend(series[name])
        for matcher in matchers:
            if matcher.name in TARGET_LABELS:
                continue
            if not any(matcher.name in labels for labels in series[name]):
                found.append(f"{name} has no label {matcher.name}")
            elif matcher.op == promql.MatchOp.Equal and not any(
                labels.get(matcher.name, "") == matcher.value for labels in series[name]
            ):
                found.append(f"{name} has no series with {matcher.name}={matcher.value!r}")
    for label in sorted(used.grouping - TARGET_LABELS):
        if not any(label in labels for labels in label_sets):
            found.append(f"no metric of the query has the label {label}")
    return found


@pytest.fixture
async def scraped(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, tmp_path: Path
) -> Samples:
    """One scrape of a proxy that answered, logged in, was refused a login, was throttled
    and queued a request (every kind of series exists)."""
    busy = iics_route(sandbox, upstream={"max_concurrent": 4})
    bad = iics_route(sandbox, name="bad", prefix="/bad", password="wrong")
    store = {"type": "local", "path": str(tmp_path / "sessions")}
    server = await make_proxy(routes=[busy, bad], session_store=store)
    assert await status_of(http, base(server, "/iics" + AGENT)) == 200
    sandbox.state.rate_limits["iics-pod"] = RateLimit(refuse_next=1, retry_after=1)
    assert await status_of(http, base(server, "/iics" + AGENT)) == 200  # after one 429
    assert await status_of(http, base(server, "/bad" + AGENT)) == 502  # login_rejected
    assert await status_of(http, base(server, "/nowhere")) == 404
    samples = await scrape(http, base(server, "/-/metrics"))
    throttled = ("auth_proxy_throttled_responses_total", {"route": "iics", "action": "retried"})
    assert samples[throttled[0], frozenset(throttled[1].items())] == 1
    return samples


def test_the_checker_finds_what_is_missing(scraped: Samples) -> None:
    assert problems('sum by (route) (rate(auth_proxy_requests_total{code=""}[5m]))', scraped) == []
    assert problems("rate(auth_proxy_request_total[5m])", scraped) == [
        "no metric auth_proxy_request_total"
    ]
    assert problems('auth_proxy_logins_total{outcome="ok"}', scraped) == [
        "auth_proxy_logins_total has no label outcome"
    ]
    assert problems('auth_proxy_logins_total{result="refused"}', scraped) == [
        "auth_proxy_logins_total has no series with result='refused'"
    ]
    assert problems("sum by (route, worker) (auth_proxy_sessions_active)", scraped) == [
        "no metric of the query has the label worker"
    ]
    assert problems('label_values(auth_proxy_build_info{job=~"$job"}, release)', scraped) == [
        "no metric of the query has the label release"
    ]


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_query_uses_only_what_the_proxy_exposes(source: str, scraped: Samples) -> None:
    queries = list(dashboard_queries() if source == "dashboard" else alert_queries())
    assert len(queries) >= (20 if source == "dashboard" else 5)
    found = {query: problems(query, scraped) for query in queries}
    assert {query: p for query, p in found.items() if p} == {}


def test_the_alert_rules_pass_promtool() -> None:
    # On the PATH, or where scripts/test unpacks it: beside the virtualenv's Python.
    promtool = shutil.which("promtool", path=f"{os.environ.get('PATH', '')}{os.pathsep}{VENV_BIN}")
    if promtool is None:
        pytest.skip("promtool is not installed (scripts/test fetches it where apt-get works)")
    result = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout

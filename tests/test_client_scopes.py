"""Named clients (README, "Shared gateway"): each client token may use only its routes,
its methods and (with ``admin: true``) the admin endpoints, at its own rate; refusals
name the client and the route, never the token. Plain tokens keep full access."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
from helpers import (
    LOGIN_HOST,
    POD_HOST,
    FileProxy,
    ProxyFactory,
    ServeRoutes,
    Upstream,
    base,
    fetch,
    metric,
    raw_exchange,
    run_cli,
    scrape,
    use_proxy,
    write_config,
)

from proxy.config import ConfigError, parse_config
from proxy.core.clock import ManualClock
from proxy.sandbox import Sandbox

CI_TOKEN = "ci-token-4f9a1c"
OPS_TOKEN = "ops-token-77b2e0"
LEGACY = "legacy-token-0d3e"


def bearer(token: str) -> dict[str, str]:
    return {"Proxy-Authorization": f"Bearer {token}"}


def two_routes(upstream: Upstream) -> list[dict[str, Any]]:
    return [
        upstream.route(name="reports", prefix="/reports"),
        upstream.route(name="jobs", prefix="/jobs"),
    ]


def gateway(**ci: Any) -> dict[str, Any]:
    """A shared gateway's clients: a scheduler limited to reports, reading; an operator;
    a plain (legacy) token."""
    return {
        "tokens": [
            {"name": "ci-scheduler", "token": CI_TOKEN, "routes": ["reports"], **ci},
            {"name": "ops", "token": OPS_TOKEN, "admin": True},
            LEGACY,
        ]
    }


async def test_a_client_may_use_its_routes_and_methods_and_nothing_else(
    upstream: Upstream, make_proxy: ProxyFactory, http: aiohttp.ClientSession, logs: Any
) -> None:
    server = await make_proxy(
        routes=two_routes(upstream), client_auth=gateway(methods=["GET", "head"])
    )
    ci = bearer(CI_TOKEN)
    assert (await fetch(http, "GET", base(server, "/reports/daily"), headers=ci)).status == 200
    assert (await fetch(http, "HEAD", base(server, "/reports/daily"), headers=ci)).status == 200

    refused = await fetch(http, "DELETE", base(server, "/reports/daily"), headers=ci)
    assert refused.status == 403
    assert refused.headers["X-Auth-Proxy-Error"] == "forbidden"
    assert refused.body["error"] == {
        "code": "forbidden",
        "message": 'client "ci-scheduler" may not use method DELETE on route "reports"',
        "route": "reports",
    }
    other = await fetch(http, "GET", base(server, "/jobs/1"), headers=ci)
    assert other.status == 403
    assert other.body["error"]["message"] == 'client "ci-scheduler" may not use route "jobs"'

    # The other clients are not limited by ci-scheduler's scope.
    for token in (OPS_TOKEN, LEGACY):
        assert (
            await fetch(http, "DELETE", base(server, "/jobs/1"), headers=bearer(token))
        ).status == 200
    assert [(r.method, r.path) for r in upstream.seen] == [
        ("GET", "/daily"),
        ("HEAD", "/daily"),
        ("DELETE", "/1"),
        ("DELETE", "/1"),
    ]
    assert CI_TOKEN not in logs.text and CI_TOKEN not in str(refused.body)


async def test_access_lines_name_the_client_and_plain_tokens_by_position(
    upstream: Upstream, make_proxy: ProxyFactory, http: aiohttp.ClientSession, logs: Any
) -> None:
    server = await make_proxy(routes=two_routes(upstream), client_auth=gateway())
    for token in (CI_TOKEN, OPS_TOKEN, LEGACY, "wrong"):
        await fetch(http, "GET", base(server, "/reports/x"), headers=bearer(token))
    lines = logs.events("request")
    assert [(e["client"], e["status"]) for e in lines] == [
        ("ci-scheduler", 200),
        ("ops", 200),
        ("token-3", 200),  # the third entry of tokens: named by place, never by value
        (None, 401),
    ]
    assert LEGACY not in logs.text


async def test_admin_endpoints_need_the_admin_scope_and_probes_need_nothing(
    upstream: Upstream, make_proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=two_routes(upstream), client_auth=gateway())
    refused = await fetch(http, "GET", base(server, "/-/sessions"), headers=bearer(CI_TOKEN))
    assert refused.status == 403
    assert refused.body["error"]["message"] == (
        'client "ci-scheduler" may not use the admin endpoints'
    )
    post = await fetch(
        http, "POST", base(server, "/-/sessions/reports/clear"), headers=bearer(CI_TOKEN)
    )
    assert post.status == 403
    for token in (OPS_TOKEN, LEGACY):  # admin: true, and a plain token as before scopes
        assert (
            await fetch(http, "GET", base(server, "/-/metrics"), headers=bearer(token))
        ).status == 200
        cleared = await fetch(
            http,
            "POST",
            base(server, "/-/sessions/reports/clear"),
            headers={**bearer(token), "X-Auth-Proxy": "1"},
        )
        assert cleared.status == 200
    for probe in ("/-/healthz", "/-/readyz"):
        assert (await fetch(http, "GET", base(server, probe))).status == 200


async def test_a_client_over_its_rate_gets_429_with_retry_after(
    upstream: Upstream,
    make_proxy: ProxyFactory,
    http: aiohttp.ClientSession,
    clock: ManualClock,
) -> None:
    server = await make_proxy(routes=two_routes(upstream), client_auth=gateway(rate="2/m", burst=3))
    url, ci = base(server, "/reports/x"), bearer(CI_TOKEN)
    assert [(await fetch(http, "GET", url, headers=ci)).status for _ in range(3)] == [200] * 3
    over = await fetch(http, "GET", url, headers=ci)
    assert over.status == 429
    assert over.headers["X-Auth-Proxy-Error"] == "rate_limited"
    assert over.headers["Retry-After"] == "30"  # one request every 30 s
    assert over.body["error"]["message"] == (
        'client "ci-scheduler" is over its rate limit (2/m, burst 3)'
    )
    # Other clients have their own allowance (none here).
    assert (await fetch(http, "GET", url, headers=bearer(LEGACY))).status == 200

    clock.advance(19.5)
    again = await fetch(http, "GET", url, headers=ci)
    assert (again.status, again.headers["Retry-After"]) == (429, "11")  # 10.5, rounded up
    clock.advance(10.5)
    assert (await fetch(http, "GET", url, headers=ci)).status == 200
    assert (await fetch(http, "GET", url, headers=ci)).status == 429
    async with aiohttp.ClientSession(headers=bearer(OPS_TOKEN)) as ops:
        samples = await scrape(ops, base(server, "/-/metrics"))
    limited = metric(samples, "auth_proxy_client_rate_limited_total", client="ci-scheduler")
    assert limited == 3
    assert len(upstream.seen) == 5


async def test_a_reload_keeps_a_client_s_spent_allowance(
    upstream: Upstream, file_proxy: FileProxy, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    write_config(path, two_routes(upstream), client_auth=gateway(rate="1/h"))
    server = await file_proxy(path)
    url = base(server, "/reports/x")
    assert (await fetch(http, "GET", url, headers=bearer(CI_TOKEN))).status == 200
    assert (await fetch(http, "GET", url, headers=bearer(CI_TOKEN))).status == 429
    result = await server.reload_from_file()
    assert result.ok
    assert (await fetch(http, "GET", url, headers=bearer(CI_TOKEN))).status == 429
    # A changed limit is a new allowance.
    write_config(path, two_routes(upstream), client_auth=gateway(rate="2/h"))
    assert (await server.reload_from_file()).ok
    assert (await fetch(http, "GET", url, headers=bearer(CI_TOKEN))).status == 200


async def test_a_certificate_only_gateway_refuses_requests_without_one(
    upstream: Upstream, make_proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(
        routes=two_routes(upstream),
        client_auth={"certificates": [{"subject": "CN=ci-scheduler,O=Team"}]},
    )
    refused = await fetch(http, "GET", base(server, "/reports/x"), headers=bearer(CI_TOKEN))
    assert refused.status == 401
    assert "client certificate" in refused.body["error"]["message"]
    assert upstream.seen == []


# --------------------------------------------------------------------------- forward-proxy mode


def basic(token: str) -> str:
    return "Basic " + base64.b64encode(f"tool:{token}".encode()).decode()


async def test_forward_proxy_scopes_apply_on_the_connect_and_inside_the_tunnel(
    start_forward_proxy: ProxyFactory,
    vendor: Sandbox,
    ca_files: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    clients = {
        "tokens": [
            {"name": "elsewhere", "token": "tok-elsewhere", "routes": ["other"]},
            {"name": "reader", "token": "tok-reader", "methods": ["GET"]},
        ]
    }
    other = {
        "name": "other",
        "match": {"prefix": "/other"},
        "auth": {"type": "ivanti-api-key", "url": vendor.urls.ivanti, "api_key": "k"},
    }
    audit = tmp_path / "audit.jsonl"
    server = await start_forward_proxy(
        client_auth=clients, routes=[other], log={"audit": str(audit)}
    )
    connect = f"CONNECT {LOGIN_HOST}:443 HTTP/1.1\r\nHost: {LOGIN_HOST}\r\n"
    status, headers, body = await raw_exchange(
        server.port, f"{connect}Proxy-Authorization: {basic('tok-elsewhere')}\r\n\r\n".encode()
    )
    assert (status, headers["x-auth-proxy-error"]) == (403, "forbidden")
    assert b'client \\"elsewhere\\" may not use route \\"informatica\\"' in body
    [refusal] = [json.loads(line) for line in audit.read_text().splitlines()]
    assert {k: refusal[k] for k in ("client", "method", "path", "status", "code")} == {
        "client": "elsewhere",
        "method": "CONNECT",
        "path": f"{LOGIN_HOST}:443",
        "status": 403,
        "code": "forbidden",
    }

    # The reader's tunnel opens; its GETs pass and its POSTs (the login call) do not.
    use_proxy(monkeypatch, server, ca_files[0])
    monkeypatch.setenv("HTTPS_PROXY", f"http://tool:tok-reader@127.0.0.1:{server.port}")

    def calls() -> tuple[requests.Response, requests.Response]:
        login = requests.post(f"https://{LOGIN_HOST}/ma/api/v2/user/login", json={}, timeout=10)
        agents = requests.get(f"https://{POD_HOST}/saas/api/v2/agent", timeout=10)
        return login, agents

    login, agents = await asyncio.to_thread(calls)
    assert login.status_code == 403
    assert login.json()["error"]["message"] == (
        'client "reader" may not use method POST on route "informatica"'
    )
    assert agents.status_code == 200  # with the route's own session


# --------------------------------------------------------------------------- config


ROUTES = [
    {
        "name": "reports",
        "match": {"prefix": "/reports"},
        "auth": {"type": "ivanti-api-key", "url": "https://ism.example", "api_key": "k"},
    }
]


@pytest.mark.parametrize(
    ("client_auth", "expected"),
    [
        (
            {"tokens": [{"name": "ci", "token": "t", "routes": ["reprots"]}]},
            "client_auth.tokens[0].routes: no route is named 'reprots'",
        ),
        (
            {"tokens": [{"name": "ci", "token": "t", "rate": "10/d"}]},
            "client_auth.tokens[0].rate: '10/d': a rate is N/s, N/m or N/h, e.g. 10/s or 600/m",
        ),
        (
            {"tokens": [{"name": "ci", "token": "t", "burst": 5}]},
            "client_auth.tokens[0]: burst needs a rate, e.g. rate: 10/s",
        ),
        (
            {"tokens": [{"name": "ci", "tokn": "t"}]},
            'client_auth.tokens[0].tokn: unknown key (did you mean "token"?)',
        ),
        (
            {"tokens": ["t", {"name": "token-1", "token": "u"}]},
            "client_auth.tokens[1].name: 'token-1' is already the name of client_auth.tokens[0]",
        ),
        (
            {"tokens": [{"name": "ci", "token": "t", "methods": ["GET", "NOT A METHOD"]}]},
            "client_auth.tokens[0].methods: 'NOT A METHOD' is not an HTTP method",
        ),
        (
            {"certificates": [{"subject": "ci-scheduler"}]},
            "client_auth.certificates[0].subject: 'ci-scheduler' is not a subject like "
            "CN=name,O=organisation",
        ),
        ({"tokens": []}, "client_auth: give tokens, certificates, or both"),
    ],
)
def test_client_entries_are_checked_with_their_key_paths(
    client_auth: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"client_auth": client_auth, "routes": ROUTES})
    assert expected in str(caught.value).splitlines()


def test_rates_and_subjects_are_read_in_one_spelling() -> None:
    config = parse_config(
        {
            "client_auth": {
                "tokens": [{"name": "ci", "token": "t", "rate": "600/m"}],
                "certificates": [{"subject": "cn=ci-scheduler , o=Team", "routes": ["reports"]}],
            },
            "routes": ROUTES,
        }
    )
    assert config.client_auth is not None
    ci, cert = config.client_auth.identities()
    assert ci.scope.rate is not None and ci.scope.rate.per_second == 10
    assert ci.scope.bucket_size == 10  # one second's worth when burst is not given
    assert (cert.name, cert.subject) == ("ci-scheduler", "CN=ci-scheduler,O=Team")


# --------------------------------------------------------------------------- the CLI


async def test_the_clear_command_uses_a_token_that_may_call_the_admin_endpoints(
    upstream: Upstream, serve_routes: ServeRoutes
) -> None:
    clients = {
        "tokens": [
            {"name": "ci-scheduler", "token": CI_TOKEN},
            {"name": "ops", "token": OPS_TOKEN, "admin": True},
        ]
    }
    served = await serve_routes([upstream.route()], client_auth=clients)
    result = await asyncio.to_thread(run_cli, "clear", "up", "-c", str(served.config))
    assert (result.returncode, result.stdout) == (0, "up: no login lockout to lift\n")

    served.rewrite([upstream.route()], client_auth={"tokens": clients["tokens"][:1]})
    result = await asyncio.to_thread(run_cli, "clear", "up", "-c", str(served.config))
    assert result.returncode == 1
    assert "no client_auth token may call the admin endpoints" in result.stderr


@pytest.mark.parametrize("header", ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"])
async def test_a_method_override_header_cannot_widen_a_client_s_methods(
    upstream: Upstream, make_proxy: ProxyFactory, http: aiohttp.ClientSession, header: str
) -> None:
    """Many vendor APIs run a POST carrying ``X-HTTP-Method-Override: DELETE`` as a DELETE:
    a client limited to reads must not reach them with one."""
    server = await make_proxy(routes=two_routes(upstream), client_auth=gateway(methods=["GET"]))
    url, ci = base(server, "/reports/daily"), bearer(CI_TOKEN)
    for value in ("DELETE", " delete ", "GET, DELETE"):
        refused = await fetch(http, "GET", url, headers={**ci, header: value})
        assert refused.status == 403, value
        assert refused.body["error"]["message"] == (
            f'client "ci-scheduler" may not use method {value.strip().upper()} on route '
            f'"reports" (asked for with {header})'
        )
    assert upstream.seen == []
    # An override naming an allowed method is harmless; other clients are not limited.
    assert (await fetch(http, "GET", url, headers={**ci, header: "get"})).status == 200
    legacy = await fetch(http, "POST", url, headers={**bearer(LEGACY), header: "DELETE"})
    assert legacy.status == 200
    assert [(r.method, r.headers.get(header)) for r in upstream.seen] == [
        ("GET", "get"),
        ("POST", "DELETE"),
    ]


async def test_an_admin_client_s_methods_limit_the_admin_endpoints_too(
    upstream: Upstream, make_proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    """A monitoring client (metrics, the status page) given ``methods: [GET, HEAD]`` must
    not clear sessions, log out or reload."""
    monitor = {"name": "monitor", "token": OPS_TOKEN, "admin": True, "methods": ["GET", "HEAD"]}
    server = await make_proxy(routes=two_routes(upstream), client_auth={"tokens": [monitor]})
    headers = {**bearer(OPS_TOKEN), "X-Auth-Proxy": "1"}
    assert (await fetch(http, "GET", base(server, "/-/metrics"), headers=headers)).status == 200
    assert (await fetch(http, "GET", base(server, "/-/sessions"), headers=headers)).status == 200
    for path in ("/-/sessions/reports/clear", "/-/sessions/reports/logout", "/-/reload"):
        refused = await fetch(http, "POST", base(server, path), headers=headers)
        assert refused.status == 403, path
        assert refused.body["error"]["message"] == (
            'client "monitor" may not use method POST on the admin endpoints'
        )

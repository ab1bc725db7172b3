"""The Ivanti auth types end to end: the session key (or JWT) an ivanti-session login gets
and its expiry, and the REST API key injected as it is.
"""

from __future__ import annotations

import pytest
from helpers import (
    assert_rejected_once,
    base,
    fetch,
    ivanti_session_route,
    last_call,
    login_services,
    prefix_route,
    status_of,
)

from proxy.core.clock import ManualClock

# --------------------------------------------------------------------------- ivanti-session

INCIDENTS = "/api/odata/businessobject/incidents"


async def test_ivanti_session_key_sent_raw(sandbox, make_proxy, http, clock: ManualClock):
    server = await make_proxy(routes=[ivanti_session_route(sandbox)])
    status, body, _ = await fetch(http, "GET", base(server, f"/ivanti{INCIDENTS}?$top=1"))
    assert status == 200 and body["@odata.count"] == 1
    (login,) = sandbox.state.logins
    assert login.url == sandbox.urls.ivanti + "/api/rest/authentication/login"
    assert login.headers["Content-Type"] == "application/json"
    assert login.json() == {
        "tenant": sandbox.state.ivanti_tenant,
        "username": "demo",
        "password": "demo-password",
        "role": "Admin",
    }
    (key,) = sandbox.state.ivanti_sessions
    seen = last_call(sandbox, "ivanti")
    assert seen.url == sandbox.urls.ivanti + INCIDENTS + "?$top=1"
    assert seen.headers["Authorization"] == key
    assert key.startswith(sandbox.state.ivanti_tenant + "#")

    clock.advance(1201)  # the 1200 s idle default
    assert await status_of(http, base(server, f"/ivanti{INCIDENTS}")) == 200
    assert login_services(sandbox) == ["ivanti-login", "ivanti-login"]


async def test_ivanti_heat_prefix_is_kept(sandbox, make_proxy, http):
    server = await make_proxy(
        routes=[ivanti_session_route(sandbox, url=sandbox.urls.ivanti + "/HEAT")]
    )
    assert await status_of(http, base(server, f"/ivanti{INCIDENTS}")) == 200
    (login,) = sandbox.state.logins
    assert login.url == sandbox.urls.ivanti + "/HEAT/api/rest/authentication/login"
    assert last_call(sandbox, "ivanti").url == sandbox.urls.ivanti + "/HEAT" + INCIDENTS


async def test_ivanti_jwt_is_bearer_and_its_exp_ends_the_session(
    sandbox, make_proxy, http, clock: ManualClock
):
    sandbox.state.ivanti_session_kind = "jwt"
    sandbox.state.ivanti_jwt_lifetime = 600
    server = await make_proxy(routes=[ivanti_session_route(sandbox)])
    assert await status_of(http, base(server, f"/ivanti{INCIDENTS}")) == 200
    (token,) = sandbox.state.ivanti_sessions
    assert last_call(sandbox, "ivanti").headers["Authorization"] == f"Bearer {token}"
    clock.advance(601)  # used recently enough for the idle clock, but past exp
    assert await status_of(http, base(server, f"/ivanti{INCIDENTS}")) == 200
    assert login_services(sandbox) == ["ivanti-login", "ivanti-login"]


async def test_ivanti_bad_password_is_rejected_once(sandbox, make_proxy, http):
    server = await make_proxy(routes=[ivanti_session_route(sandbox, password="wrong")])
    await assert_rejected_once(
        http, server, sandbox, f"/ivanti{INCIDENTS}", "ISM_4000", "Tenant Not Found"
    )
    assert login_services(sandbox) == ["ivanti-login"]


async def test_ivanti_400_passes_through_without_login_but_401_relogs(sandbox, make_proxy, http):
    server = await make_proxy(routes=[ivanti_session_route(sandbox)])
    assert await status_of(http, base(server, f"/ivanti{INCIDENTS}")) == 200
    status, body, headers = await fetch(http, "GET", base(server, f"/ivanti{INCIDENTS}('NOPE')"))
    assert (status, body["code"]) == (400, "ISM_4000")
    assert "X-Auth-Proxy-Error" not in headers
    assert login_services(sandbox) == ["ivanti-login"]

    sandbox.state.expire_all_sessions()  # the tenant forgot the key: 401 ISM_4001
    assert await status_of(http, base(server, f"/ivanti{INCIDENTS}")) == 200
    assert login_services(sandbox) == ["ivanti-login", "ivanti-login"]


def test_ivanti_config_refuses_reauth_on_400() -> None:
    from proxy.config import ConfigError, parse_config

    data = {
        "routes": [
            prefix_route(
                "ivanti",
                {
                    "type": "ivanti-session",
                    "tenant": "t",
                    "username": "u",
                    "password": "p",
                    "role": "Admin",
                    "reauth_on": [400],
                },
            )
        ]
    }
    with pytest.raises(ConfigError, match="reauth_on"):
        parse_config(data)


async def test_ivanti_api_key_is_injected_and_a_bad_key_is_not_retried(sandbox, make_proxy, http):
    good = {
        "type": "ivanti-api-key",
        "url": sandbox.urls.ivanti + "/HEAT",
        "api_key": "demo-api-key",
    }
    server = await make_proxy(
        routes=[
            prefix_route("key", good),
            prefix_route("badkey", {**good, "api_key": "not-a-key"}),
        ]
    )
    status, body, _ = await fetch(
        http, "GET", base(server, "/key/api/odata/businessobject/incidents?$top=1")
    )
    assert status == 200 and len(body["value"]) == 1
    seen = last_call(sandbox, "ivanti")
    assert seen.url == sandbox.urls.ivanti + "/HEAT/api/odata/businessobject/incidents?$top=1"
    assert seen.headers["Authorization"] == "rest_api_key=demo-api-key"
    assert sandbox.state.logins == []  # no login exists for API keys
    calls = len(sandbox.state.requests_for("ivanti"))
    status, body, _ = await fetch(
        http, "GET", base(server, "/badkey/api/odata/businessobject/incidents")
    )
    assert status == 401 and body["code"] == "ISM_4001"
    assert len(sandbox.state.requests_for("ivanti")) == calls + 1  # a key is never replayed

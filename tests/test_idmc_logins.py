"""The idmc-jwt auth type end to end: the identity-service login, the JWT minted for it
and presented to CDGC, re-minted before it runs out, and a full login when the session
behind it ends.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from helpers import (
    DEMO,
    ORG_UUID,
    assert_rejected_once,
    base,
    fetch,
    jwt_claims,
    last_call,
    login_services,
    prefix_route,
    status_of,
    wait_for,
)

from proxy.core.clock import ManualClock
from proxy.sandbox import Sandbox

# --------------------------------------------------------------------------- idmc-jwt

CDGC_PATH = "/cdgc/data360/search/v1/assets?query=*"


def idmc_route(sandbox: Sandbox, **auth: Any) -> dict[str, Any]:
    login = {"login_url": sandbox.urls.login, **DEMO}
    return prefix_route(
        "cdgc", {"type": "idmc-jwt", **login, "upstream": sandbox.urls.cdgc, **auth}
    )


def cdgc_bearer(sandbox: Sandbox) -> str:
    return last_call(sandbox, "cdgc").headers["Authorization"].removeprefix("Bearer ")


async def test_idmc_login_mint_and_bearer_on_cdgc(sandbox, make_proxy, http, clock: ManualClock):
    server = await make_proxy(routes=[idmc_route(sandbox)])
    status, body, _ = await fetch(http, "GET", base(server, CDGC_PATH))
    assert status == 200 and body["summary"]["total_hits"] == 2
    login, mint = sandbox.state.logins
    assert login.url == sandbox.urls.login + "/identity-service/api/v1/Login"
    assert login.headers["Content-Type"] == "application/json"
    assert login.json() == {"username": "demo", "password": "demo-password"}
    (session_id,) = sandbox.state.iics_sessions
    url = urlsplit(mint.url)
    assert (mint.method, url.path) == ("POST", "/identity-service/api/v1/jwt/Token")
    assert parse_qs(url.query)["client_id"] == ["idmc_api"]
    assert mint.headers["Cookie"] == f"USER_SESSION={session_id}"
    assert mint.headers["IDS-SESSION-ID"] == session_id
    seen = last_call(sandbox, "cdgc")
    assert seen.url == sandbox.urls.cdgc + "/data360/search/v1/assets?query=*"
    claims = jwt_claims(cdgc_bearer(sandbox))
    assert claims["nonce"] == parse_qs(url.query)["nonce"][0]
    assert seen.headers["X-INFA-ORG-ID"] == ORG_UUID
    assert seen.headers["IDS-SESSION-ID"] == session_id


async def test_idmc_jwt_is_reminted_then_ids_session_end_logs_in(
    sandbox, make_proxy, http, clock: ManualClock
):
    sandbox.state.ids_session_lifetime = 2500
    server = await make_proxy(routes=[idmc_route(sandbox)])
    assert await status_of(http, base(server, CDGC_PATH)) == 200
    first = cdgc_bearer(sandbox)

    clock.advance(1700)  # the JWT has 100 s left: re-minted in the background
    assert await status_of(http, base(server, CDGC_PATH)) == 200
    await wait_for(lambda: len(sandbox.state.logins) == 3, what="JWT re-mint")
    assert login_services(sandbox) == ["ids-login", "ids-jwt", "ids-jwt"]
    clock.advance(200)  # the first JWT is dead; the new one serves
    assert await status_of(http, base(server, CDGC_PATH)) == 200
    second = cdgc_bearer(sandbox)
    assert second != first
    nonces = [parse_qs(urlsplit(s.url).query)["nonce"][0] for s in sandbox.state.logins[1:]]
    assert len(set(nonces)) == 2

    clock.advance(601)  # past sessionExpireTime: a full login, exactly once
    assert await status_of(http, base(server, CDGC_PATH)) == 200
    assert await status_of(http, base(server, CDGC_PATH)) == 200
    assert login_services(sandbox) == ["ids-login", "ids-jwt", "ids-jwt", "ids-login", "ids-jwt"]


async def test_idmc_jwt_that_ran_out_unused_is_reminted_without_a_login(
    sandbox, make_proxy, http, clock: ManualClock
):
    sandbox.state.iics_idle_timeout = 7200  # keep the IDS session alive while unused
    server = await make_proxy(routes=[idmc_route(sandbox)])
    assert await status_of(http, base(server, CDGC_PATH)) == 200
    clock.advance(1900)  # no request in the refresh window: the JWT is already dead
    assert await status_of(http, base(server, CDGC_PATH)) == 200
    assert login_services(sandbox) == ["ids-login", "ids-jwt", "ids-jwt"]


async def test_idmc_mint_refused_with_401_leads_to_a_full_login(
    sandbox, make_proxy, http, clock: ManualClock
):
    server = await make_proxy(routes=[idmc_route(sandbox)])
    assert await status_of(http, base(server, CDGC_PATH)) == 200
    sandbox.state.iics_sessions.clear()  # the IDS session died early on the vendor side
    clock.advance(1700)
    assert await status_of(http, base(server, CDGC_PATH)) == 200
    await wait_for(lambda: len(sandbox.state.logins) == 5, what="re-login after a refused mint")
    assert login_services(sandbox) == ["ids-login", "ids-jwt", "ids-jwt", "ids-login", "ids-jwt"]
    clock.advance(200)
    assert await status_of(http, base(server, CDGC_PATH)) == 200
    (session_id,) = sandbox.state.iics_sessions
    assert last_call(sandbox, "cdgc").headers["IDS-SESSION-ID"] == session_id
    assert len(sandbox.state.logins) == 5


async def test_idmc_401_from_cdgc_remints_and_replays(sandbox, make_proxy, http):
    server = await make_proxy(routes=[idmc_route(sandbox)])
    assert await status_of(http, base(server, CDGC_PATH)) == 200
    sandbox.state.ids_jwts.clear()  # CDGC no longer honours the JWT
    assert await status_of(http, base(server, CDGC_PATH)) == 200
    assert login_services(sandbox) == ["ids-login", "ids-jwt", "ids-jwt"]


async def test_idmc_bad_password_is_rejected_once_and_logout(sandbox, make_proxy, http):
    bad = await make_proxy(routes=[idmc_route(sandbox, password="wrong")])
    await assert_rejected_once(http, bad, sandbox, CDGC_PATH, "IDS_085")
    assert login_services(sandbox) == ["ids-login"]

    good = await make_proxy(routes=[idmc_route(sandbox)])
    assert await status_of(http, base(good, CDGC_PATH)) == 200
    (session_id,) = sandbox.state.iics_sessions
    await good.stop(drain_timeout=1)
    (logout,) = sandbox.state.requests_to("/identity-service/api/v1/Logout")
    assert logout.headers["IDS-SESSION-ID"] == session_id
    assert not sandbox.state.iics_sessions

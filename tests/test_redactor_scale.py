"""The log redactor holds the secrets in use, not every secret the proxy ever saw.

Session ids leave it when their session ends (expiry, a vendor's 401, logout) and a
route keeps only its latest credentials, so after thousands of logins it holds as many
values as after the first, and the cost of masking a log line stays what it was.
Timing is measured by bench/redactor.py, not asserted here.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from helpers import base, ivanti_session_route, prefix_route

from proxy.core.clock import ManualClock
from proxy.ops.logs import REDACTOR
from proxy.sandbox import Sandbox

ROUNDS = 1000  # three routes: more than 2,000 logins
PASSWORD = 'Mk"pw/1 +scale'  # its JSON and URL forms are masked too

PATHS = {
    "v2": "/saas/api/v2/agent",
    "ivs": "/api/odata/businessobject/incidents",
    "cdgc": "/data360/search/v1/assets",
}


def routes(sandbox: Sandbox) -> list[dict[str, Any]]:
    sandbox.state.iics_users["demo"].password = PASSWORD
    sandbox.state.ivanti_users["demo"].password = PASSWORD
    iics = {"login_url": sandbox.urls.login, "username": "demo", "password": PASSWORD}
    return [
        prefix_route("v2", {"type": "iics-password", **iics}),
        # Its JWT runs out inside the session: re-minted (a renewal) before a new login.
        prefix_route("cdgc", {"type": "idmc-jwt", **iics, "upstream": sandbox.urls.cdgc}),
        ivanti_session_route(sandbox, name="ivs", prefix="/ivs", password=PASSWORD),
    ]


def presented_session_ids(sandbox: Sandbox) -> tuple[set[str], set[str]]:
    """Every session id and key the proxy presented to the vendors, and the latest ones."""
    every: set[str] = set()
    latest: dict[tuple[str, str], str] = {}
    for seen in sandbox.state.requests:
        for header in ("icSessionId", "Authorization"):
            if header in seen.headers:
                value = seen.headers[header].removeprefix("Bearer ")
                every.add(value)
                latest[seen.service, header] = value
    return every, set(latest.values())


async def test_two_thousand_logins_leave_the_redactor_as_small_as_one(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    held_before = len(REDACTOR)
    server = await make_proxy(routes=routes(sandbox))

    async def use_every_route() -> None:
        for name, path in PATHS.items():
            async with http.get(base(server, f"/{name}{path}")) as resp:
                assert resp.status == 200, name

    await use_every_route()
    held_in_use = len(REDACTOR) - held_before
    # Per route: its session's ids and its password, each in a few forms (JSON, URL).
    assert 3 <= held_in_use <= 3 * 8
    for round_ in range(ROUNDS):
        if round_ % 2:
            sandbox.state.expire_all_sessions()  # the vendor refuses them: 401, re-login
        else:
            clock.advance(1900)  # past both idle timeouts: the proxy logs in again
        await use_every_route()
    for service in ("iics-v2-login", "ivanti-login"):
        assert len(sandbox.state.logins_for(service)) == ROUNDS + 1
    assert len(sandbox.state.logins_for("ids-jwt")) > ROUNDS  # minted again and again

    every, latest = presented_session_ids(sandbox)
    retired = every - latest
    assert len(retired) == 3 * ROUNDS
    still_held = [sid for sid in retired if REDACTOR.text(sid) != sid]
    assert not still_held, f"{len(still_held)} ended sessions still held by the redactor"
    assert len(REDACTOR) - held_before == held_in_use

    await server.stop(drain_timeout=1)
    assert len(REDACTOR) == held_before  # logged out: nothing of the proxy's is left

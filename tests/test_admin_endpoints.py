"""The admin endpoints: the health probes, and ``/-/sessions`` showing each route's
session without any secret."""

from __future__ import annotations

import json

import aiohttp
from helpers import base, iics_route, last_session_id, status_of

from proxy.sandbox import Sandbox

AGENT = "/saas/api/v2/agent"


async def test_healthz_readyz_and_sessions_without_secrets(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(routes=[iics_route(sandbox)])
    async with http.get(base(server, "/-/healthz")) as resp:
        assert (resp.status, await resp.json()) == (200, {"status": "ok"})
    async with http.get(base(server, "/-/readyz")) as resp:
        assert (resp.status, await resp.json()) == (200, {"status": "ready"})
    async with http.get(base(server, "/-/sessions")) as resp:
        assert (await resp.json())["iics"]["state"] == "none"

    assert await status_of(http, base(server, "/iics" + AGENT)) == 200
    async with http.get(base(server, "/-/sessions")) as resp:
        text = await resp.text()
    entry = json.loads(text)["iics"]
    assert entry["state"] == "active"
    assert entry["logged_in_at"].endswith("Z") and entry["expires_at"].endswith("Z")
    assert entry["last_error"] is None
    assert last_session_id(sandbox) not in text
    assert "demo-password" not in text

"""No secret reaches a log or a client (SPEC §7, §8), for every auth type, at debug level.

Every credential is a unique marker; every session id, JWT and key the sandbox issued is
collected afterwards. None may appear in the captured log or in any response a client got.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from helpers import ORG_UUID, prefix_route

from proxy.sandbox import Sandbox, mint_saml_token
from proxy.sandbox.state import SalesforceUser

MARK = {
    "iics": "Mk1-iics-password-7f3a",
    "client_secret": "Mk2-oauth-client-secret-9c1d",
    "sf_password": "Mk3-sf-password-55ee",
    "sf_token": "Mk4SFTOKENab12",
    "ivanti": "Mk5-ivanti-password-0b9e",
    "api_key": "Mk6-ivanti-api-key-4411",
    "client_token": "Mk7-proxy-client-token-e2e2",
}


def set_marker_credentials(sandbox: Sandbox) -> None:
    state = sandbox.state
    state.iics_users["demo"].password = MARK["iics"]
    state.oauth_clients["demo-client"] = MARK["client_secret"]
    state.sf_users = {"demo@sf.example": SalesforceUser(MARK["sf_password"], MARK["sf_token"])}
    state.ivanti_users["demo"].password = MARK["ivanti"]
    state.ivanti_api_keys = {MARK["api_key"]}


def all_routes(sandbox: Sandbox, saml_file: Path) -> list[dict[str, Any]]:
    urls = sandbox.urls
    iics = {"login_url": urls.login, "username": "demo", "password": MARK["iics"]}
    org = ORG_UUID
    auths: dict[str, dict[str, Any]] = {
        "v2": {"type": "iics-password", **iics},
        "v3": {"type": "iics-password-v3", **iics},
        "saml": {
            "type": "iics-saml",
            "login_url": urls.login,
            "org_id": org,
            "saml_token": {"command": f"cat {saml_file}"},
        },
        "oauth": {
            "type": "iics-oauth",
            "login_url": urls.login,
            "org_id": org,
            "client_credentials": {
                "token_url": f"{urls.idp}/oauth2/token",
                "client_id": "demo-client",
                "client_secret": MARK["client_secret"],
            },
        },
        "sf": {
            "type": "iics-salesforce",
            "login_url": urls.login,
            "salesforce": {
                "login_url": urls.idp,
                "username": "demo@sf.example",
                "password": MARK["sf_password"],
                "security_token": MARK["sf_token"],
            },
        },
        "cdgc": {"type": "idmc-jwt", **iics, "upstream": urls.cdgc},
        "ivs": {
            "type": "ivanti-session",
            "url": urls.ivanti,
            "tenant": sandbox.state.ivanti_tenant,
            "username": "demo",
            "password": MARK["ivanti"],
            "role": "Admin",
        },
        "ivk": {"type": "ivanti-api-key", "url": urls.ivanti, "api_key": MARK["api_key"]},
    }
    return [prefix_route(n, a) for n, a in auths.items()]


PATHS = {
    "v2": "/saas/api/v2/agent",
    "v3": "/saas/public/core/v3/objects",
    "saml": "/saas/api/v2/agent",
    "oauth": "/saas/api/v2/agent",
    "sf": "/saas/api/v2/agent",
    "cdgc": "/data360/search/v1/assets?query=*",
    "ivs": "/api/odata/businessobject/incidents",
    "ivk": "/api/odata/businessobject/incidents",
}


def issued_secrets(sandbox: Sandbox) -> set[str]:
    """Every session id, token and key the vendors handed out or were shown."""
    state = sandbox.state
    found = set(state.iics_sessions) | set(state.ivanti_sessions) | set(state.sf_sessions)
    for seen in state.requests + state.logins:
        for name in ("Authorization", "icSessionId", "INFA-SESSION-ID", "IDS-SESSION-ID"):
            value = seen.headers.get(name, "")
            found.add(value.removeprefix("Bearer ").removeprefix("rest_api_key="))
    for seen in state.logins_for("iics-oauth") + state.logins_for("iics-saml"):
        body = seen.json()
        found.add(body.get("oauthToken") or body.get("samlToken"))
    return {s for s in found if s and len(s) >= 8}


async def test_no_marker_or_issued_secret_in_logs_or_responses(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, logs, tmp_path: Path, clock
) -> None:
    set_marker_credentials(sandbox)
    saml_file = tmp_path / "saml.txt"
    saml_file.write_text(mint_saml_token(sandbox.state, "demo"))
    server = await make_proxy(
        routes=all_routes(sandbox, saml_file),
        log={"level": "debug"},
        client_auth={"tokens": [MARK["client_token"]]},
    )
    auth = {"Proxy-Authorization": f"Bearer {MARK['client_token']}"}
    seen_by_client: list[str] = []

    async def call(method: str, path: str, **kwargs: Any) -> int:
        url = f"http://127.0.0.1:{server.port}{path}"
        async with http.request(method, url, headers=auth, allow_redirects=False, **kwargs) as r:
            seen_by_client.append(f"{r.status} {list(r.headers.items())} {await r.text()}")
            return r.status

    for name, path in PATHS.items():
        assert await call("GET", f"/{name}{path}") == 200, name
    # Emulated logins, a forced re-login with replay, an expiry, and admin views.
    for name in ("v2", "saml", "oauth", "sf"):
        assert await call("POST", f"/{name}/ma/api/v2/user/login", json={"password": "x"}) == 200
    assert await call("POST", "/v3/saas/public/core/v3/login", json={}) == 200
    assert await call("POST", "/ivs/api/rest/authentication/login", json={}) == 200
    sandbox.state.expire_all_sessions()
    saml_file.write_text(mint_saml_token(sandbox.state, "demo"))
    for name, path in PATHS.items():
        assert await call("GET", f"/{name}{path}") == 200, name
    clock.advance(1900)
    saml_file.write_text(mint_saml_token(sandbox.state, "demo"))
    for name, path in PATHS.items():
        assert await call("GET", f"/{name}{path}") == 200, name
    assert await call("GET", "/-/sessions") == 200
    assert await call("GET", "/-/metrics") == 200
    # Rejections carry vendor text: still no secrets.
    sandbox.state.iics_users["demo"].password = "changed-elsewhere"
    sandbox.state.expire_all_sessions()
    assert await call("GET", "/v2/saas/api/v2/agent") == 502
    await server.stop(drain_timeout=1)  # logouts are logged too

    secrets = set(MARK.values()) | issued_secrets(sandbox)
    assert len(secrets) > 20  # the run really issued sessions, tokens and keys
    log_text = logs.text
    assert '"level": "debug"' in log_text or logs.events()  # something was logged
    for secret in secrets:
        assert secret not in log_text, f"secret {secret[:6]}… found in the log"
        for text in seen_by_client:
            assert secret not in text, f"secret {secret[:6]}… returned to a client"


def test_the_redactor_masks_keys_headers_userinfo_token_queries_and_known_values() -> None:
    from proxy.core.masking import MASK
    from proxy.ops.logs import Redactor

    redactor = Redactor()
    redactor.add("s3ss10n-1d-value")
    event = {
        "event": "x",
        "password": "hunter2",
        "headers": {"Authorization": "Bearer abc", "icSessionId": "zzz", "Accept": "json"},
        "url": "https://user:pw@host/p?access_token=T0K&nonce=N1&page=2",
        "note": "the id s3ss10n-1d-value leaked into text",
        "nested": [{"client_secret": "cs"}],
        "count": 3,
    }
    out = redactor(None, "info", dict(event))
    assert out["password"] == MASK
    assert out["headers"] == {"Authorization": MASK, "icSessionId": MASK, "Accept": "json"}
    assert out["url"] == f"https://{MASK}@host/p?access_token={MASK}&nonce={MASK}&page=2"
    assert out["note"] == f"the id {MASK} leaked into text"
    assert out["nested"] == [{"client_secret": MASK}]
    assert out["count"] == 3

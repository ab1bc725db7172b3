"""The sandbox behaves like IICS: v2/v3 logins and sessions, the POD's resources, its
failure switches, and the runner."""

from __future__ import annotations

import asyncio
import hashlib
import ssl

import trustme
from helpers import (
    DEMO,
    ORG_UUID,
    StartSandbox,
    get_agents,
    jwt_claims,
    sandbox_v2_login,
)
from yarl import URL

from proxy.sandbox import expected_sha256

# A whole second: expiry arithmetic on it is exact.
CLOCK_START = 1_750_000_000.0


# --- IICS v2 / v3 login and sessions ---


async def test_v2_login_returns_user_object_pointing_at_pod(sandbox, http):
    url = sandbox.urls.login + "/ma/api/v2/user/login"
    async with http.post(url, json=DEMO) as response:
        body = await response.json()
    assert response.status == 200
    assert body["@type"] == "user"
    assert body["serverUrl"] == sandbox.urls.pod + "/saas"
    assert len(body["icSessionId"]) == 22
    assert (len(body["orgId"]), len(body["orgUuid"])) == (6, 22)
    assert body["forceChangePassword"] is False
    [seen] = sandbox.state.logins_for("iics-v2-login")
    assert seen.method == "POST" and seen.json() == DEMO


async def test_v2_login_refuses_bad_password_and_journals_the_attempt(sandbox, http):
    url = sandbox.urls.login + "/ma/api/v2/user/login"
    async with http.post(url, json={"username": "demo", "password": "nope"}) as response:
        body = await response.json()
    assert response.status == 403
    assert body == {
        "@type": "error",
        "code": "UI_10000",
        "description": "User name or password is not valid.",
        "statusCode": 403,
    }
    assert len(sandbox.state.logins_for("iics-v2-login")) == 1
    assert sandbox.state.iics_sessions == {}


async def test_v2_login_answers_malformed_json_with_400(sandbox, http):
    url = sandbox.urls.login + "/ma/api/v2/user/login"
    async with http.post(url, data=b"{not json", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400
        assert (await r.json())["@type"] == "error"


async def test_v3_login_shape_and_failure(sandbox, http):
    url = sandbox.urls.login + "/saas/public/core/v3/login"
    async with http.post(url, json=DEMO) as response:
        body = await response.json()
    assert response.status == 200
    assert body["products"][0] == {
        "name": "Integration Cloud",
        "baseApiUrl": sandbox.urls.pod + "/saas",
    }
    assert body["userInfo"]["orgId"] == ORG_UUID
    assert body["userInfo"]["status"] == "Active"
    session_id = body["userInfo"]["sessionId"]
    assert await get_agents(http, sandbox, session_id) == 200

    async with http.post(url, json={"username": "demo", "password": "x"}) as response:
        error = (await response.json())["error"]
    assert response.status == 403
    assert error["code"] == "IDS_085" and error["details"] is None and error["requestId"]


async def test_session_slides_while_used_and_dies_when_idle(sandbox, http, clock):
    session_id = await sandbox_v2_login(http, sandbox)
    for _ in range(3):
        clock.advance(1700)
        assert await get_agents(http, sandbox, session_id) == 200
    clock.advance(1800)
    url = sandbox.urls.pod + "/saas/api/v2/agent"
    async with http.get(url, headers={"icSessionId": session_id}) as response:
        body = await response.json()
    assert response.status == 401
    assert body["code"] == "AUTH_01" and body["statusCode"] == 401


async def test_dead_session_on_v3_path_uses_v3_error_shape(sandbox, http):
    url = sandbox.urls.pod + "/saas/public/core/v3/objects"
    async with http.get(url, headers={"INFA-SESSION-ID": "unknown"}) as response:
        body = await response.json()
    assert response.status == 401
    assert body["error"]["code"] == "AUTH_01"


async def test_v2_path_falls_back_to_infa_session_id_header(sandbox, http):
    session_id = await sandbox_v2_login(http, sandbox)
    url = sandbox.urls.pod + "/saas/api/v2/agent"
    async with http.get(url, headers={"INFA-SESSION-ID": session_id}) as response:
        assert response.status == 200
        assert len(await response.json()) == 2


async def test_jwt_org_session_expires_absolutely(sandbox, http, clock):
    sandbox.state.iics_users["demo"].session_kind = "jwt"
    session_id = await sandbox_v2_login(http, sandbox)
    assert jwt_claims(session_id)["exp"] == int(clock.now()) + 1800
    clock.advance(1000)
    assert await get_agents(http, sandbox, session_id) == 200
    clock.advance(800)
    assert await get_agents(http, sandbox, session_id) == 401


async def test_expire_helpers_end_sessions(sandbox, http):
    first = await sandbox_v2_login(http, sandbox)
    second = await sandbox_v2_login(http, sandbox)
    sandbox.state.expire_session(first)
    assert await get_agents(http, sandbox, first) == 401
    assert await get_agents(http, sandbox, second) == 200
    sandbox.state.expire_all_sessions()
    assert await get_agents(http, sandbox, second) == 401


async def test_logouts_end_the_session(sandbox, http):
    session_id = await sandbox_v2_login(http, sandbox)
    async with http.post(
        sandbox.urls.pod + "/saas/api/v2/user/logout", headers={"icSessionId": session_id}
    ) as response:
        assert response.status == 200
    assert await get_agents(http, sandbox, session_id) == 401

    session_id = await sandbox_v2_login(http, sandbox)
    url = sandbox.urls.login + "/saas/public/core/v3/logout"
    async with http.post(url, headers={"INFA-SESSION-ID": session_id}) as response:
        assert (response.status, await response.json()) == (200, {})
    async with http.post(url, headers={"INFA-SESSION-ID": session_id}) as response:
        assert response.status == 401
    assert [seen.path for seen in sandbox.state.requests_for("iics-login-host")] == [
        "/saas/public/core/v3/logout"
    ] * 2


async def test_logoutall_ends_every_session_of_the_org(sandbox, http):
    sessions = [await sandbox_v2_login(http, sandbox) for _ in range(2)]
    url = sandbox.urls.login + "/ma/api/v2/user/logoutall"
    async with http.post(url, json={"@type": "logout", **DEMO}) as response:
        assert response.status == 200
    assert [await get_agents(http, sandbox, sid) for sid in sessions] == [401, 401]
    assert len(sandbox.state.requests_to("/ma/api/v2/user/logoutall")) == 1


async def test_ma_paths_on_login_host_take_ic_session_id(sandbox, http):
    session_id = await sandbox_v2_login(http, sandbox)
    url = sandbox.urls.login + "/ma/api/v2/user"
    async with http.get(url, headers={"icSessionId": session_id}) as response:
        users = await response.json()
    assert response.status == 200
    assert [user["name"] for user in users] == ["demo"]
    async with http.get(url) as response:
        assert response.status == 401


# --- POD resources ---


async def test_export_streams_exact_bytes(sandbox, http):
    session_id = await sandbox_v2_login(http, sandbox)
    size = 5 * 1024 * 1024 + 7
    url = sandbox.urls.pod + f"/saas/public/core/v3/export/size-{size}/package"
    digest = hashlib.sha256()
    async with http.get(url, headers={"INFA-SESSION-ID": session_id}) as response:
        assert response.status == 200
        assert response.content_type == "application/zip"
        assert response.content_length == size
        async for chunk in response.content.iter_chunked(256 * 1024):
            digest.update(chunk)
    assert digest.hexdigest() == expected_sha256(size)


async def test_import_hashes_streamed_body(sandbox, http):
    session_id = await sandbox_v2_login(http, sandbox)
    payload = bytes(range(256)) * 4096
    url = sandbox.urls.pod + "/saas/public/core/v3/import/package"
    headers = {"INFA-SESSION-ID": session_id, "Content-Type": "application/zip"}
    async with http.post(url, data=payload, headers=headers) as response:
        body = await response.json()
    assert body["size"] == len(payload)
    assert body["sha256"] == hashlib.sha256(payload).hexdigest()
    [seen] = sandbox.state.requests_to("/saas/public/core/v3/import/package")
    assert seen.body is None


async def test_objects_echo_raw_query_byte_for_byte(sandbox, http):
    session_id = await sandbox_v2_login(http, sandbox)
    raw = "q=type==%27DTEMPLATE%27%20and%20tag==%27a%2Bb%27&limit=2"
    url = sandbox.urls.pod + "/saas/public/core/v3/objects?" + raw
    headers = {"INFA-SESSION-ID": session_id}
    async with http.get(URL(url, encoded=True), headers=headers) as response:
        body = await response.json()
    assert body["rawQuery"] == raw
    assert body["count"] == 2
    [seen] = sandbox.state.requests_to("/saas/public/core/v3/objects")
    assert seen.url == url


async def test_echo_shows_method_headers_and_body(sandbox, http):
    session_id = await sandbox_v2_login(http, sandbox)
    url = sandbox.urls.pod + "/saas/api/v2/echo?a=%20b"
    headers = {"icSessionId": session_id, "X-Custom": "yes"}
    async with http.put(url, data=b"\xff\x00", headers=headers) as response:
        body = await response.json()
    assert body["method"] == "PUT"
    assert body["path"] == "/saas/api/v2/echo?a=%20b"
    assert body["headers"]["X-Custom"] == "yes"
    assert (body["body"], body["bodyEncoding"]) == ("/wA=", "base64")


async def test_other_paths_take_ids_session_id(sandbox, http):
    session_id = await sandbox_v2_login(http, sandbox)
    url = sandbox.urls.pod + "/echo"
    async with http.get(url, headers={"IDS-SESSION-ID": session_id}) as response:
        assert response.status == 200
    async with http.get(url, headers={"icSessionId": session_id}) as response:
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "AUTH_01"


async def test_redirect_status_and_slow_helpers(sandbox, http):
    session_id = await sandbox_v2_login(http, sandbox)
    headers = {"icSessionId": session_id}
    pod = sandbox.urls.pod
    async with http.get(pod + "/saas/api/v2/redirect", headers=headers, allow_redirects=False) as r:
        assert r.status == 302
        assert r.headers["Location"] == pod + "/saas/api/v2/agent"
    async with http.get(pod + "/saas/api/v2/status/401", headers=headers) as response:
        assert response.status == 401
        assert (await response.json())["statusCode"] == 401
    assert await get_agents(http, sandbox, session_id) == 200
    async with http.get(pod + "/saas/api/v2/slow?seconds=0.01", headers=headers) as response:
        assert response.status == 200


# --- Failure switches ---


async def test_login_failure_switches(sandbox, http):
    url = sandbox.urls.login + "/ma/api/v2/user/login"
    sandbox.state.login_status_override = 500
    async with http.post(url, json=DEMO) as response:
        assert response.status == 500
    sandbox.state.login_status_override = None
    sandbox.state.login_non_json = True
    async with http.post(url, json=DEMO) as response:
        assert response.status == 200 and response.content_type == "text/html"
    sandbox.state.login_non_json = False
    sandbox.state.server_url_override = "https://evil.example.com/saas"
    async with http.post(url, json=DEMO) as response:
        assert (await response.json())["serverUrl"] == "https://evil.example.com/saas"
    assert len(sandbox.state.logins_for("iics-v2-login")) == 3


# --- Runner ---


async def test_https_sandbox(tls_sandbox: StartSandbox, ca: trustme.CA, http):
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    sandbox = await tls_sandbox("127.0.0.1")
    assert all(
        url.startswith("https://127.0.0.1:")
        for url in (sandbox.urls.login, sandbox.urls.pod, sandbox.urls.ivanti)
    )
    url = sandbox.urls.login + "/saas/public/core/v3/login"
    async with http.post(url, json=DEMO, ssl=client_context) as response:
        body = await response.json()
    assert body["products"][0]["baseApiUrl"] == sandbox.urls.pod + "/saas"


async def test_login_delay_keeps_a_login_in_flight(sandbox, http):
    sandbox.state.login_delay = 0.5
    url = sandbox.urls.login + "/saas/public/core/v3/login"
    login = asyncio.create_task(http.post(url, json=DEMO))
    done, _ = await asyncio.wait({login}, timeout=0.15)
    assert not done
    assert len(sandbox.state.logins) == 1 and sandbox.state.iics_sessions == {}
    async with await login as response:
        assert response.status == 200
    assert len(sandbox.state.iics_sessions) == 1


async def test_small_import_body_is_journaled_and_hashed(sandbox, http):
    session_id = await sandbox_v2_login(http, sandbox)
    url = sandbox.urls.pod + "/saas/public/core/v3/import/package"
    headers = {"INFA-SESSION-ID": session_id, "Content-Type": "application/zip"}
    async with http.post(url, data=b"tiny", headers=headers) as response:
        assert (await response.json())["sha256"] == hashlib.sha256(b"tiny").hexdigest()
    [seen] = sandbox.state.requests_to("/saas/public/core/v3/import/package")
    assert seen.body == b"tiny"

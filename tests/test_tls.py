"""Outbound TLS: certificates are verified (the system's trust plus ``ca_bundle``),
``verify_tls: false`` is loud, and ``resolve`` keeps the original name for verification.

Every test talks to a sandbox serving HTTPS with a certificate from the throwaway CA
(the ``ca`` fixture), over real sockets.
"""

from __future__ import annotations

import ssl
import uuid
from typing import Any

import aiohttp
import pytest
import trustme
import truststore
from helpers import StartSandbox, base, fetch, iics_route, port_of, server_tls

from proxy.core.clock import ManualClock
from proxy.sandbox import Sandbox, SandboxState, run_sandbox

AGENT = "/iics/saas/api/v2/agent"


def assert_tls_login_failure(status: int, body: dict[str, Any], sandbox: Sandbox) -> None:
    assert status == 502
    assert body["error"]["code"] == "login_failed"
    assert "failed TLS verification" in body["error"]["message"]
    # The handshake failed: no login was received and nothing reached the POD.
    assert sandbox.state.logins == []
    assert sandbox.state.requests_for("iics-pod") == []


# --------------------------------------------------------------------------- verification


async def test_untrusted_certificate_fails_the_login_and_never_reaches_the_pod(
    tls_sandbox: StartSandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    sb = await tls_sandbox("127.0.0.1")
    server = await make_proxy(routes=[iics_route(sb)])
    status, body, _ = await fetch(http, "GET", base(server, AGENT))
    assert_tls_login_failure(status, body, sb)


async def test_ca_bundle_makes_the_certificate_trusted(
    tls_sandbox: StartSandbox, make_proxy, http: aiohttp.ClientSession, ca_bundle: str
) -> None:
    sb = await tls_sandbox("127.0.0.1")
    server = await make_proxy(routes=[iics_route(sb, upstream={"ca_bundle": ca_bundle})])
    status, _, _ = await fetch(http, "GET", base(server, AGENT))
    assert status == 200
    assert len(sb.state.logins_for("iics-v2-login")) == 1
    assert [r.url for r in sb.state.requests_for("iics-pod")] == [
        f"{sb.urls.pod}/saas/api/v2/agent"
    ]


async def test_certificate_for_another_name_fails_even_with_the_ca(
    tls_sandbox: StartSandbox, make_proxy, http: aiohttp.ClientSession, ca_bundle: str
) -> None:
    sb = await tls_sandbox("other.example")
    server = await make_proxy(routes=[iics_route(sb, upstream={"ca_bundle": ca_bundle})])
    status, body, _ = await fetch(http, "GET", base(server, AGENT))
    assert_tls_login_failure(status, body, sb)


async def test_ca_bundle_is_added_to_the_system_trust_store_not_substituted(
    tls_sandbox: StartSandbox,
    make_proxy,
    http: aiohttp.ClientSession,
    clock: ManualClock,
    ca_bundle: str,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The machine's store, simulated: another throwaway CA where OpenSSL (and so
    # truststore, on Linux) looks for the system bundle. Nothing but the system store
    # trusts it, so a login through it proves the system store is still consulted.
    system_ca = trustme.CA()
    system_file = tmp_path / "system.pem"
    system_ca.cert_pem.write_to_path(str(system_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(system_file))
    context = server_tls(system_ca, "127.0.0.1")
    async with run_sandbox(SandboxState(clock=clock), ssl_context=context) as by_system:
        by_bundle = await tls_sandbox("127.0.0.1")
        bundle = {"ca_bundle": ca_bundle}
        server = await make_proxy(
            routes=[
                iics_route(by_system, name="sys", prefix="/sys", upstream=bundle),
                iics_route(by_bundle, name="bun", prefix="/bun", upstream=bundle),
            ]
        )
        for prefix in ("/sys", "/bun"):
            status, body, _ = await fetch(http, "GET", base(server, f"{prefix}{AGENT[5:]}"))
            assert status == 200, body
    assert len(by_system.state.logins_for("iics-v2-login")) == 1
    assert len(by_bundle.state.logins_for("iics-v2-login")) == 1


async def test_upstreams_are_verified_by_the_operating_system_trust_store(
    tls_sandbox: StartSandbox, make_proxy, ca_bundle: str
) -> None:
    # truststore hands verification to the OS (Keychain, CryptoAPI; OpenSSL's system
    # store on Linux), so a corporate CA installed on a Mac or a Windows machine counts.
    sb = await tls_sandbox("127.0.0.1")
    server = await make_proxy(routes=[iics_route(sb, upstream={"ca_bundle": ca_bundle})])
    ctx = server.runtime.routes["iics"].client.ssl
    assert isinstance(ctx, truststore.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


async def test_verify_tls_false_accepts_any_certificate_and_warns_once(
    tls_sandbox: StartSandbox, make_proxy, http: aiohttp.ClientSession, logs
) -> None:
    sb = await tls_sandbox("127.0.0.1")
    # A name no other test uses: the warning is remembered per route name.
    name = f"insecure-{uuid.uuid4().hex[:8]}"
    route = iics_route(sb, name=name, upstream={"verify_tls": False})
    server = await make_proxy(routes=[route])
    for _ in range(3):
        status, _, _ = await fetch(http, "GET", base(server, AGENT))
        assert status == 200
        sb.state.expire_all_sessions()  # the next request re-logs in after a 401
    assert len(sb.state.logins_for("iics-v2-login")) == 3
    assert len(sb.state.requests_for("iics-pod")) == 5  # 3 answered, 2 refused with 401
    warnings = logs.events("tls_verification_disabled")
    assert [(w["route"], w["level"]) for w in warnings] == [(name, "warning")]


async def test_tls_upstream_verified_with_ca_bundle_added(
    tls_sandbox: StartSandbox, make_proxy, http: aiohttp.ClientSession, ca_bundle: str
) -> None:
    sb = await tls_sandbox("127.0.0.1")
    trusted = await make_proxy(routes=[iics_route(sb, upstream={"ca_bundle": ca_bundle})])
    async with http.get(base(trusted, AGENT)) as resp:
        assert resp.status == 200
    untrusted = await make_proxy(routes=[iics_route(sb)])
    async with http.get(base(untrusted, AGENT)) as resp:
        assert resp.status == 502
        error = (await resp.json())["error"]
        assert error["code"] == "login_failed"
        assert "TLS verification" in error["message"]


# --------------------------------------------------------------------------- resolve


def vendor_like_route(sb: Sandbox) -> dict[str, Any]:
    """A route to dm-us.sandbox.test whose serverUrl names na1.dm-us.sandbox.test, both
    mapped by ``resolve`` to the sandbox on loopback, as in production behind a DNS gap."""
    login, pod = port_of(sb.urls.login), port_of(sb.urls.pod)
    sb.state.server_url_override = f"https://na1.dm-us.sandbox.test:{pod}/saas"
    return iics_route(
        sb,
        login_url=f"https://dm-us.sandbox.test:{login}",
        upstream={
            "resolve": {
                f"dm-us.sandbox.test:{login}": f"127.0.0.1:{login}",
                f"na1.dm-us.sandbox.test:{pod}": f"127.0.0.1:{pod}",
            }
        },
    )


async def test_resolve_connects_to_the_mapped_address_and_verifies_the_original_name(
    tls_sandbox: StartSandbox, make_proxy, http: aiohttp.ClientSession, ca_bundle: str
) -> None:
    sb = await tls_sandbox("dm-us.sandbox.test", "na1.dm-us.sandbox.test")
    route = vendor_like_route(sb)
    route["upstream"]["ca_bundle"] = ca_bundle
    server = await make_proxy(routes=[route])
    status, _, _ = await fetch(http, "GET", base(server, AGENT))
    assert status == 200
    login, pod = port_of(sb.urls.login), port_of(sb.urls.pod)
    assert [r.url for r in sb.state.logins] == [
        f"https://dm-us.sandbox.test:{login}/ma/api/v2/user/login"
    ]
    assert [r.url for r in sb.state.requests_for("iics-pod")] == [
        f"https://na1.dm-us.sandbox.test:{pod}/saas/api/v2/agent"
    ]


async def test_resolve_does_not_verify_against_the_mapped_address(
    tls_sandbox: StartSandbox, make_proxy, http: aiohttp.ClientSession, ca_bundle: str
) -> None:
    sb = await tls_sandbox("127.0.0.1")
    route = vendor_like_route(sb)
    route["upstream"]["ca_bundle"] = ca_bundle
    server = await make_proxy(routes=[route])
    status, body, _ = await fetch(http, "GET", base(server, AGENT))
    assert_tls_login_failure(status, body, sb)
    assert "dm-us.sandbox.test" in body["error"]["message"]

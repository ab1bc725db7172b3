"""Forward-proxy mode (SPEC §9): tools whose vendor URLs are hard-coded.

The sandbox serves TLS under the vendor's own names (a throwaway trustme CA that the
proxy trusts through ``ca_bundle``), ``upstream.resolve`` sends those names to loopback,
and the clients — ``requests`` and ``aiohttp``, told only ``HTTPS_PROXY`` and a CA —
call ``https://dm-us.informaticacloud.com/...`` exactly as they would in production.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import requests
import trustme
import yaml

from proxy.cli.demo import forward_demo
from proxy.config import parse_config
from proxy.core.clock import ManualClock
from proxy.flows.base import PLACEHOLDER_SESSION
from proxy.sandbox import Sandbox, SandboxState, run_sandbox
from proxy.server.app import ProxyServer
from proxy.server.tls import LocalCA

ROOT = Path(__file__).resolve().parent.parent
LOGIN_HOST = "dm-us.informaticacloud.com"
POD_HOST = "na1.dm-us.informaticacloud.com"
LOGIN = f"https://{LOGIN_HOST}"
POD = f"https://{POD_HOST}"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def vendor_ca() -> trustme.CA:
    """The throwaway CA of the fake vendor (the proxy trusts it; clients never see it)."""
    return trustme.CA()


@pytest.fixture
async def vendor(clock: ManualClock, vendor_ca: trustme.CA) -> AsyncIterator[Sandbox]:
    """The sandbox, serving TLS for the vendor's names; its serverUrl names the POD."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    vendor_ca.issue_cert(LOGIN_HOST, f"*.{LOGIN_HOST}").configure_cert(tls)
    state = SandboxState(clock=clock, server_url_override=f"{POD}/saas")
    async with run_sandbox(state, ssl_context=tls) as sb:
        yield sb


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


@pytest.fixture
def ca_files(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "proxy-ca" / "ca.pem", tmp_path / "proxy-ca" / "ca-key.pem"


def forward_config(
    sb: Sandbox, vendor_ca: trustme.CA, tmp_path: Path, ca_files: tuple[Path, Path], **top: Any
) -> dict[str, Any]:
    bundle = tmp_path / "vendor-ca.pem"
    vendor_ca.cert_pem.write_to_path(str(bundle))
    upstream = top.pop("upstream", {})
    forward_proxy = top.pop("forward_proxy", {})
    routes = top.pop("routes", [])
    cert, key = ca_files
    return {
        "upstream": {
            # The tests point HTTPS_PROXY at the proxy itself: its own calls must not follow.
            "trust_env": False,
            "ca_bundle": str(bundle),
            "resolve": {
                f"{LOGIN_HOST}:443": f"127.0.0.1:{port_of(sb.urls.login)}",
                f"{POD_HOST}:443": f"127.0.0.1:{port_of(sb.urls.pod)}",
                **upstream.pop("resolve", {}),
            },
            **upstream,
        },
        "forward_proxy": {
            "enabled": True,
            "ca": {"cert": str(cert), "key": str(key)},
            **forward_proxy,
        },
        "routes": [
            {
                "name": "informatica",
                "match": {"host": [LOGIN_HOST, f"*.{LOGIN_HOST}"]},
                "auth": {
                    "type": "iics-password",
                    "pod": "dm-us",
                    "username": "demo",
                    "password": "demo-password",
                },
            },
            *routes,
        ],
        **top,
    }


StartProxy = Callable[..., Awaitable[ProxyServer]]


@pytest.fixture
def start_proxy(
    make_proxy: Any,
    vendor: Sandbox,
    vendor_ca: trustme.CA,
    tmp_path: Path,
    ca_files: tuple[Path, Path],
) -> StartProxy:
    async def start(**top: Any) -> ProxyServer:
        config = forward_config(vendor, vendor_ca, tmp_path, ca_files, **top)
        routes = config.pop("routes")
        server: ProxyServer = await make_proxy(routes=routes, **config)
        return server

    return start


def proxy_url(server: ProxyServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def use_proxy(monkeypatch: pytest.MonkeyPatch, server: ProxyServer, ca: Path | None) -> None:
    """What a user does: point the tool at the proxy and (normally) at the proxy's CA."""
    monkeypatch.setenv("HTTPS_PROXY", proxy_url(server))
    monkeypatch.setenv("HTTP_PROXY", proxy_url(server))
    if ca is not None:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))


# --------------------------------------------------------------------------- legacy tools


def v2_tool() -> dict[str, Any]:
    """A tool that knows only the vendor's URLs: logs in with its own (dummy) credentials,
    then follows serverUrl with the session id it got."""
    login = requests.post(
        f"{LOGIN}/ma/api/v2/user/login",
        json={"@type": "login", "username": "someone", "password": "not-the-real-one"},
        timeout=10,
    )
    login.raise_for_status()
    user = login.json()
    agents = requests.get(
        user["serverUrl"] + "/api/v2/agent",
        headers={"icSessionId": user["icSessionId"]},
        timeout=10,
    )
    return {"login": user, "status": agents.status_code, "agents": agents.json()}


def v3_tool() -> dict[str, Any]:
    login = requests.post(
        f"{LOGIN}/saas/public/core/v3/login",
        json={"username": "someone", "password": "not-the-real-one"},
        timeout=10,
    )
    login.raise_for_status()
    data = login.json()
    objects = requests.get(
        data["products"][0]["baseApiUrl"] + "/public/core/v3/objects?q=type=='DTEMPLATE'",
        headers={"INFA-SESSION-ID": data["userInfo"]["sessionId"]},
        timeout=10,
    )
    return {"login": data, "status": objects.status_code, "objects": objects.json()}


def assert_one_real_session(sb: Sandbox, pod_calls: int) -> str:
    """Exactly one real login (the proxy's, with its own credentials) served every call."""
    assert [(r.service, r.url) for r in sb.state.logins] == [
        ("iics-v2-login", f"{LOGIN}/ma/api/v2/user/login")
    ]
    assert sb.state.logins[0].json()["username"] == "demo"
    (real,) = sb.state.iics_sessions
    calls = sb.state.requests_for("iics-pod")
    assert len(calls) == pod_calls
    for call in calls:
        assert urlsplit(call.url).hostname == POD_HOST
        for header in ("icSessionId", "INFA-SESSION-ID", "IDS-SESSION-ID"):
            assert call.headers.get(header) == real, header
    return real


async def test_requests_tool_logs_in_v2_and_v3_and_follows_server_url(
    start_proxy: StartProxy,
    vendor: Sandbox,
    ca_files: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = await start_proxy()
    use_proxy(monkeypatch, server, ca_files[0])

    v2 = await asyncio.to_thread(v2_tool)
    assert v2["login"]["serverUrl"] == f"{POD}/saas"  # the vendor's own URL, not the proxy's
    assert v2["login"]["icSessionId"] == PLACEHOLDER_SESSION
    assert v2["status"] == 200 and v2["agents"][0]["@type"] == "agent"

    v3 = await asyncio.to_thread(v3_tool)
    assert v3["login"]["products"][0]["baseApiUrl"] == f"{POD}/saas"
    assert v3["login"]["userInfo"]["sessionId"] == PLACEHOLDER_SESSION
    assert v3["status"] == 200 and v3["objects"]["count"] == 3
    assert v3["objects"]["rawQuery"] == "q=type=='DTEMPLATE'"

    real = assert_one_real_session(vendor, pod_calls=2)
    assert real not in json.dumps([v2, v3])


async def test_aiohttp_tool_through_the_proxy(
    start_proxy: StartProxy,
    vendor: Sandbox,
    ca_files: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = await start_proxy()
    monkeypatch.setenv("HTTPS_PROXY", proxy_url(server))
    trust = ssl.create_default_context(cafile=str(ca_files[0]))
    async with aiohttp.ClientSession(trust_env=True) as session:
        login = f"{LOGIN}/saas/public/core/v3/login"
        async with session.post(login, json={"username": "x", "password": "y"}, ssl=trust) as resp:
            assert resp.status == 200
            data = await resp.json()
        base = data["products"][0]["baseApiUrl"]
        assert base == f"{POD}/saas"
        headers = {"INFA-SESSION-ID": data["userInfo"]["sessionId"]}
        async with session.get(f"{base}/api/v2/agent", headers=headers, ssl=trust) as resp:
            assert resp.status == 200
            assert (await resp.json())[0]["@type"] == "agent"
    assert_one_real_session(vendor, pod_calls=1)


async def test_client_tls_verifies_against_the_proxy_ca_and_fails_without_it(
    start_proxy: StartProxy,
    vendor: Sandbox,
    ca_files: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    logs: Any,
) -> None:
    server = await start_proxy()
    use_proxy(monkeypatch, server, ca=None)  # certifi's CAs only
    with pytest.raises(requests.exceptions.SSLError):
        await asyncio.to_thread(v2_tool)
    assert vendor.state.logins == []
    # The certificate the proxy presents is for the host asked for, issued by its CA.
    trust = ssl.create_default_context(cafile=str(ca_files[0]))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(f"CONNECT {POD_HOST}:443 HTTP/1.1\r\nHost: {POD_HOST}:443\r\n\r\n".encode())
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
    await writer.start_tls(trust, server_hostname=POD_HOST)
    peer = writer.get_extra_info("peercert")
    assert peer["subjectAltName"] == (("DNS", POD_HOST),)
    assert dict(x[0] for x in peer["issuer"])["commonName"] == "auth-proxy local CA"
    writer.close()
    await writer.wait_closed()


async def test_client_auth_is_checked_on_the_connect(
    start_proxy: StartProxy,
    vendor: Sandbox,
    ca_files: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = await start_proxy(client_auth={"tokens": ["tok-123"]})
    status, headers, _ = await raw_exchange(
        server.port, f"CONNECT {LOGIN_HOST}:443 HTTP/1.1\r\nHost: {LOGIN_HOST}\r\n\r\n".encode()
    )
    assert status == 401 and headers["x-auth-proxy-error"] == "client_unauthorized"
    # Clients put the proxy credentials in HTTPS_PROXY; the token goes as the password.
    use_proxy(monkeypatch, server, ca_files[0])
    monkeypatch.setenv("HTTPS_PROXY", f"http://tool:tok-123@127.0.0.1:{server.port}")
    result = await asyncio.to_thread(v2_tool)
    assert result["status"] == 200
    assert all("Proxy-Authorization" not in r.headers for r in vendor.state.requests)


# --------------------------------------------------------------------------- refusals


async def raw_exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the answer up to the close; (status, lowercase headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        raw = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers, body


async def test_connect_to_an_unrouted_host_is_refused(
    start_proxy: StartProxy, vendor: Sandbox, logs: Any
) -> None:
    server = await start_proxy()
    status, headers, body = await raw_exchange(
        server.port,
        b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n"
        b"Proxy-Authorization: Bearer secret-token-value\r\n\r\n",
    )
    assert status == 403
    assert headers["x-auth-proxy-error"] == "forbidden"
    error = json.loads(body)["error"]
    assert error["code"] == "forbidden" and "evil.example" in error["message"]
    [event] = logs.events("connect")
    assert (event["host"], event["decision"]) == ("evil.example", "refused")
    assert "secret-token-value" not in logs.text
    assert vendor.state.logins == [] and vendor.state.requests == []


async def test_absolute_form_requests_are_routed_by_host_only(
    start_proxy: StartProxy, vendor: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix_route = {
        "name": "by-prefix",
        "match": {"prefix": "/iics"},
        "auth": {"type": "ivanti-api-key", "url": vendor.urls.ivanti, "api_key": "demo-api-key"},
    }
    server = await start_proxy(routes=[prefix_route])
    use_proxy(monkeypatch, server, ca=None)

    def call(url: str) -> requests.Response:
        return requests.get(url, timeout=10)

    resp = await asyncio.to_thread(call, f"http://{POD_HOST}/saas/api/v2/agent?limit=1")
    assert resp.status_code == 200, resp.text
    assert resp.json()[0]["@type"] == "agent"
    # Sent on over verified TLS to the host named, with the real session.
    [seen] = vendor.state.requests_for("iics-pod")
    assert seen.url == f"{POD}/saas/api/v2/agent?limit=1"
    assert_one_real_session(vendor, pod_calls=1)
    # A host no route matches is refused, whatever its path looks like.
    for url in ("http://evil.example/saas/api/v2/agent", "http://evil.example/iics/x"):
        resp = await asyncio.to_thread(call, url)
        assert resp.status_code == 403, url
        assert resp.json()["error"]["code"] == "forbidden"
    assert len(vendor.state.requests) == 1


async def test_ordinary_requests_still_work_on_a_forward_proxy_listener(
    start_proxy: StartProxy, vendor: Sandbox, http: aiohttp.ClientSession
) -> None:
    server = await start_proxy()
    async with http.get(f"{proxy_url(server)}/-/healthz") as resp:
        assert resp.status == 200
    async with http.get(f"{proxy_url(server)}/saas/api/v2/agent") as resp:
        assert resp.status == 404  # no prefix route; and no Host route for 127.0.0.1
        assert resp.headers["X-Auth-Proxy-Error"] == "no_route"


# --------------------------------------------------------------------------- passthrough


@pytest.fixture
async def echo_server() -> AsyncIterator[int]:
    """A TCP echo server; it closes after the client's EOF."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def open_tunnel(port: int, target: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    return reader, writer


async def test_passthrough_hosts_are_tunnelled_byte_for_byte(
    start_proxy: StartProxy, echo_server: int, logs: Any
) -> None:
    server = await start_proxy(
        upstream={"resolve": {"echo.passthrough.test:443": f"127.0.0.1:{echo_server}"}},
        forward_proxy={"passthrough": ["*.passthrough.test"]},
    )
    reader, writer = await open_tunnel(server.port, "echo.passthrough.test:443")
    payload = bytes(range(256)) * 1024 + b"GET / HTTP/1.1\r\n\r\n"  # not parsed as HTTP
    writer.write(payload)
    writer.write_eof()  # a half-close passes through; the echo server then closes
    assert await asyncio.wait_for(reader.read(), timeout=10) == payload
    writer.close()
    [event] = logs.events("connect")
    assert (event["host"], event["decision"]) == ("echo.passthrough.test", "passthrough")


async def test_passthrough_tls_is_the_servers_own(start_proxy: StartProxy, tmp_path: Path) -> None:
    """The proxy's CA is not involved: the client sees the real server's certificate."""
    other_ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    other_ca.issue_cert("secure.example").configure_cert(server_tls)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello " + await reader.readline())
        await writer.drain()
        writer.close()

    tls_server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_tls)
    try:
        port = tls_server.sockets[0].getsockname()[1]
        server = await start_proxy(
            upstream={"resolve": {"secure.example:443": f"127.0.0.1:{port}"}},
            forward_proxy={"passthrough": ["secure.example"]},
        )
        reader, writer = await open_tunnel(server.port, "secure.example:443")
        client_tls = ssl.create_default_context()
        other_ca.configure_trust(client_tls)  # only the server's CA, not the proxy's
        await writer.start_tls(client_tls, server_hostname="secure.example")
        writer.write(b"world\n")
        assert await asyncio.wait_for(reader.read(), timeout=10) == b"hello world\n"
        writer.close()
    finally:
        tls_server.close()
        await tls_server.wait_closed()


async def test_unreachable_passthrough_host_is_a_502(
    start_proxy: StartProxy, unused_tcp_port: int
) -> None:
    server = await start_proxy(
        upstream={"resolve": {"down.example:443": f"127.0.0.1:{unused_tcp_port}"}},
        forward_proxy={"passthrough": ["down.example"]},
    )
    status, headers, _ = await raw_exchange(
        server.port, b"CONNECT down.example:443 HTTP/1.1\r\nHost: down.example\r\n\r\n"
    )
    assert status == 502 and headers["x-auth-proxy-error"] == "upstream_unreachable"


# --------------------------------------------------------------------------- the CA


async def test_the_ca_is_created_once_and_reused_across_restarts(
    vendor: Sandbox,
    vendor_ca: trustme.CA,
    tmp_path: Path,
    ca_files: tuple[Path, Path],
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cert, key = ca_files
    config = parse_config(
        {"listen": {"port": 0}, **forward_config(vendor, vendor_ca, tmp_path, ca_files)}
    )
    first = ProxyServer(config, clock=clock)
    await first.start()
    await first.stop(drain_timeout=1)
    created = cert.read_bytes()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert.stat().st_mode) == 0o644
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700

    second = ProxyServer(config, clock=clock)
    await second.start()
    try:
        assert cert.read_bytes() == created
        # A client that trusted the CA before the restart still does.
        use_proxy(monkeypatch, second, cert)
        assert (await asyncio.to_thread(v2_tool))["status"] == 200
    finally:
        await second.stop(drain_timeout=1)


def test_ca_files_must_come_in_pairs(tmp_path: Path) -> None:
    from proxy.config import ConfigError

    ca = LocalCA.load_or_create(tmp_path / "ca.pem", tmp_path / "ca-key.pem")
    assert ca.created
    assert not LocalCA.load_or_create(tmp_path / "ca.pem", tmp_path / "ca-key.pem").created
    (tmp_path / "ca-key.pem").unlink()
    with pytest.raises(ConfigError, match=r"ca-key\.pem does not"):
        LocalCA.load_or_create(tmp_path / "ca.pem", tmp_path / "ca-key.pem")


def run_ca_command(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", "ca", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ},
    )


def test_ca_command_prints_the_path_and_how_to_trust_it(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    route = {
        "name": "iics",
        "match": {"host": LOGIN_HOST},
        "auth": {"type": "iics-password", "pod": "dm-us", "username": "u", "password": "p"},
    }
    config.write_text(
        yaml.safe_dump(
            {
                "listen": {"port": 18443},
                "forward_proxy": {"enabled": True, "ca": {"cert": "ca.pem", "key": "ca-key.pem"}},
                "routes": [route],
            }
        )
    )
    result = run_ca_command(config)
    assert result.returncode == 0, result.stderr
    cert = tmp_path / "ca.pem"
    out = result.stdout
    assert "generated now" in out
    for expected in (
        f"certificate  {cert}",
        "export HTTPS_PROXY=http://127.0.0.1:18443",
        f"export REQUESTS_CA_BUNDLE={cert}",
        f"export SSL_CERT_FILE={cert}",
        f"export CURL_CA_BUNDLE={cert}",
        f"export NODE_EXTRA_CA_CERTS={cert}",
        f"keytool -importcert -alias auth-proxy -file {cert} -keystore",
    ):
        assert expected in out, expected
    assert "PRIVATE KEY" not in out + result.stderr
    assert stat.S_IMODE((tmp_path / "ca-key.pem").stat().st_mode) == 0o600
    created = cert.read_bytes()

    again = run_ca_command(config)
    assert again.returncode == 0 and "generated now" not in again.stdout
    assert cert.read_bytes() == created


def test_ca_command_notes_when_forward_proxy_is_off(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    route = {
        "name": "iics",
        "match": {"prefix": "/iics"},
        "auth": {"type": "iics-password", "pod": "dm-us", "username": "u", "password": "p"},
    }
    config.write_text(yaml.safe_dump({"routes": [route]}))
    result = run_ca_command(config)
    assert result.returncode == 0
    assert str(tmp_path / "ca.pem") in result.stdout
    assert "forward_proxy.enabled is false" in result.stderr


# --------------------------------------------------------------------------- the demo


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
async def test_every_line_printed_by_the_forward_proxy_demo_works(
    tmp_path: Path, clock: ManualClock
) -> None:
    async with forward_demo(0, tmp_path, clock=clock) as (_, lines):
        env = {
            **os.environ,
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        }
        for line in lines:
            process = await asyncio.create_subprocess_shell(
                line, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
            )
            out, err = await asyncio.wait_for(process.communicate(), timeout=30)
            assert process.returncode == 0, (line, err.decode())
            assert b"agent" in out or b"DTEMPLATE" in out or PLACEHOLDER_SESSION.encode() in out

"""TLS on the proxy's own listeners, and mutual TLS (README, Security, "A shared gateway").

Every certificate comes from the session's throwaway CAs (``ca``, ``other_ca``); clients
connect over real sockets. Rotation is tested in-process and on a real ``serve`` process
with two workers, reloaded by SIGHUP.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import shutil
import signal
import socket
import ssl
import uuid
import warnings
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from helpers import Upstream, fetch, run_cli, wait_for, write_config

from proxy.config import ListenTLS, parse_config
from proxy.server.app import ProxyServer
from proxy.server.listen_tls import server_context
from proxy.server.peers import peer_subject

TOKEN = "client-token-1"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def write_leaf(directory: Path, name: str, cert: trustme.LeafCert) -> dict[str, str]:
    """``cert`` (with its chain) and its key as PEM files; the ``tls`` settings naming them."""
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    cert_path.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key_path))
    return {"cert": str(cert_path), "key": str(key_path)}


def write_ca(directory: Path, ca: trustme.CA) -> str:
    path = directory / "client-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def client_tls(ca: trustme.CA, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
    """A client trusting ``ca``, presenting ``cert`` when given."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if cert is not None:
        cert.configure_cert(context)
    return context


async def served_name(port: int, ca: trustme.CA) -> str:
    """The common name of the certificate a new connection to ``port`` is shown."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls(ca))
    try:
        cert = writer.get_extra_info("peercert")
    finally:
        writer.close()
    return dict(rdn[0] for rdn in cert["subject"])["commonName"]


def handshake(port: int, context: ssl.SSLContext) -> None:
    """A TLS handshake with ``port``, blocking (the server's alert reaches the caller)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1"),
    ):
        pass


@pytest.fixture
def server_files(tmp_path: Path, ca: trustme.CA) -> dict[str, str]:
    """A server certificate for 127.0.0.1 from ``ca``, named "first"."""
    return write_leaf(tmp_path, "server", ca.issue_cert("127.0.0.1", common_name="first"))


@pytest.fixture
def client_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("ci@example.com", common_name="ci-scheduler", organization_name="Team")


def https(port: int, path: str = "/up/x") -> str:
    return f"https://127.0.0.1:{port}{path}"


# --------------------------------------------------------------------------- TLS


async def test_a_tls_listener_serves_https_and_plain_http_gets_no_answer(
    make_proxy, upstream: Upstream, server_files, ca, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(
        routes=[upstream.route()], listen={"host": "127.0.0.1", "port": 0, "tls": server_files}
    )
    answer = await fetch(http, "GET", https(server.port), ssl=client_tls(ca))
    assert answer.status == 200
    assert answer.body["path"] == "/x"
    with pytest.raises(aiohttp.ClientError):
        await fetch(http, "GET", f"http://127.0.0.1:{server.port}/up/x")
    assert len(upstream.seen) == 1  # the plain request went nowhere
    # The server kept serving.
    assert (await fetch(http, "GET", https(server.port), ssl=client_tls(ca))).status == 200


async def test_modern_tls_only(make_proxy, upstream: Upstream, server_files, ca) -> None:
    server = await make_proxy(
        routes=[upstream.route()], listen={"host": "127.0.0.1", "port": 0, "tls": server_files}
    )
    with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        old = client_tls(ca)
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        legacy = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        legacy.set_ciphers("DEFAULT:@SECLEVEL=0")
        legacy.minimum_version = ssl.TLSVersion.TLSv1
    ca.issue_cert("127.0.0.1").configure_cert(legacy)
    runner = web.ServerRunner(web.Server(lambda _request: web.Response()))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=legacy).start()
        # This client speaks TLS 1.1 with a server that still does ...
        await asyncio.to_thread(handshake, runner.addresses[0][1], old)
    finally:
        await runner.cleanup()
    with pytest.raises(ssl.SSLError):  # ... and the proxy refuses it
        await asyncio.to_thread(handshake, server.port, old)
    tls12 = client_tls(ca)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    tls12.set_alpn_protocols(["h2", "http/1.1"])
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=tls12)
    ssl_object = writer.get_extra_info("ssl_object")
    writer.close()
    assert ssl_object.version() == "TLSv1.2"
    assert ssl_object.selected_alpn_protocol() == "http/1.1"
    cipher = ssl_object.cipher()[0]
    assert cipher.startswith("ECDHE-") and ("GCM" in cipher or "CHACHA20" in cipher), cipher


async def test_a_client_that_never_completes_the_handshake_is_cut_off(
    clock, run_proxy, upstream: Upstream, server_files, ca
) -> None:
    """The bound on a request's head (README, Security: slow clients) covers the TLS
    handshake before it; it is read when the server starts."""
    listen = {"host": "127.0.0.1", "port": 0, "tls": server_files}
    config = parse_config({"listen": listen, "routes": [upstream.route()]})
    server = ProxyServer(config, clock=clock)
    server.header_timeout = 1.0
    await run_proxy(server)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, no handshake
    finally:
        writer.close()
    assert await served_name(server.port, ca) == "first"  # and the listener serves on


async def test_a_routes_listener_takes_the_main_listeners_tls_unless_it_names_a_host(
    make_proxy,
    upstream: Upstream,
    server_files,
    ca,
    http: aiohttp.ClientSession,
    unused_tcp_port_factory,
) -> None:
    inherits, plain = unused_tcp_port_factory(), unused_tcp_port_factory()
    routes = [
        upstream.route(name="inherits", match={"listen": {"port": inherits}}),
        upstream.route(name="plain", match={"listen": {"port": plain, "host": "127.0.0.1"}}),
    ]
    await make_proxy(routes=routes, listen={"host": "127.0.0.1", "port": 0, "tls": server_files})
    assert (await fetch(http, "GET", https(inherits, "/a"), ssl=client_tls(ca))).status == 200
    assert (await fetch(http, "GET", f"http://127.0.0.1:{plain}/b")).status == 200


# --------------------------------------------------------------------------- mutual TLS


@pytest.fixture
def mutual(tmp_path: Path, server_files, ca) -> dict[str, str]:
    return {**server_files, "client_ca": write_ca(tmp_path, ca)}


async def test_a_verified_client_certificate_authenticates_the_client(
    make_proxy, upstream: Upstream, mutual, ca, client_cert, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(
        routes=[upstream.route()],
        listen={"host": "127.0.0.1", "port": 0, "tls": mutual},
        client_auth={"tokens": [TOKEN]},
    )
    context = client_tls(ca, client_cert)
    answer = await fetch(http, "GET", https(server.port), ssl=context)  # no token
    assert answer.status == 200
    assert (await fetch(http, "GET", https(server.port, "/-/sessions"), ssl=context)).status == 200
    assert all("Proxy-Authorization" not in r.headers for r in upstream.seen)


async def test_client_auth_certificates_scope_the_clients_of_a_mutual_tls_listener(
    make_proxy, upstream: Upstream, mutual, ca, http: aiohttp.ClientSession
) -> None:
    """README, "Shared gateway": the verified subject picks the entry and its scope; a
    subject the list does not name is refused; a token, when sent, wins."""
    client_cert = ca.issue_cert(
        "ci@example.com",
        common_name="ci-scheduler",
        organization_name="Team",
        organization_unit_name="Batch",
    )
    server = await make_proxy(
        routes=[upstream.route(), upstream.route(name="other", prefix="/other")],
        listen={"host": "127.0.0.1", "port": 0, "tls": mutual},
        client_auth={
            "tokens": [{"name": "ops", "token": TOKEN, "admin": True}],
            "certificates": [
                {
                    "subject": "cn=ci-scheduler, ou=Batch, o=Team",
                    "routes": ["up"],
                    "methods": ["GET"],
                }
            ],
        },
    )
    listed = client_tls(ca, client_cert)
    assert (await fetch(http, "GET", https(server.port), ssl=listed)).status == 200
    refused = [
        await fetch(http, "POST", https(server.port), ssl=listed, data=b"{}"),
        await fetch(http, "GET", https(server.port, "/other/x"), ssl=listed),
        await fetch(http, "GET", https(server.port, "/-/sessions"), ssl=listed),
    ]
    assert [(r.status, r.body["error"]["code"]) for r in refused] == [(403, "forbidden")] * 3
    assert [r.body["error"]["message"] for r in refused] == [
        'client "ci-scheduler" may not use method POST on route "up"',
        'client "ci-scheduler" may not use route "other"',
        'client "ci-scheduler" may not use the admin endpoints',
    ]
    stranger = client_tls(ca, ca.issue_cert("x@example.com", common_name="stranger"))
    unknown = await fetch(http, "GET", https(server.port), ssl=stranger)
    assert (unknown.status, unknown.body["error"]["code"]) == (401, "client_unauthorized")
    token = {"Proxy-Authorization": f"Bearer {TOKEN}"}
    as_ops = await fetch(http, "GET", https(server.port, "/other/x"), ssl=stranger, headers=token)
    assert as_ops.status == 200
    assert [r.path for r in upstream.seen] == ["/x", "/x"]


async def test_without_a_certificate_from_the_client_ca_there_is_no_exchange(
    make_proxy, upstream: Upstream, mutual, ca, other_ca, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(
        routes=[upstream.route()],
        listen={"host": "127.0.0.1", "port": 0, "tls": mutual},
        client_auth={"tokens": [TOKEN]},
    )
    stranger = other_ca.issue_cert("ci@example.com", common_name="ci-scheduler")
    token = {"Proxy-Authorization": f"Bearer {TOKEN}"}
    for context in (client_tls(ca), client_tls(ca, stranger)):
        with pytest.raises(aiohttp.ClientError):
            await fetch(http, "GET", https(server.port), ssl=context, headers=token)
    assert upstream.seen == []


async def test_peer_subject_is_the_verified_certificates_rfc4514_subject(
    tmp_path: Path, mutual, server_files, ca, http: aiohttp.ClientSession
) -> None:
    """The interface client scopes build on, over the listeners' own TLS settings."""

    async def subject(request: web.BaseRequest) -> web.Response:
        return web.json_response({"subject": peer_subject(request)})

    cert = ca.issue_cert(
        "ci@example.com",
        common_name="ci-scheduler",
        organization_name="Team",
        organization_unit_name="Platform",
    )
    runner = web.ServerRunner(web.Server(subject))
    await runner.setup()
    try:
        ports = {}
        for name, settings in (("mutual", mutual), ("tls", server_files), ("plain", None)):
            context = None if settings is None else server_context("t", ListenTLS(**settings))[0]
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
            await site.start()
            ports[name] = runner.addresses[-1][1]
        mtls = await fetch(http, "GET", https(ports["mutual"], "/"), ssl=client_tls(ca, cert))
        assert mtls.body == {"subject": "CN=ci-scheduler,OU=Platform,O=Team"}
        # A client certificate is not asked for without client_ca.
        tls = await fetch(http, "GET", https(ports["tls"], "/"), ssl=client_tls(ca, cert))
        assert tls.body == {"subject": None}
        plain = await fetch(http, "GET", f"http://127.0.0.1:{ports['plain']}/")
        assert plain.body == {"subject": None}
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------- rotation


async def test_a_reload_rotates_the_certificate_for_new_connections(
    tmp_path: Path, file_proxy, upstream: Upstream, server_files, ca
) -> None:
    config = tmp_path / "config.yaml"
    listen = {"host": "127.0.0.1", "port": 0, "tls": server_files}
    write_config(config, [upstream.route()], listen=listen)
    server = await file_proxy(config)
    assert await served_name(server.port, ca) == "first"
    write_leaf(tmp_path, "server", ca.issue_cert("127.0.0.1", common_name="second"))
    assert await served_name(server.port, ca) == "first"  # files are read at reload
    result = await server.reload_from_file()
    assert result.ok and result.restart_needed == []
    assert await served_name(server.port, ca) == "second"
    # A key that is not the certificate's fails the reload; the last good pair stays.
    other = write_leaf(tmp_path, "other", ca.issue_cert("127.0.0.1", common_name="third"))
    shutil.copyfile(other["key"], server_files["key"])
    result = await server.reload_from_file()
    assert not result.ok
    assert result.error is not None and "listen.tls.key" in result.error
    assert await served_name(server.port, ca) == "second"


async def test_sighup_rotates_the_certificate_in_every_worker(
    serve_routes, upstream: Upstream, tmp_path: Path, ca, unused_tcp_port_factory
) -> None:
    port = unused_tcp_port_factory()
    files = write_leaf(tmp_path, "server", ca.issue_cert("127.0.0.1", common_name="first"))
    tls_listener = {"listen": {"port": port, "host": "127.0.0.1", "tls": files}}
    served = await serve_routes([upstream.route(match=tls_listener)], workers=2)

    def workers_of(request_id: str) -> list[int]:
        lines = [e for e in served.events() if e.get("request_id") == request_id]
        return [e["worker"] for e in lines if e["event"] == "request"]  # its access line

    async def names_by_worker() -> dict[int, set[str]]:
        """The certificate each worker showed, by new connections (a bounded number)
        until both workers answered."""
        names: dict[int, set[str]] = {}
        for _ in range(60):
            request_id = f"tls-{uuid.uuid4().hex}"
            name = await _name_and_get(port, ca, request_id)
            await wait_for(lambda rid=request_id: bool(workers_of(rid)), what="its access line")
            (worker,) = workers_of(request_id)
            names.setdefault(worker, set()).add(name)
            if len(names) == 2:
                return names
        raise AssertionError("one worker never answered")

    assert await names_by_worker() == {0: {"first"}, 1: {"first"}}
    write_leaf(tmp_path, "server", ca.issue_cert("127.0.0.1", common_name="second"))
    served.proc.send_signal(signal.SIGHUP)
    await wait_for(lambda: served.count("config_reloaded") == 2, what="both workers reloaded")
    assert await names_by_worker() == {0: {"second"}, 1: {"second"}}


async def _name_and_get(port: int, ca: trustme.CA, request_id: str) -> str:
    """One GET on a connection of its own (so the kernel picks a worker each time); the
    common name of the certificate that connection was shown."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls(ca))
    try:
        cert = writer.get_extra_info("peercert")
        writer.write(
            f"GET /up HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: {request_id}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
    return dict(rdn[0] for rdn in cert["subject"])["commonName"]


# --------------------------------------------------------------------------- start-up


async def test_listening_beyond_loopback_without_tls_is_logged_at_start(
    make_proxy, upstream: Upstream, server_files, logs
) -> None:
    everywhere = {"host": "0.0.0.0", "port": 0}
    await make_proxy(routes=[upstream.route()], listen=everywhere, client_auth={"tokens": [TOKEN]})
    (warning,) = logs.events("listener_without_tls")
    assert warning["warning"].startswith("listen: 0.0.0.0:")
    assert "clear text" in warning["warning"]
    await make_proxy(
        routes=[upstream.route()],
        listen={**everywhere, "tls": server_files},
        client_auth={"tokens": [TOKEN]},
    )
    assert len(logs.events("listener_without_tls")) == 1  # not for the TLS one


async def test_a_certificate_that_expires_soon_is_logged_at_start(
    make_proxy, upstream: Upstream, tmp_path: Path, ca, logs
) -> None:
    soon = ca.issue_cert("127.0.0.1", not_after=_now() + datetime.timedelta(days=3))
    files = write_leaf(tmp_path, "soon", soon)
    await make_proxy(
        routes=[upstream.route()], listen={"host": "127.0.0.1", "port": 0, "tls": files}
    )
    (warning,) = logs.events("tls_certificate_expires_soon")
    assert warning["warning"].startswith("listen.tls.cert: ")
    assert "in 2 day(s)" in warning["warning"]


# --------------------------------------------------------------------------- check


def check_json(config: Path) -> tuple[int, dict[str, Any]]:
    result = run_cli("check", "--json", "-c", str(config))
    return result.returncode, json.loads(result.stdout)


def key_route(name: str, **match: Any) -> dict[str, Any]:
    auth = {"type": "ivanti-api-key", "tenant": "t.example", "api_key": "k"}
    return {"name": name, "match": match or {"prefix": f"/{name}"}, "auth": auth}


def test_check_and_serve_refuse_unusable_tls_files(
    tmp_path: Path, ca, unused_tcp_port_factory
) -> None:
    good = write_leaf(tmp_path, "good", ca.issue_cert("127.0.0.1"))
    other = write_leaf(tmp_path, "other", ca.issue_cert("127.0.0.1"))
    expired = write_leaf(
        tmp_path,
        "expired",
        ca.issue_cert("127.0.0.1", not_after=_now() - datetime.timedelta(days=1)),
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")

    def listener(tls: dict[str, str]) -> dict[str, Any]:
        port = unused_tcp_port_factory()
        return {"listen": {"port": port, "host": "127.0.0.1", "tls": tls}}

    routes = [
        key_route("mismatch", **listener({**good, "key": other["key"]})),
        key_route("expired", **listener(expired)),
        key_route("ca", **listener({**good, "client_ca": str(garbage)})),
    ]
    config = tmp_path / "c.yaml"
    missing = {"cert": str(tmp_path / "nowhere.pem"), "key": good["key"]}
    write_config(config, routes, listen={"host": "127.0.0.1", "port": 0, "tls": missing})
    code, out = check_json(config)
    assert code == 2
    problems = {p["key"]: p["message"] for p in out["problems"]}
    assert "does not exist" in problems["listen.tls.cert"]
    assert "is not the key of the certificate" in problems["routes[0].match.listen.tls.key"]
    assert "expired on" in problems["routes[1].match.listen.tls.cert"]
    assert "holds no PEM certificate" in problems["routes[2].match.listen.tls.client_ca"]
    served = run_cli("serve", "-c", str(config))
    assert served.returncode == 2
    assert "config error: routes[1].match.listen.tls.cert: " in served.stderr


def test_check_warns_of_expiry_and_of_plain_listeners_beyond_loopback(
    tmp_path: Path, ca, unused_tcp_port_factory
) -> None:
    soon = ca.issue_cert("127.0.0.1", not_after=_now() + datetime.timedelta(days=10))
    files = write_leaf(tmp_path, "soon", soon)
    config = tmp_path / "c.yaml"
    plain_everywhere = {"listen": {"port": unused_tcp_port_factory(), "host": "0.0.0.0"}}
    write_config(
        config,
        [key_route("a"), key_route("b", **plain_everywhere)],
        listen={"host": "127.0.0.1", "port": 0, "tls": files},
        client_auth={"tokens": [TOKEN]},
    )
    code, out = check_json(config)
    assert code == 0, out
    warned = {w["key"]: w["message"] for w in out["warnings"]}
    assert set(warned) == {"listen.tls.cert", "routes[1].match.listen"}
    assert "expires on" in warned["listen.tls.cert"]
    assert "without TLS" in warned["routes[1].match.listen"]
    text = run_cli("check", "-c", str(config))
    assert text.returncode == 0
    assert "auth-proxy: warning: listen.tls.cert: " in text.stderr


def test_mutual_tls_counts_as_client_auth_beyond_loopback(tmp_path: Path, server_files, ca) -> None:
    config = tmp_path / "c.yaml"
    tls = {**server_files, "client_ca": write_ca(tmp_path, ca)}
    write_config(config, [key_route("a")], listen={"host": "0.0.0.0", "port": 0, "tls": tls})
    code, out = check_json(config)
    assert code == 0, out
    assert out["warnings"] == []
    # TLS alone authenticates no one: without client_ca the rule still asks for client_auth.
    write_config(
        config, [key_route("a")], listen={"host": "0.0.0.0", "port": 0, "tls": server_files}
    )
    code, out = check_json(config)
    assert code == 2
    (problem,) = out["problems"]
    assert problem["key"] == "listen.host"
    assert "client_auth or tls.client_ca" in problem["message"]


def test_forward_proxy_mode_keeps_its_main_listener_plain(tmp_path: Path, server_files) -> None:
    config = tmp_path / "c.yaml"
    write_config(
        config,
        [key_route("a", host="api.example.com")],
        listen={"host": "127.0.0.1", "port": 0, "tls": server_files},
        forward_proxy={"enabled": True},
    )
    code, out = check_json(config)
    assert code == 2
    (problem,) = out["problems"]
    assert problem["key"] == "listen.tls"
    assert "forward-proxy mode" in problem["message"]

"""Helpers for tests: plain functions and classes (the fixtures are in conftest.py).

Sections: routes and config files; HTTP calls; metrics; the bare upstream; processes;
logs; what the sandbox saw; the sandbox called directly; tokens; TLS; forward-proxy mode;
login flows fed without sockets.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, cast
from urllib.parse import urlsplit

import aiohttp
import pytest
import requests
import trustme
import yaml
from aiohttp import web
from multidict import CIMultiDictProxy
from prometheus_client.parser import text_string_to_metric_families

from proxy.core.secrets import Secret
from proxy.flows.base import FlowGen, LoginRequest, LoginResponse, Reply, Step
from proxy.flows.driver import drive
from proxy.sandbox import Sandbox, SeenRequest
from proxy.server.app import ProxyServer

ROOT = Path(__file__).resolve().parent.parent
ORG_UUID = "5Xq2jG0mLwKzYbPdRt7sUe"  # the sandbox's demo org
DEMO = {"username": "demo", "password": "demo-password"}  # the sandbox's demo user
# The vendor's real names: flows are fed answers from them; in forward-proxy mode the
# sandbox serves them (``upstream.resolve`` sends them to loopback).
LOGIN_HOST = "dm-us.informaticacloud.com"
POD_HOST = "na1.dm-us.informaticacloud.com"
LOGIN = f"https://{LOGIN_HOST}"
POD = f"https://{POD_HOST}"

# What the factory fixtures in conftest.py hand a test.
RunProxy = Callable[[ProxyServer], Awaitable[ProxyServer]]
ProxyFactory = Callable[..., Awaitable[ProxyServer]]
FileProxy = Callable[[Path], Awaitable[ProxyServer]]
ServeProcess = Callable[[Path, int], Awaitable["Served"]]
ServeRoutes = Callable[..., Awaitable["Served"]]
StartSandbox = Callable[..., Awaitable[Sandbox]]

# --------------------------------------------------------------------------- routes, config

ROUTE_KEYS = ("headers", "upstream", "allowed_hosts")


def _split(extra: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    route = {k: extra.pop(k) for k in ROUTE_KEYS if k in extra}
    return extra, route


def prefix_route(name: str, auth: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A route named ``name``, matched by the prefix ``/name``."""
    return {"name": name, "match": {"prefix": f"/{name}"}, "auth": auth, **extra}


def iics_route(
    sandbox: Sandbox, *, name: str = "iics", prefix: str = "/iics", **extra: Any
) -> dict[str, Any]:
    """An iics-password route to the sandbox; route-level keys go to the route, the rest to auth."""
    auth, route = _split(extra)
    auth = {"type": "iics-password", "login_url": sandbox.urls.login, **DEMO, **auth}
    return {"name": name, "match": {"prefix": prefix}, "auth": auth, **route}


def ivanti_key_route(
    sandbox: Sandbox, *, name: str = "ivanti", prefix: str = "/ivanti", **extra: Any
) -> dict[str, Any]:
    auth, route = _split(extra)
    auth = {"type": "ivanti-api-key", "url": sandbox.urls.ivanti, "api_key": "demo-api-key", **auth}
    return {"name": name, "match": {"prefix": prefix}, "auth": auth, **route}


def dead_route(port: int) -> dict[str, Any]:
    """An api-key route ``/dead`` to a loopback port where nothing listens."""
    auth = {"type": "ivanti-api-key", "url": f"http://127.0.0.1:{port}", "api_key": "k"}
    return {"name": "dead", "match": {"prefix": "/dead"}, "auth": auth}


def ivanti_session_route(
    sandbox: Sandbox, *, name: str = "ivanti", prefix: str = "/ivanti", **extra: Any
) -> dict[str, Any]:
    """An ivanti-session route to the sandbox's tenant, as its demo user in role Admin."""
    auth, route = _split(extra)
    auth = {
        "type": "ivanti-session",
        "url": sandbox.urls.ivanti,
        "tenant": sandbox.state.ivanti_tenant,
        **DEMO,
        "role": "Admin",
        **auth,
    }
    return {"name": name, "match": {"prefix": prefix}, "auth": auth, **route}


def write_config(path: Path, routes: list[dict[str, Any]], **top: Any) -> None:
    """A config file; its sessions are per process (``session_store: memory``) unless
    ``top`` says otherwise."""
    data = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "session_store": {"type": "memory"},
        **top,
        "routes": routes,
    }
    path.write_text(yaml.safe_dump(data))


# --------------------------------------------------------------------------- HTTP


def base(server: ProxyServer, prefix: str = "") -> str:
    return f"http://127.0.0.1:{server.port}{prefix}"


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


class Fetched(NamedTuple):
    status: int
    body: Any  # the parsed JSON, or the text when it is not JSON
    headers: CIMultiDictProxy[str]


async def fetch(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Fetched:
    """One request, read to the end."""
    async with http.request(method, url, **kw) as resp:
        raw = await resp.read()
    try:
        body = json.loads(raw)
    except ValueError:
        body = raw.decode("utf-8", "replace")
    return Fetched(resp.status, body, resp.headers)


async def status_of(http: aiohttp.ClientSession, url: str, **kw: Any) -> int:
    async with http.get(url, **kw) as resp:
        await resp.read()
        return resp.status


async def outcome(url: str, **headers: str) -> tuple[int, str]:
    """Status and error code of one GET on a new connection (so workers share the load)."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get(url, headers=headers) as resp,
    ):
        await resp.read()
        return resp.status, resp.headers.get("X-Auth-Proxy-Error", "")


async def wait_for(
    condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition"
) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


async def wait_for_async(
    condition: Callable[[], Awaitable[bool]], timeout: float = 5.0, what: str = "condition"
) -> None:
    """``wait_for`` with a condition that must be awaited (one HTTP call, say)."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_for_status(http: aiohttp.ClientSession, url: str, status: int) -> None:
    """Ask ``url`` until it answers ``status``; fail the test after 10 seconds."""
    deadline = time.monotonic() + 10
    while await status_of(http, url) != status:
        assert time.monotonic() < deadline, f"{url} never answered {status}"
        await asyncio.sleep(0.02)


async def raw_exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read one answer; (status, lowercase headers, body).

    The body is ``Content-Length`` long, or (without one) whatever comes until the close.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        if "content-length" in headers:
            body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
        else:
            body = await asyncio.wait_for(reader.read(), 10)
        return int(lines[0].split()[1]), headers, body
    finally:
        writer.close()


# --------------------------------------------------------------------------- metrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: aiohttp.ClientSession, url: str) -> Samples:
    """Every sample ``/-/metrics`` at ``url`` exposes, by name and labels."""
    async with http.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


# --------------------------------------------------------------------------- a bare upstream

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _echo(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body": body.decode("latin-1"),
        }
    )


class Upstream:
    """A programmable upstream for forwarding tests (no vendor semantics)."""

    def __init__(self) -> None:
        self.port = 0
        self.handler: Handler = _echo
        self.seen: list[web.Request] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        async def dispatch(request: web.Request) -> web.StreamResponse:
            self.seen.append(request)
            return await self.handler(request)

        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", dispatch)
        return app

    def route(self, *, name: str = "up", prefix: str = "/up", **extra: Any) -> dict[str, Any]:
        """An ivanti-api-key route to this upstream: no login, a fixed injected header."""
        auth = {"type": "ivanti-api-key", "url": self.url, "api_key": "upstream-key"}
        return {"name": name, "match": {"prefix": prefix}, "auth": auth, **extra}


# --------------------------------------------------------------------------- processes


class Served:
    """``auth-proxy serve -c config`` running as a real process; its stdout goes to a file."""

    def __init__(
        self, proc: subprocess.Popen[bytes], config: Path, port: int, out: Path, err: Path
    ) -> None:
        self.proc = proc
        self.config = config
        self.port = port
        self.out = out
        self.err = err

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def rewrite(self, routes: list[dict[str, Any]], **top: Any) -> None:
        """Write a new version of its config (the listener stays where it is)."""
        write_config(self.config, routes, listen={"host": "127.0.0.1", "port": self.port}, **top)

    def events(self) -> list[dict[str, Any]]:
        """Every stdout line so far, each of which must be one JSON object."""
        return [json.loads(line) for line in self.out.read_text().splitlines() if line]

    def count(self, event: str) -> int:
        return sum(1 for e in self.events() if e["event"] == event)

    async def finish(self) -> list[dict[str, Any]]:
        """Wait for the process to exit (after a signal) and require exit code 0."""
        code = await asyncio.to_thread(self.proc.wait, 20)
        assert code == 0, self.err.read_text()
        return self.events()


async def spawn_served(
    config: Path,
    port: int,
    workdir: Path,
    *,
    launcher: Sequence[str] = ("-m", "proxy"),
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    wrapper: Sequence[str] = (),
) -> Served:
    """``auth-proxy serve -c config *args``, started by ``*wrapper python *launcher``;
    waits for ``/-/healthz`` on ``port``. ``env`` is added to this process's environment."""
    out, err = workdir / f"proxy-{port}.out", workdir / f"proxy-{port}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; probed over HTTP below
            [*wrapper, sys.executable, *launcher, "serve", "-c", str(config), *args],
            stdout=stdout,
            stderr=stderr,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )
    served = Served(proc, config, port, out, err)
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(served.url("/-/healthz")) as resp:
                    if resp.status == 200:
                        return served
            except aiohttp.ClientConnectionError:
                pass
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, "the proxy did not start"
            await asyncio.sleep(0.05)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``auth-proxy ARGS`` run to its end; blocking (from async tests: ``asyncio.to_thread``)."""
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


async def run_check(*args: str) -> tuple[int, str, str]:
    """``auth-proxy check ARGS`` from an async test: exit code, stdout, stderr."""
    result = await asyncio.to_thread(run_cli, "check", *args)
    return result.returncode, result.stdout, result.stderr


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def non_loopback_address() -> str | None:
    """This machine's IPv4 address towards the world, if it has one besides loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent; this only picks a source
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


# --------------------------------------------------------------------------- logs

# Set on some machines; outbound calls in tests must not follow them.
MACHINE_ENV = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "AUTH_PROXY_CONFIG",
    "AUTH_PROXY_LISTEN",
    "AUTH_PROXY_LOG_LEVEL",
    "AUTH_PROXY_STATE_DIR",
    "NETRC",
)


class LogCapture:
    def __init__(self) -> None:
        self.buffer = io.StringIO()

    @property
    def text(self) -> str:
        return self.buffer.getvalue()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = [json.loads(line) for line in self.text.splitlines() if line.strip()]
        return [e for e in out if name is None or e.get("event") == name]


# ----------------------------------------------------------------------- what the sandbox saw


def v2_logins(sandbox: Sandbox) -> int:
    """How many IICS v2 password logins the sandbox has received."""
    return len(sandbox.state.logins_for("iics-v2-login"))


def last_session_id(sandbox: Sandbox) -> str:
    """The session id the sandbox POD's agent list was last asked with."""
    return sandbox.state.requests_to("/saas/api/v2/agent")[-1].headers["icSessionId"]


def logged_out(sandbox: Sandbox) -> set[str]:
    """The session ids the sandbox POD was asked to log out."""
    return {r.headers["icSessionId"] for r in sandbox.state.requests_to("/saas/api/v2/user/logout")}


def last_call(sandbox: Sandbox, service: str) -> SeenRequest:
    return sandbox.state.requests_for(service)[-1]


def login_services(sandbox: Sandbox) -> list[str]:
    """The service of every login call the sandbox received, in order."""
    return [seen.service for seen in sandbox.state.logins]


def newest_session(sandbox: Sandbox) -> str:
    """The id of the IICS/IDMC session the vendor opened last (dead ones linger unused)."""
    return max(sandbox.state.iics_sessions.values(), key=lambda s: s.created).session_id


def assert_iics_headers(seen: SeenRequest, session_id: str) -> None:
    for name in ("icSessionId", "INFA-SESSION-ID", "IDS-SESSION-ID"):
        assert seen.headers[name] == session_id, name


async def assert_rejected_once(
    http: aiohttp.ClientSession, server: ProxyServer, sandbox: Sandbox, path: str, *text: str
) -> None:
    """Bad credentials: 502 login_rejected naming the vendor's words, and no second try."""
    status, body, headers = await fetch(http, "GET", base(server, path))
    assert status == 502
    assert headers["X-Auth-Proxy-Error"] == "login_rejected"
    assert body["error"]["code"] == "login_rejected"
    for words in text:
        assert words in body["error"]["message"]
    attempts = len(sandbox.state.logins)
    status, body, _ = await fetch(http, "GET", base(server, path))
    assert (status, body["error"]["code"]) == (502, "login_rejected")
    assert len(sandbox.state.logins) == attempts


# ------------------------------------------------------------------- the sandbox, called directly


async def sandbox_v2_login(http: aiohttp.ClientSession, sandbox: Sandbox) -> str:
    """Log in to the sandbox as its demo user (IICS v2); the session id."""
    url = sandbox.urls.login + "/ma/api/v2/user/login"
    async with http.post(url, json={"@type": "login", **DEMO}) as response:
        assert response.status == 200
        session_id: str = (await response.json())["icSessionId"]
    return session_id


async def get_agents(http: aiohttp.ClientSession, sandbox: Sandbox, session_id: str) -> int:
    """The status of the sandbox POD's agent list asked with ``session_id``."""
    url = sandbox.urls.pod + "/saas/api/v2/agent"
    async with http.get(url, headers={"icSessionId": session_id}) as response:
        return response.status


# --------------------------------------------------------------------------- tokens


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def jwt(**claims: Any) -> str:
    """A JWT carrying ``claims``, with a signature nobody checks."""

    def part(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256'})}.{part(claims)}.c2ln"


# --------------------------------------------------------------------------- TLS


def server_tls(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    """A server context presenting a certificate from ``ca`` for ``names``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


# --------------------------------------------------------------------------- forward-proxy mode


def forward_config(
    sb: Sandbox, ca_bundle: str, ca_files: tuple[Path, Path], **top: Any
) -> dict[str, Any]:
    """Top-level config for forward-proxy mode before ``sb`` serving the vendor's names:
    one route for them; ``upstream``, ``forward_proxy`` and ``routes`` in ``top`` add to it."""
    upstream = top.pop("upstream", {})
    forward_proxy = top.pop("forward_proxy", {})
    routes = top.pop("routes", [])
    cert, key = ca_files
    return {
        "upstream": {
            # The tests point HTTPS_PROXY at the proxy itself: its own calls must not follow.
            "trust_env": False,
            "ca_bundle": ca_bundle,
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
                "auth": {"type": "iics-password", "pod": "dm-us", **DEMO},
            },
            *routes,
        ],
        **top,
    }


def use_proxy(monkeypatch: pytest.MonkeyPatch, server: ProxyServer, ca: Path | None) -> None:
    """What a user does: point the tool at the proxy and (normally) at the proxy's CA."""
    monkeypatch.setenv("HTTPS_PROXY", base(server))
    monkeypatch.setenv("HTTP_PROXY", base(server))
    if ca is not None:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))


async def open_tunnel(port: int, target: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A CONNECT to ``target`` through the proxy on ``port``; the open tunnel."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    return reader, writer


def v2_tool() -> dict[str, Any]:
    """A tool that knows only the vendor's URLs: logs in with its own (dummy) credentials,
    then follows serverUrl with the session id it got. Blocking (``requests``)."""
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


# --------------------------------------------------------------------------- login flows


def answer(status: int = 200, body: Any = None, *, raw: bytes | None = None) -> LoginResponse:
    """A vendor's JSON answer to a flow's call (``raw`` for a body that is not JSON)."""
    data = raw if raw is not None else json.dumps(body).encode()
    return LoginResponse(status, {"Content-Type": "application/json"}, data, "")


def v2_user(session_id: str = "SID22charsSID22charsXX", server_url: str = POD + "/saas") -> Any:
    """The body of an IICS v2 login answer."""
    return {"icSessionId": session_id, "serverUrl": server_url, "orgUuid": "ORG22", "name": "u"}


@dataclass
class FlowCalls:
    """What a flow asked for while ``run_flow`` ran it: its calls and the secrets it resolved."""

    requests: list[LoginRequest] = field(default_factory=list)
    resolved: list[Secret] = field(default_factory=list)


Responder = Callable[[LoginRequest], Awaitable[LoginResponse]]
T = TypeVar("T")


async def run_flow(
    gen: Generator[Step, Reply, T],
    *answers: LoginResponse | Responder,
    secrets: Mapping[str, str] = {},
    calls: FlowCalls | None = None,
) -> T:
    """Run ``gen`` with the product's driver, playing the session manager's part.

    Its calls are answered with ``answers`` in order (a response, or an async function of
    the request), each used exactly once; a secret resolves to ``secrets[ref]``, or to its
    ref. ``calls`` records what the flow asked for. The flow's exceptions pass through.
    """
    seen = calls if calls is not None else FlowCalls()
    pending = list(answers)

    async def secret(source: Secret) -> str:
        seen.resolved.append(source)
        return secrets.get(source.ref, source.ref)

    async def call(request: LoginRequest) -> LoginResponse:
        seen.requests.append(request)
        assert pending, f"unexpected call {request!r}"
        reply = pending.pop(0)
        return reply if isinstance(reply, LoginResponse) else await reply(request)

    # drive() is typed for login flows, which return a Session; a probe returns its own
    # value through the same loop.
    result = await drive(cast(FlowGen, gen), secret=secret, call=call)
    assert not pending, "the flow made fewer calls than expected"
    return cast(T, result)

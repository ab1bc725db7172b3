"""Mutual-TLS identities in ``client_auth.certificates`` (README, "Shared gateway"): the
subject of a verified client certificate, read from a real TLS handshake, picks the
client and its scope. The guard is exercised here behind a small aiohttp TLS server of
the test's own; tests/test_listener_tls.py runs the proxy's own mutual-TLS listeners."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from helpers import server_tls

from proxy.config import parse_config
from proxy.core.errors import ProxyError
from proxy.server.guard import Guard
from proxy.server.peers import peer_subject

SUBJECT = "CN=ci-scheduler,OU=Batch,O=Team"
ROUTES = [
    {
        "name": name,
        "match": {"prefix": f"/{name}"},
        "auth": {"type": "ivanti-api-key", "url": "https://ism.example", "api_key": "k"},
    }
    for name in ("reports", "jobs")
]

Handler = Callable[[web.BaseRequest], Awaitable[dict[str, Any]]]


@asynccontextmanager
async def tls_server(
    ca: trustme.CA, handler: Handler, verify: ssl.VerifyMode
) -> AsyncIterator[str]:
    """An HTTPS server on loopback that asks for client certificates from ``ca``; its
    handler's dict comes back as JSON."""
    context = server_tls(ca, "127.0.0.1")
    context.verify_mode = verify
    ca.configure_trust(context)

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        return web.json_response(await handler(request))

    runner = web.ServerRunner(web.Server(answer), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


def client_tls(ca: trustme.CA, **subject: str) -> ssl.SSLContext:
    """A client context trusting ``ca``; with ``subject``, it presents a certificate."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if subject:
        ca.issue_cert("client.example", **subject).configure_cert(context)
    return context


async def get(url: str, context: ssl.SSLContext, **headers: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(url, ssl=context, headers=headers) as r:
        assert r.status == 200
        return dict(await r.json())


CI = {"common_name": "ci-scheduler", "organization_name": "Team", "organization_unit_name": "Batch"}


@pytest.mark.parametrize("verify", [ssl.CERT_OPTIONAL, ssl.CERT_REQUIRED])
async def test_peer_subject_is_the_verified_certificate_s_rfc4514_subject(
    ca: trustme.CA, verify: ssl.VerifyMode
) -> None:
    async def handler(request: web.BaseRequest) -> dict[str, Any]:
        return {"subject": peer_subject(request)}

    async with tls_server(ca, handler, verify) as url:
        assert await get(url, client_tls(ca, **CI)) == {"subject": SUBJECT}
        if verify == ssl.CERT_OPTIONAL:
            assert await get(url, client_tls(ca)) == {"subject": None}


async def test_plain_http_has_no_peer_subject(aiohttp_server: Any) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"subject": peer_subject(request)})

    app = web.Application()
    app.router.add_get("/", handler)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as http, http.get(server.make_url("/")) as resp:
        assert await resp.json() == {"subject": None}


async def test_the_subject_picks_the_client_and_its_scope(ca: trustme.CA) -> None:
    config = parse_config(
        {
            "client_auth": {
                "tokens": [{"name": "batch", "token": "tok-batch", "routes": ["jobs"]}],
                # Written with other case and spaces: attribute types and spacing are free.
                "certificates": [
                    {"subject": "cn=ci-scheduler, ou=Batch, o=Team", "routes": ["reports"]}
                ],
            },
            "routes": ROUTES,
        }
    )
    guard = Guard()
    await guard.load(config)

    async def handler(request: web.BaseRequest) -> dict[str, Any]:
        try:
            client = guard.check_client(request, certified=True)
        except ProxyError as exc:
            return {"error": exc.code, "message": exc.message}
        assert client is not None
        scope: dict[str, Any] = {"client": client.name}
        for route in ("reports", "jobs"):
            try:
                client.check_request(route, "GET", request.headers)
                scope[route] = "allowed"
            except ProxyError as exc:
                scope[route] = exc.message
        return scope

    async with tls_server(ca, handler, ssl.CERT_OPTIONAL) as url:
        assert await get(url, client_tls(ca, **CI)) == {
            "client": "ci-scheduler",  # the subject's CN
            "reports": "allowed",
            "jobs": 'client "ci-scheduler" may not use route "jobs"',
        }
        # A token sent along names a more specific client than the machine's certificate.
        with_token = await get(
            url, client_tls(ca, **CI), **{"Proxy-Authorization": "Bearer tok-batch"}
        )
        assert with_token["client"] == "batch"
        intruder = {**CI, "common_name": "intruder"}
        assert await get(url, client_tls(ca, **intruder)) == {
            "error": "client_unauthorized",
            "message": "the client certificate CN=intruder,OU=Batch,O=Team is not in "
            "client_auth.certificates",
        }
        # Case matters in values: CN=CI-Scheduler is another subject.
        other_case = {**CI, "common_name": "CI-Scheduler"}
        assert (await get(url, client_tls(ca, **other_case)))["error"] == "client_unauthorized"
        no_certificate = await get(url, client_tls(ca))
        assert no_certificate["error"] == "client_unauthorized"

"""Serve the five fake vendor hosts on local ports, for tests and ``auth-proxy sandbox``."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from proxy.sandbox.cdgc import build_cdgc_app
from proxy.sandbox.idp import build_idp_app
from proxy.sandbox.iics_login import build_login_app
from proxy.sandbox.iics_pod import build_pod_app
from proxy.sandbox.ivanti import build_ivanti_app
from proxy.sandbox.state import SandboxState, SandboxUrls

__all__ = ["Sandbox", "SandboxUrls", "run_sandbox", "serve_forever"]

AppBuilder = Callable[[SandboxState, SandboxUrls], web.Application]

# Port order for a fixed base port: base, base+1, ... in this order.
_HOSTS: tuple[tuple[str, AppBuilder], ...] = (
    ("login", build_login_app),
    ("pod", build_pod_app),
    ("ivanti", build_ivanti_app),
    ("idp", build_idp_app),
    ("cdgc", build_cdgc_app),
)


@dataclass(frozen=True)
class Sandbox:
    state: SandboxState
    urls: SandboxUrls


def _origin(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


@asynccontextmanager
async def run_sandbox(
    state: SandboxState | None = None,
    *,
    host: str = "127.0.0.1",
    base_port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[Sandbox]:
    """Run all five hosts until the block exits; ``base_port=0`` lets the OS pick ports."""
    state = state if state is not None else SandboxState()
    scheme = "https" if ssl_context is not None else "http"
    async with AsyncExitStack() as stack:
        # Bind first: every app needs every URL (a login answer points at the POD).
        sockets: dict[str, socket.socket] = {}
        for offset, (name, _) in enumerate(_HOSTS):
            port = base_port + offset if base_port else 0
            sock = stack.enter_context(socket.create_server((host, port)))
            sockets[name] = sock
        ports = {name: sock.getsockname()[1] for name, sock in sockets.items()}
        urls = SandboxUrls(**{name: _origin(scheme, host, port) for name, port in ports.items()})
        for name, build in _HOSTS:
            runner = web.AppRunner(build(state, urls), access_log=None)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            await web.SockSite(runner, sockets[name], ssl_context=ssl_context).start()
        yield Sandbox(state=state, urls=urls)


async def serve_forever(port: int, host: str = "127.0.0.1") -> None:
    """Run the sandbox on ports ``port``..``port+4`` until cancelled (``auth-proxy sandbox``)."""
    async with run_sandbox(host=host, base_port=port) as sandbox:
        urls = sandbox.urls
        print(f"IICS login host   {urls.login}")
        print(f"IICS POD          {urls.pod}")
        print(f"Ivanti tenant     {urls.ivanti}")
        print(f"OAuth2 / SF IdP   {urls.idp}")
        print(f"CDGC API          {urls.cdgc}")
        print("IICS user demo / demo-password;  Ivanti demo / demo-password (role Admin),")
        print(f"  tenant {sandbox.state.ivanti_tenant}, API key demo-api-key")
        print("OAuth2 client demo-client / demo-client-secret")
        print("Salesforce demo@sf.example / sf-password + token SFTOKEN123", flush=True)
        await asyncio.Event().wait()

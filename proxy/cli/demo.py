"""``auth-proxy demo``: the sandbox plus a proxy in front of it, and curl lines that work.

``--forward-proxy`` shows forward-proxy mode instead: the sandbox serves TLS
under the vendor's own names (a throwaway CA, trusted by the proxy through
``ca_bundle``; ``upstream.resolve`` sends the names to loopback), and the printed
commands reach it through the proxy with the real ``https://dm-us.informaticacloud.com``
URLs, trusting the proxy's local CA.
"""

from __future__ import annotations

import asyncio
import shlex
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from proxy.config import parse_config
from proxy.ops.logs import setup_logging
from proxy.sandbox import SandboxState, SandboxUrls, run_sandbox
from proxy.server.app import ProxyServer
from proxy.server.tls import LocalCA

DEMO_ORG = "5Xq2jG0mLwKzYbPdRt7sUe"  # the sandbox org's id


def demo_config(urls: SandboxUrls, port: int, tenant: str) -> dict[str, Any]:
    """One route per vendor flow, all against the sandbox with its demo credentials."""
    iics = {"login_url": urls.login, "username": "demo", "password": "demo-password"}
    routes: list[tuple[str, dict[str, Any]]] = [
        ("iics", {"type": "iics-password", **iics}),
        ("iics3", {"type": "iics-password-v3", **iics}),
        (
            "oauth",
            {
                "type": "iics-oauth",
                "login_url": urls.login,
                "org_id": DEMO_ORG,
                "client_credentials": {
                    "token_url": f"{urls.idp}/oauth2/token",
                    "client_id": "demo-client",
                    "client_secret": "demo-client-secret",
                },
            },
        ),
        (
            "sf",
            {
                "type": "iics-salesforce",
                "login_url": urls.login,
                "salesforce": {
                    "login_url": urls.idp,
                    "username": "demo@sf.example",
                    "password": "sf-password",
                    "security_token": "SFTOKEN123",
                },
            },
        ),
        ("cdgc", {"type": "idmc-jwt", **iics, "upstream": urls.cdgc}),
        (
            "ivanti",
            {
                "type": "ivanti-session",
                "url": urls.ivanti,
                "tenant": tenant,
                "username": "demo",
                "password": "demo-password",
                "role": "Admin",
            },
        ),
        ("ivanti-key", {"type": "ivanti-api-key", "url": urls.ivanti, "api_key": "demo-api-key"}),
    ]
    return {
        "listen": {"host": "127.0.0.1", "port": port},
        "log": {"level": "info", "format": "console"},
        "session_store": {"type": "memory"},  # the sandbox's sessions end with it
        "routes": [
            {"name": name, "match": {"prefix": f"/{name}"}, "auth": auth} for name, auth in routes
        ],
    }


def curl_lines(port: int) -> list[str]:
    base = f"http://127.0.0.1:{port}"
    return [
        f"curl -s {base}/iics/saas/api/v2/agent",
        f"curl -s '{base}/iics3/saas/public/core/v3/objects?q=type==%27DTEMPLATE%27&limit=2'",
        f"curl -s {base}/oauth/saas/api/v2/agent",
        f"curl -s {base}/sf/saas/api/v2/agent",
        f"curl -s '{base}/cdgc/data360/search/v1/assets?query=*'",
        f"curl -s '{base}/ivanti/api/odata/businessobject/incidents?$top=2'",
        f"curl -s '{base}/ivanti-key/api/odata/businessobject/incidents?$top=1'",
        f"curl -s {base}/-/sessions",
    ]


VENDOR_LOGIN = "dm-us.informaticacloud.com"
VENDOR_POD = "na1.dm-us.informaticacloud.com"


def forward_demo_config(urls: SandboxUrls, port: int, state_dir: Path) -> dict[str, Any]:
    """One host-matched IICS route for the vendor's names, the names mapped to the sandbox."""

    def loopback(url: str) -> str:
        return f"127.0.0.1:{urlsplit(url).port}"

    return {
        "listen": {"host": "127.0.0.1", "port": port},
        "log": {"level": "info", "format": "console"},
        "session_store": {"type": "memory"},  # the sandbox's sessions end with it
        "upstream": {
            "ca_bundle": str(state_dir / "sandbox-ca.pem"),
            "resolve": {
                f"{VENDOR_LOGIN}:443": loopback(urls.login),
                f"{VENDOR_POD}:443": loopback(urls.pod),
            },
        },
        "forward_proxy": {
            "enabled": True,
            "ca": {"cert": str(state_dir / "ca.pem"), "key": str(state_dir / "ca-key.pem")},
        },
        "routes": [
            {
                "name": "informatica",
                "match": {"host": [VENDOR_LOGIN, f"*.{VENDOR_LOGIN}"]},
                "auth": {
                    "type": "iics-password",
                    "pod": "dm-us",
                    "username": "demo",
                    "password": "demo-password",
                },
            }
        ],
    }


def forward_lines(port: int, ca_cert: Path | str) -> list[str]:
    """Commands that know only vendor URLs; the proxy logs in for them."""
    proxy = f"http://127.0.0.1:{port}"
    ca = shlex.quote(str(ca_cert))
    curl = f"curl -s --proxy {proxy} --cacert {ca}"
    login = '{"@type":"login","username":"any","password":"any"}'
    script = (
        "import requests; "
        f'u = requests.post("https://{VENDOR_LOGIN}/ma/api/v2/user/login", '
        'json={"username": "any", "password": "any"}).json(); '
        'print(u["serverUrl"], requests.get(u["serverUrl"] + "/api/v2/agent", '
        'headers={"icSessionId": u["icSessionId"]}).json())'
    )
    return [
        f"{curl} -H 'Content-Type: application/json' -d '{login}' "
        f"https://{VENDOR_LOGIN}/ma/api/v2/user/login",
        f"{curl} https://{VENDOR_POD}/saas/api/v2/agent",
        f"{curl} 'https://{VENDOR_POD}/saas/public/core/v3/objects?q=type==%27DTEMPLATE%27'",
        f"HTTPS_PROXY={proxy} REQUESTS_CA_BUNDLE={ca} python3 -c '{script}'",
    ]


@asynccontextmanager
async def forward_demo(
    port: int, state_dir: Path, sandbox_port: int = 0, **proxy_args: Any
) -> AsyncIterator[tuple[ProxyServer, list[str]]]:
    """The sandbox under vendor names and a forward-proxy-mode proxy in front of it."""

    sandbox_ca = LocalCA.load_or_create(
        state_dir / "sandbox-ca.pem",
        state_dir / "sandbox-ca-key.pem",
        common_name="auth-proxy demo sandbox CA",
    )
    tls = sandbox_ca.server_context(VENDOR_LOGIN, f"*.{VENDOR_LOGIN}")
    state = SandboxState(server_url_override=f"https://{VENDOR_POD}/saas")
    async with run_sandbox(state, base_port=sandbox_port, ssl_context=tls) as sandbox:
        config = parse_config(forward_demo_config(sandbox.urls, port, state_dir))
        server = ProxyServer(config, **proxy_args)
        await server.start()
        try:
            yield server, forward_lines(server.port, config.forward_proxy.ca.cert)
        finally:
            await server.stop(drain_timeout=2)


async def _run_forward_demo(port: int, sandbox_port: int) -> int:
    setup_logging("info", "console")
    with tempfile.TemporaryDirectory(prefix="auth-proxy-demo-") as directory:
        async with forward_demo(port, Path(directory), sandbox_port) as (server, lines):
            print(f"\nauth-proxy demo (forward-proxy mode): proxy at port {server.port}")
            print("Tools that know only vendor URLs, through the proxy (no credentials needed):\n")
            for line in lines:
                print(f"  {line}\n")
            print("Ctrl-C to stop.", flush=True)
            await asyncio.Event().wait()
    return 0


async def run_demo(port: int, sandbox_port: int = 0, forward_proxy: bool = False) -> int:

    if forward_proxy:
        return await _run_forward_demo(port, sandbox_port)
    async with run_sandbox(base_port=sandbox_port) as sandbox:
        config = parse_config(demo_config(sandbox.urls, port, sandbox.state.ivanti_tenant))
        setup_logging(config.log.level, config.log.format)
        server = ProxyServer(config)
        await server.start()
        print(f"\nauth-proxy demo: sandbox at {sandbox.urls.login} ..., proxy at port {port}")
        print("Try (the proxy logs in for you; no credentials needed):\n")
        for line in curl_lines(server.port):
            print(f"  {line}")
        print("\nCtrl-C to stop.", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop(drain_timeout=2)
    return 0

"""``auth-proxy demo``: the sandbox plus a proxy in front of it, and curl lines that work."""

from __future__ import annotations

import asyncio
from typing import Any

from proxy.config import parse_config
from proxy.logs import setup_logging
from proxy.sandbox import SandboxUrls, run_sandbox

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


async def run_demo(port: int, sandbox_port: int = 0) -> int:
    from proxy.app import ProxyServer

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

"""Helpers for tests: route dicts for the sandbox, URLs, waiting on conditions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from proxy.app import ProxyServer
from proxy.sandbox import Sandbox


def iics_route(
    sandbox: Sandbox, *, name: str = "iics", prefix: str = "/iics", **auth: Any
) -> dict[str, Any]:
    auth = {
        "type": "iics-password",
        "login_url": sandbox.urls.login,
        "username": "demo",
        "password": "demo-password",
        **auth,
    }
    return {"name": name, "match": {"prefix": prefix}, "auth": auth}


def ivanti_key_route(
    sandbox: Sandbox, *, name: str = "ivanti", prefix: str = "/ivanti", **auth: Any
) -> dict[str, Any]:
    auth = {"type": "ivanti-api-key", "url": sandbox.urls.ivanti, "api_key": "demo-api-key", **auth}
    return {"name": name, "match": {"prefix": prefix}, "auth": auth}


def base(server: ProxyServer, prefix: str = "") -> str:
    return f"http://127.0.0.1:{server.port}{prefix}"


async def wait_for(
    condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition"
) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)

"""The command line, run as a user would: a real process, real exit codes and output."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from helpers import ROOT, Served, ServeRoutes, iics_route, rss_kib, run_cli

from proxy import __version__
from proxy.sandbox import Sandbox, expected_sha256


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"auth-proxy {__version__}"


EXAMPLE_SECRETS = {  # every secret source config.example.yaml reads
    "env": ("IICS_PASSWORD", "SF_PASSWORD", "SF_SECURITY_TOKEN", "IVANTI_PASSWORD"),
    "file": ("secrets/oauth-client-secret", "secrets/ivanti-api-key"),
}


def test_check_prints_routes_with_secrets_masked(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text((ROOT / "config.example.yaml").read_text())
    (tmp_path / "secrets").mkdir()
    for name in EXAMPLE_SECRETS["file"]:
        (tmp_path / name).write_text("from-a-file\n")
    env = {name: "hunter2" for name in EXAMPLE_SECRETS["env"]}
    result = run_cli("check", "-c", str(config), "--listen", "127.0.0.1:0", env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("config ok: 8 route(s)")
    for name in ("iics-us", "iics-v3", "iics-saml", "iics-oauth", "iics-sf", "cdgc", "ivanti"):
        assert f"- {name}:" in out
    assert "password: {env: IICS_PASSWORD}" in out
    assert "hunter2" not in out


def test_check_masks_literal_secrets(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "routes": [
                    {
                        "name": "r",
                        "match": {"prefix": "/r"},
                        "auth": {"type": "ivanti-api-key", "tenant": "t", "api_key": "TOPSECRET"},
                    }
                ]
            }
        )
    )
    result = run_cli("check", "-c", str(config))
    assert result.returncode == 0
    assert "api_key: ****" in result.stdout
    assert "TOPSECRET" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "routes:\n  - name: a\n    match: {prefix: /a}\n"
            "    auth: {type: iics-password, pod: dm-us, username: u}\n",
            "routes[0].auth.password: required",
        ),
        ("routes: [\n", "at line"),
        ("listen: {port: 8080}\n", "routes: required"),
    ],
)
def test_bad_config_exits_2_with_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    for command in ("check", "serve"):
        result = run_cli(command, "-c", str(config))
        assert result.returncode == 2
        assert message in result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_missing_config_file_is_exit_2(tmp_path: Path) -> None:
    result = run_cli("check", env={"AUTH_PROXY_CONFIG": str(tmp_path / "absent.yaml")})
    assert result.returncode == 2
    assert "absent.yaml" in result.stderr


def test_listening_beyond_loopback_needs_client_auth(tmp_path: Path) -> None:
    config = tmp_path / "open.yaml"
    route = {
        "name": "r",
        "match": {"prefix": "/r"},
        "auth": {"type": "ivanti-api-key", "tenant": "t", "api_key": "k"},
    }
    config.write_text(yaml.safe_dump({"listen": {"host": "0.0.0.0", "port": 0}, "routes": [route]}))
    result = run_cli("serve", "-c", str(config))
    assert result.returncode == 2
    assert "client_auth" in result.stderr


# ---------------------------------------------------------------- a real serving process


@pytest.fixture
async def served_iics(sandbox: Sandbox, serve_routes: ServeRoutes) -> Served:
    """``auth-proxy serve`` with one iics-password route to the sandbox."""
    return await serve_routes([iics_route(sandbox)])


async def test_serve_logs_json_lines_and_exits_0_on_sigterm(
    served_iics: Served, sandbox: Sandbox
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(served_iics.url("/iics/saas/api/v2/agent")) as resp,
    ):
        assert resp.status == 200
    served_iics.proc.send_signal(signal.SIGTERM)
    events = await served_iics.finish()  # every stdout line parses as one JSON object
    access = [e for e in events if e["event"] == "request"]
    assert len(access) == 1
    assert access[0]["route"] == "iics" and access[0]["status"] == 200
    # Shutdown logged the session out at the vendor.
    assert any(r.path == "/saas/api/v2/user/logout" for r in sandbox.state.requests_for("iics-pod"))


async def test_streaming_a_large_download_and_upload_keeps_memory_flat(
    served_iics: Served,
) -> None:
    proxy_process = served_iics
    size = 300 * 1024 * 1024
    pid = proxy_process.proc.pid
    async with aiohttp.ClientSession() as http:
        async with http.get(proxy_process.url("/iics/saas/api/v2/agent")) as resp:
            assert resp.status == 200
        baseline = rss_kib(pid)
        peak = baseline
        import hashlib

        digest = hashlib.sha256()
        url = proxy_process.url(f"/iics/saas/public/core/v3/export/size-{size}/package")
        async with http.get(url) as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_chunked(1 << 20):
                digest.update(chunk)
                peak = max(peak, rss_kib(pid))
        assert digest.hexdigest() == expected_sha256(size)

        block = b"\x5a" * (1 << 20)

        async def upload() -> AsyncIterator[bytes]:
            nonlocal peak
            for _ in range(size // len(block)):
                peak = max(peak, rss_kib(pid))
                yield block

        async with http.post(
            proxy_process.url("/iics/saas/public/core/v3/import/package"), data=upload()
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["size"] == size
    growth_mib = (peak - baseline) / 1024
    assert growth_mib < 40, f"proxy RSS grew by {growth_mib:.1f} MiB while streaming 2x300 MiB"


def test_a_reader_that_stops_early_is_no_error() -> None:
    # ``auth-proxy completion bash | head -1``: the pipe closes before the script is out.
    shell = f"{sys.executable} -m proxy completion bash | head -c 10 > /dev/null"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Broken pipe" not in done.stderr

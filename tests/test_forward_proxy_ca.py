"""Forward-proxy mode, the proxy's own CA: created once with private permissions, reused
across restarts, and shown with how to trust it by ``auth-proxy ca``."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
import yaml
from helpers import LOGIN_HOST, forward_config, run_cli, use_proxy, v2_tool

from proxy.config import ConfigError, parse_config
from proxy.core.clock import ManualClock
from proxy.sandbox import Sandbox
from proxy.server.app import ProxyServer
from proxy.server.tls import LocalCA


async def test_the_ca_is_created_once_and_reused_across_restarts(
    vendor: Sandbox,
    ca_bundle: str,
    ca_files: tuple[Path, Path],
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cert, key = ca_files
    config = parse_config({"listen": {"port": 0}, **forward_config(vendor, ca_bundle, ca_files)})
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
    ca = LocalCA.load_or_create(tmp_path / "ca.pem", tmp_path / "ca-key.pem")
    assert ca.created
    assert not LocalCA.load_or_create(tmp_path / "ca.pem", tmp_path / "ca-key.pem").created
    (tmp_path / "ca-key.pem").unlink()
    with pytest.raises(ConfigError, match=r"ca-key\.pem does not"):
        LocalCA.load_or_create(tmp_path / "ca.pem", tmp_path / "ca-key.pem")


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
    result = run_cli("ca", "-c", str(config))
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

    again = run_cli("ca", "-c", str(config))
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
    result = run_cli("ca", "-c", str(config))
    assert result.returncode == 0
    assert str(tmp_path / "ca.pem") in result.stdout
    assert "forward_proxy.enabled is false" in result.stderr

"""`auth-proxy check` runs the start-up checks `serve` runs, so CI can trust its "ok".

Each config here passed `check` once and then failed at `serve`, or at the first login:
both commands must now refuse it, with exit 2 and a line that names the key to change.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import run_cli, write_config

ROOTED = hasattr(os, "geteuid") and os.geteuid() == 0  # root reads and writes anything


def key_route(api_key: object, name: str = "r", **route: Any) -> dict[str, Any]:
    auth = {"type": "ivanti-api-key", "tenant": "t.example", "api_key": api_key}
    return {"name": name, "match": {"prefix": f"/{name}"}, "auth": auth, **route}


def refused(config: Path, key: str, *words: str, env: dict[str, str] | None = None) -> None:
    """``check`` and ``serve`` both exit 2 with one line naming ``key`` (and ``words``)."""
    for command in ("check", "serve"):
        result = run_cli(command, "-c", str(config), env=env)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        lines = [line for line in result.stderr.splitlines() if f"config error: {key}: " in line]
        assert lines, (command, result.stderr)
        for word in words:
            assert word in lines[0], (command, lines[0])
        assert "Traceback" not in result.stderr
        assert "config ok" not in result.stdout


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port something else is listening on."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def test_a_config_that_serve_can_start_passes(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    (tmp_path / "key").write_text("from-a-file\n")
    write_config(config, [key_route({"env": "API_KEY"}), key_route({"file": "key"}, name="f")])
    result = run_cli("check", "-c", str(config), env={"API_KEY": "SEKRIT-VALUE"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("config ok: 2 route(s)")
    assert "SEKRIT" not in result.stdout + result.stderr
    assert "from-a-file" not in result.stdout + result.stderr


def test_listening_beyond_loopback_without_client_auth(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    write_config(config, [key_route("k")], listen={"host": "0.0.0.0", "port": 0})
    refused(config, "listen.host", "client_auth")


def test_an_unset_environment_variable_secret(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    write_config(config, [key_route({"env": "NOT_SET_ANYWHERE"})])
    refused(config, "routes[0].auth.api_key", "NOT_SET_ANYWHERE", "not set")


def test_an_empty_environment_variable_secret(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    write_config(config, [key_route({"env": "EMPTY_KEY"})])
    refused(config, "routes[0].auth.api_key", "EMPTY_KEY", "empty", env={"EMPTY_KEY": ""})


def test_a_client_token_is_a_secret_too(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    write_config(config, [key_route("k")], client_auth={"tokens": ["t", {"env": "NO_TOKEN"}]})
    refused(config, "client_auth.tokens[1]", "NO_TOKEN")


def test_a_secret_file_that_does_not_exist(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    write_config(config, [key_route({"file": "secrets/absent"})])
    refused(config, "routes[0].auth.api_key", str(tmp_path / "secrets/absent"), "does not exist")


def test_a_secret_file_that_cannot_be_read(tmp_path: Path) -> None:
    # A directory: unreadable as a file even for root, who can read any mode.
    (tmp_path / "key").mkdir()
    config = tmp_path / "c.yaml"
    write_config(config, [key_route({"file": "key"})])
    refused(config, "routes[0].auth.api_key", str(tmp_path / "key"), "cannot be read by uid")


@pytest.mark.skipif(ROOTED, reason="root reads a file of any mode")
def test_a_secret_file_this_user_may_not_read(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("k")
    key.chmod(0)
    config = tmp_path / "c.yaml"
    write_config(config, [key_route({"file": "key"})])
    refused(config, "routes[0].auth.api_key", "Permission denied", f"uid {os.getuid()}")


def test_a_forward_proxy_ca_that_cannot_be_created(tmp_path: Path) -> None:
    # A path through a regular file: no one can create it, root included.
    (tmp_path / "not-a-dir").write_text("")
    config = tmp_path / "c.yaml"
    ca = {"cert": "not-a-dir/ca.pem", "key": "not-a-dir/ca-key.pem"}
    write_config(config, [key_route("k")], forward_proxy={"enabled": True, "ca": ca})
    refused(config, "forward_proxy.ca.cert", "cannot create", "state_dir")


@pytest.mark.skipif(ROOTED, reason="root writes in a directory of any mode")
def test_a_forward_proxy_ca_next_to_a_config_this_user_may_not_write(tmp_path: Path) -> None:
    # The container case: a root-owned /etc/auth-proxy with the CA's default paths.
    etc = tmp_path / "etc"
    etc.mkdir()
    config = etc / "c.yaml"
    write_config(config, [key_route("k")], forward_proxy={"enabled": True})
    etc.chmod(0o555)
    try:
        refused(config, "forward_proxy.ca.cert", "not writable", "AUTH_PROXY_STATE_DIR")
    finally:
        etc.chmod(0o755)


def test_a_port_already_bound(tmp_path: Path, held_port: int) -> None:
    config = tmp_path / "c.yaml"
    write_config(config, [key_route("k")], listen={"host": "127.0.0.1", "port": held_port})
    refused(config, "listen.port", f"127.0.0.1:{held_port}", "already in use", "--listen")


def test_a_route_port_already_bound(tmp_path: Path, held_port: int) -> None:
    config = tmp_path / "c.yaml"
    route = key_route("k", name="own")
    route["match"] = {"listen": {"port": held_port}}
    write_config(config, [key_route("k"), route])
    refused(config, "routes[1].match.listen.port", f"127.0.0.1:{held_port}", "already in use")


def test_every_problem_at_once(tmp_path: Path, held_port: int) -> None:
    config = tmp_path / "c.yaml"
    write_config(
        config,
        [key_route({"env": "NOT_SET_A"}), key_route({"file": "absent"}, name="b")],
        listen={"host": "127.0.0.1", "port": held_port},
    )
    result = run_cli("check", "-c", str(config))
    assert result.returncode == 2
    keys = [line.split(": ")[2] for line in result.stderr.splitlines()]
    assert keys == ["routes[0].auth.api_key", "routes[1].auth.api_key", "listen.port"]


def test_json_for_a_config_that_passes(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    write_config(config, [key_route({"env": "API_KEY"}), key_route("LITERAL-SEKRIT", name="l")])
    result = run_cli("check", "-c", str(config), "--json", env={"API_KEY": "ENV-SEKRIT"})
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is True
    assert doc["config"] == str(config)
    assert doc["listen"] == ["127.0.0.1:0"]
    assert [r["name"] for r in doc["routes"]] == ["r", "l"]
    assert doc["routes"][0]["match"] == {"prefix": "/r"}
    assert doc["routes"][0]["auth"]["api_key"] == "{env: API_KEY}"
    assert doc["routes"][1]["auth"]["api_key"] == "****"
    assert "SEKRIT" not in result.stdout + result.stderr


def test_json_names_each_problem_by_its_key(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    write_config(config, [key_route({"env": "NOT_SET_B"})], listen={"host": "0.0.0.0", "port": 0})
    result = run_cli("check", "-c", str(config), "--json")
    assert result.returncode == 2
    doc = json.loads(result.stdout)
    assert doc["ok"] is False
    assert {p["key"] for p in doc["problems"]} == {"listen.host", "routes[0].auth.api_key"}
    assert all(p["message"] for p in doc["problems"])


def test_json_for_a_config_that_does_not_parse(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"routes": [key_route("k")], "lisen": {}}))
    result = run_cli("check", "-c", str(config), "--json")
    assert result.returncode == 2
    assert json.loads(result.stdout)["problems"][0]["key"] == "lisen"


def test_json_reports_logins(tmp_path: Path) -> None:
    # No sandbox needed: a key route logs in without calling the vendor.
    config = tmp_path / "c.yaml"
    write_config(config, [key_route("k")])
    result = run_cli("check", "-c", str(config), "--json", "--login")
    assert result.returncode == 0, result.stderr
    (login,) = json.loads(result.stdout)["logins"]
    assert login["route"] == "r" and login["ok"] is True and login["error"] is None


def test_demo_names_a_port_in_use(held_port: int) -> None:
    result = run_cli("demo", "--port", str(held_port))
    assert result.returncode == 2
    assert f"--port: 127.0.0.1:{held_port} is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_sandbox_names_a_port_in_use(held_port: int) -> None:
    result = run_cli("sandbox", "--port", str(held_port))
    assert result.returncode == 2
    assert f"--port: 127.0.0.1:{held_port} is already in use" in result.stderr


def test_a_file_error_names_its_path(tmp_path: Path) -> None:
    # `ca` creates the CA without the start-up checks; its error used to be a bare
    # "Permission denied" or "File exists", with no path to go and fix.
    (tmp_path / "not-a-dir").write_text("")
    config = tmp_path / "c.yaml"
    ca = {"cert": "not-a-dir/ca.pem", "key": "not-a-dir/ca-key.pem"}
    write_config(config, [key_route("k")], forward_proxy={"enabled": True, "ca": ca})
    result = run_cli("ca", "-c", str(config))
    assert result.returncode == 1
    assert str(tmp_path / "not-a-dir") in result.stderr

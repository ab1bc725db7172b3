"""`auth-proxy check` shows where each secret comes from, never anything that may be one.

A ``{command: ...}`` source's command line can carry a token (``--token=...``,
``VAULT_TOKEN=... vault ...``); only the program's name is shown.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from helpers import prefix_route, run_cli


def route(name: str, api_key: object) -> dict[str, object]:
    return prefix_route(name, {"type": "ivanti-api-key", "tenant": "t.example", "api_key": api_key})


def test_check_shows_only_the_program_of_a_secret_command(tmp_path: Path) -> None:
    command = "VAULT_TOKEN=s.LEAKED1 /usr/local/bin/vault read -field=key kv/ivanti --x=LEAKED2"
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "routes": [
                    route("a", {"command": command}),
                    route("b", {"command": "/opt/bin/fetch-key"}),
                    route("c", {"command": "'/opt/my tools/get key' LEAKED3"}),
                ]
            }
        )
    )
    result = run_cli("check", "-c", str(config))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "api_key: {command: vault …}" in out
    assert "api_key: {command: fetch-key}" in out
    assert "api_key: {command: get key …}" in out
    assert "LEAKED" not in out + result.stderr

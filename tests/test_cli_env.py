"""Configuration from the environment: every setting flag of `serve` has an
``AUTH_PROXY_*`` variable, `-c` may come before the sub-command, and shells complete it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest
from helpers import Served, ivanti_key_route, run_cli, spawn_served, write_config

from proxy.sandbox import Sandbox


def serve_flags() -> dict[str, str]:
    """Each option of `serve --help` but -h, with the variable its help names."""
    help_text = " ".join(run_cli("serve", "--help").stdout.split())
    flags = re.findall(r"(--[a-z-]+) [A-Z:]+ .*?\[env (AUTH_PROXY_[A-Z_]+)\]", help_text)
    return dict(flags)


def test_every_serve_flag_has_an_environment_variable() -> None:
    help_text = run_cli("serve", "--help").stdout
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", help_text)) - {"--help"}
    flags = serve_flags()
    assert set(flags) == options
    assert {"--config", "--listen", "--log-level", "--state-dir"} <= options
    for flag, variable in flags.items():
        assert variable == "AUTH_PROXY_" + flag[2:].upper().replace("-", "_")


@pytest.fixture
def config(sandbox: Sandbox, tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    # The file's port is taken: only an override can make the proxy start.
    write_config(path, [ivanti_key_route(sandbox)], listen={"host": "127.0.0.1", "port": 1})
    return path


async def get_status(served: Served, path: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(served.url(path)) as resp:
        return resp.status


@pytest.mark.parametrize("by", ["flag", "env"])
async def test_listen_and_log_level(
    config: Path, tmp_path: Path, unused_tcp_port: int, by: str
) -> None:
    listen, level = f"127.0.0.1:{unused_tcp_port}", "warning"
    args = ["--listen", listen, "--log-level", level] if by == "flag" else []
    env = {"AUTH_PROXY_LISTEN": listen, "AUTH_PROXY_LOG_LEVEL": level} if by == "env" else {}
    served = await spawn_served(config, unused_tcp_port, tmp_path, args=args, env=env)
    assert await get_status(served, "/ivanti/api/odata/businessobject/incidents") == 200
    assert await get_status(served, "/nowhere") == 404
    # A reload reads the file again; the flags still apply (no restart asked for).
    async with (
        aiohttp.ClientSession() as http,
        http.post(served.url("/-/reload"), headers={"X-Auth-Proxy": "1"}) as resp,
    ):
        assert resp.status == 200
        assert (await resp.json())["restart_needed"] == []
    served.proc.terminate()
    events = await served.finish()
    # warning: the warning events, no info events (access lines included).
    names = {e["event"] for e in events}
    assert "request_failed" in names
    assert not names & {"request", "listening", "config_reloaded", "shutting_down"}


def test_state_dir_by_flag_and_by_environment(config: Path, tmp_path: Path) -> None:
    for by in ("flag", "env"):
        state = tmp_path / f"state-{by}"
        args = ["ca", "-c", str(config)]
        if by == "flag":
            result = run_cli(*args, "--state-dir", str(state))
        else:
            result = run_cli(*args, env={"AUTH_PROXY_STATE_DIR": str(state)})
        assert result.returncode == 0, result.stderr
        assert (state / "ca.pem").exists() and (state / "ca-key.pem").exists()
    assert not (tmp_path / "ca.pem").exists()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTH_PROXY_LISTEN", "8080"),
        ("AUTH_PROXY_LISTEN", "::1:8080"),
        ("AUTH_PROXY_LISTEN", "127.0.0.1:99999"),
        ("AUTH_PROXY_LOG_LEVEL", "verbose"),
    ],
)
def test_a_bad_value_names_the_variable_and_the_flag(
    config: Path, variable: str, value: str
) -> None:
    result = run_cli("check", "-c", str(config), env={variable: value})
    assert result.returncode == 2
    flag = "--" + variable.removeprefix("AUTH_PROXY_").lower().replace("_", "-")
    assert f"config error: {variable} ({flag}): {value!r}" in result.stderr


def test_the_config_may_come_before_the_sub_command(config: Path) -> None:
    listen = ["--listen", "127.0.0.1:0"]
    for args in (
        ["-c", str(config), "check", *listen],
        [f"--config={config}", "check", *listen],
        [f"-c{config}", "check", *listen],
        ["-c", "elsewhere.yaml", "check", "-c", str(config), *listen],  # the command's wins
    ):
        result = run_cli(*args)
        assert result.returncode == 0, (args, result.stderr)
        assert result.stdout.startswith("config ok: 1 route(s)")


async def test_the_config_before_no_sub_command_serves(
    config: Path, tmp_path: Path, unused_tcp_port: int
) -> None:
    served = await spawn_served(
        config,
        unused_tcp_port,
        tmp_path,
        launcher=["-m", "proxy", "-c", str(config)],
        env={"AUTH_PROXY_LISTEN": f"127.0.0.1:{unused_tcp_port}"},
    )
    assert await get_status(served, "/-/healthz") == 200
    served.proc.terminate()
    await served.finish()


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_script_names_the_commands_and_flags(shell: str) -> None:
    result = run_cli("completion", shell)
    assert result.returncode == 0, result.stderr
    for word in ("serve", "check", "clear", "demo", "sandbox", "ca", "--listen", "--json"):
        assert word in result.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completion_registers_and_completes(tmp_path: Path) -> None:
    script = tmp_path / "auth-proxy.bash"
    script.write_text(run_cli("completion", "bash").stdout)
    probe = (
        f"source {script}; complete -p auth-proxy; "
        "COMP_WORDS=(auth-proxy ch); COMP_CWORD=1; COMP_LINE='auth-proxy ch'; "
        'COMP_POINT=${#COMP_LINE}; "$(complete -p auth-proxy | sed "s/.*-F \\([^ ]*\\).*/\\1/")" '
        'auth-proxy ch auth-proxy; echo "${COMPREPLY[@]}"'
    )
    result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "auth-proxy" in result.stdout.splitlines()[0]
    assert result.stdout.splitlines()[-1].split() == ["check"]


def test_check_json_is_a_document(config: Path) -> None:
    result = run_cli("-c", str(config), "check", "--json", "--listen", "127.0.0.1:0")
    assert json.loads(result.stdout)["listen"] == ["127.0.0.1:0"]

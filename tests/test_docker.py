"""The Dockerfile and docker-compose.yml agree with the package (no Docker engine needed).

Both files name things the package defines — the console script, the config path, the
port, the health endpoint, the secret files the example config reads — and nothing
else checks that they still match.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import ROOT, ivanti_key_route

from proxy.cli import COMMANDS
from proxy.config import Config, ConfigError, parse_config
from proxy.core.hosts import is_loopback
from proxy.sandbox import Sandbox

CONFIG_PATH = "/etc/auth-proxy/config.yaml"


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        instruction, _, args = (pending + line).partition(" ")
        out.append((instruction.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation"
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = dockerfile()
    last_from = max(i for i, (ins, _) in enumerate(steps) if ins == "FROM")
    return steps[last_from:]


def one(steps: list[tuple[str, str]], instruction: str) -> str:
    found = [args for ins, args in steps if ins == instruction]
    assert len(found) == 1, f"expected one {instruction}, found {found}"
    return found[0]


def env_of(steps: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins, args in steps:
        if ins == "ENV":
            for part in shlex.split(args):
                name, _, value = part.partition("=")
                env[name] = value
    return env


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def console_scripts() -> dict[str, str]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"]["scripts"]


def container_config(environment: dict[str, str]) -> Config:
    data = yaml.safe_load((ROOT / "docker" / "config.yaml").read_text())
    return parse_config(data, base_dir=ROOT / "docker", env=environment)


def proxy_service_env() -> dict[str, str]:
    """The auth-proxy service's environment as compose would set it (defaults applied)."""
    env = compose()["services"]["auth-proxy"]["environment"]
    return {k: compose_default(str(v)) for k, v in env.items()}


def compose_default(value: str) -> str:
    """``${VAR:-default}`` as compose resolves it with VAR unset."""
    if value.startswith("${") and ":-" in value:
        return value[value.index(":-") + 2 : -1]
    return value


def test_image_is_slim_non_root_and_runs_the_console_script() -> None:
    stage = final_stage()
    assert one(stage, "FROM") == "python:3.11-slim"
    user = one(stage, "USER")
    assert user not in ("root", "0") and not user.startswith("0:")
    cmd = json.loads(one(stage, "CMD"))
    assert cmd[0] in console_scripts()
    assert console_scripts()[cmd[0]] == "proxy.cli:main"
    assert cmd[1:] == ["serve"] and "serve" in COMMANDS
    assert env_of(stage)["AUTH_PROXY_CONFIG"] == CONFIG_PATH
    installs = " ".join(args for ins, args in dockerfile() if ins == "RUN")
    assert ".[speed]" in installs
    with (ROOT / "pyproject.toml").open("rb") as f:
        assert "speed" in tomllib.load(f)["project"]["optional-dependencies"]
    for ins, args in dockerfile():
        if ins == "COPY" and not args.startswith("--from"):
            *sources, _dest = args.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def healthcheck() -> tuple[dict[str, str], list[str]]:
    """The HEALTHCHECK's options (``--interval=30s`` → ``{"interval": "30s"}``) and command."""
    check = one(final_stage(), "HEALTHCHECK")
    options, _, command = check.partition("CMD")
    flags = dict(opt.removeprefix("--").split("=", 1) for opt in options.split())
    return flags, json.loads(command)


def seconds(duration: str) -> float:
    assert duration.endswith("s"), duration
    return float(duration[:-1])


def test_exposed_port_and_healthcheck_match_the_container_config() -> None:
    stage = final_stage()
    config = container_config(proxy_service_env())
    assert one(stage, "EXPOSE") == str(config.listen.port)
    flags, command = healthcheck()
    # The console script reads the config as `serve` does, so it follows listen.port.
    assert command[0] in console_scripts() and command[1:] == ["health"]
    assert "health" in COMMANDS
    # Healthy within seconds of start (a sidecar's tool waits for service_healthy).
    assert seconds(flags["start-interval"]) <= 2
    assert seconds(flags["start-period"]) >= 10
    assert seconds(flags["timeout"]) > 3  # `health` gives up after 3 s itself


async def test_the_healthcheck_command_probes_a_live_proxy_on_the_configured_port(
    sandbox: Sandbox, make_proxy, unused_tcp_port: int, tmp_path: Path
) -> None:
    _flags, command = healthcheck()
    server = await make_proxy(routes=[ivanti_key_route(sandbox)])
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"listen": {"port": server.port}, "routes": [ivanti_key_route(sandbox)]})
    )

    async def probe(env: dict[str, str]) -> int:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "proxy",
            *command[1:],
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "AUTH_PROXY_CONFIG": str(config), **env},
        )
        return await proc.wait()

    assert await probe({}) == 0
    # A proxy started with --listen elsewhere (AUTH_PROXY_LISTEN): the probe follows it.
    assert await probe({"AUTH_PROXY_LISTEN": f"127.0.0.1:{unused_tcp_port}"}) != 0
    # ... and a container proxy bypasses its outbound HTTP_PROXY for this probe.
    assert await probe({"HTTP_PROXY": f"http://127.0.0.1:{unused_tcp_port}"}) == 0


def test_compose_runs_a_tool_in_the_proxy_network_namespace() -> None:
    doc = compose()
    services = doc["services"]
    proxy = services["auth-proxy"]
    assert proxy["build"] == "."
    config = container_config(proxy_service_env())
    assert is_loopback(config.listen.host)  # a sidecar: reachable only from its pod
    assert config.client_auth is None

    (mount,) = [v for v in proxy["volumes"] if v.split(":")[1] == CONFIG_PATH]
    source = mount.split(":")[0]
    assert (ROOT / source).resolve() == ROOT / "docker" / "config.yaml"

    tools = [s for s in services.values() if s.get("network_mode") == "service:auth-proxy"]
    assert tools, "no service shares the proxy's network namespace"
    for tool in tools:
        assert tool["depends_on"]["auth-proxy"]["condition"] == "service_healthy"
        command = " ".join(tool["command"])
        assert f"http://127.0.0.1:{config.listen.port}/" in command
        path = command.split(f"http://127.0.0.1:{config.listen.port}")[1].split()[0]
        assert any(path.startswith(r.match.prefix or "\0") for r in config.routes)

    grace = proxy["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > config.shutdown_timeout


def test_every_secret_file_the_config_reads_is_a_compose_secret() -> None:
    doc = compose()
    granted = set(doc["services"]["auth-proxy"]["secrets"])
    assert granted <= set(doc["secrets"])
    config = container_config(proxy_service_env())
    files = [
        secret.ref
        for route in config.routes
        for secret in vars(route.auth).values()
        if getattr(secret, "kind", None) == "file"
    ]
    assert files, "the example config should read its secrets from files"
    for path in files:
        assert path.startswith("/run/secrets/")
        assert path.removeprefix("/run/secrets/") in granted


def test_container_config_needs_its_variables() -> None:
    env = proxy_service_env()
    assert container_config(env).routes[0].auth.username == env["IICS_USER"]
    with pytest.raises(ConfigError, match="IICS_USER"):
        container_config({k: v for k, v in env.items() if k != "IICS_USER"})


def test_readme_documents_the_container() -> None:
    readme = (ROOT / "README.md").read_text()
    assert CONFIG_PATH in readme
    assert "docker compose" in readme and 'network_mode: "service:auth-proxy"' in readme

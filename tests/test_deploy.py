"""The deployment examples work with the package and agree with the image (no cluster or
systemd needed): deploy/kubernetes (the proxy as a native sidecar) and deploy/systemd.

They name what the Dockerfile and the package define (image, port, user, paths, the
console script and its commands); nothing else checks that they still match.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from helpers import ROOT, ivanti_key_route, run_cli
from test_docker import CONFIG_PATH, compose, env_of, final_stage, one

from proxy.cli import COMMANDS
from proxy.config import Config
from proxy.config.load import load_config
from proxy.core.hosts import is_loopback
from proxy.sandbox import Sandbox

KUBE = ROOT / "deploy" / "kubernetes"
UNIT = ROOT / "deploy" / "systemd" / "auth-proxy.service"
SYSTEMD_CONFIG = ROOT / "deploy" / "systemd" / "config.yaml"
STATE = "/var/lib/auth-proxy"

# --------------------------------------------------------------------------- Kubernetes


def manifest(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((KUBE / name).read_text())
    return doc


def pod() -> dict[str, Any]:
    job = manifest("job.yaml")
    assert job["kind"] == "Job"
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def sidecar() -> dict[str, Any]:
    (proxy,) = [c for c in pod()["initContainers"] if c["name"] == "auth-proxy"]
    return proxy


def mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container["volumeMounts"]}


def volumes() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod()["volumes"]}


def configmap_config(tmp_path: Path) -> tuple[Path, Config]:
    """The ConfigMap's config.yaml as a file, and as the proxy loads it in the image."""
    path = tmp_path / "config.yaml"
    path.write_text(manifest("configmap.yaml")["data"]["config.yaml"])
    return path, load_config(path, env=env_of(final_stage()))


def image_user() -> tuple[int, int]:
    uid, gid = one(final_stage(), "USER").split(":")
    return int(uid), int(gid)


def console_scripts() -> dict[str, str]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        scripts: dict[str, str] = tomllib.load(f)["project"]["scripts"]
    return scripts


def test_kustomization_applies_the_manifests_but_never_the_placeholder_secret() -> None:
    resources = manifest("kustomization.yaml")["resources"]
    assert sorted(resources) == ["configmap.yaml", "job.yaml"]
    for name in (*resources, "secret.example.yaml"):
        assert manifest(name)["apiVersion"]
    assert manifest("secret.example.yaml")["kind"] == "Secret"


def test_the_proxy_is_a_native_sidecar_of_the_tool(tmp_path: Path) -> None:
    spec = pod()
    proxy = sidecar()
    assert proxy["restartPolicy"] == "Always"  # what makes an init container a sidecar
    assert proxy["image"] == compose()["services"]["auth-proxy"]["image"]
    _path, config = configmap_config(tmp_path)
    assert is_loopback(config.listen.host) and config.client_auth is None
    port = config.listen.port
    assert [p["containerPort"] for p in proxy["ports"]] == [port]
    assert one(final_stage(), "EXPOSE") == str(port)
    (tool,) = spec["containers"]
    url = next(arg for arg in tool["command"] if arg.startswith("http://"))
    assert url.startswith(f"http://127.0.0.1:{port}/")
    path = url.removeprefix(f"http://127.0.0.1:{port}")
    assert any(path.startswith(r.match.prefix or "\0") for r in config.routes)
    assert spec["terminationGracePeriodSeconds"] > config.shutdown_timeout
    assert spec["automountServiceAccountToken"] is False


def test_the_pod_runs_as_the_image_user_on_a_read_only_root() -> None:
    spec = pod()
    uid, gid = image_user()
    context = spec["securityContext"]
    assert context["runAsNonRoot"] is True
    assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (uid, gid, gid)
    for container in [sidecar(), *spec["containers"]]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
    proxy = mounts(sidecar())
    # The state volume where the image keeps it, writable; /tmp writable too.
    assert one(final_stage(), "VOLUME") == STATE == env_of(final_stage())["AUTH_PROXY_STATE_DIR"]
    for path in (STATE, "/tmp"):
        assert not proxy[path].get("readOnly", False)
        assert "emptyDir" in volumes()[proxy[path]["name"]]
    # The config directory from the ConfigMap, whole (a subPath mount never updates).
    config = proxy[str(PurePosixPath(CONFIG_PATH).parent)]
    assert config["readOnly"] is True and "subPath" not in config
    source = volumes()[config["name"]]["configMap"]
    assert source["name"] == manifest("configmap.yaml")["metadata"]["name"]
    assert PurePosixPath(CONFIG_PATH).name in manifest("configmap.yaml")["data"]


def test_the_configmap_config_reads_every_secret_from_the_mounted_secret(
    tmp_path: Path,
) -> None:
    _path, config = configmap_config(tmp_path)
    secret_mount = next(m for m in sidecar()["volumeMounts"] if m["name"] == "secrets")
    secret = volumes()["secrets"]["secret"]
    assert secret["secretName"] == manifest("secret.example.yaml")["metadata"]["name"]
    keys = set(manifest("secret.example.yaml")["stringData"])
    files = [
        PurePosixPath(source.ref)
        for route in config.routes
        for source in vars(route.auth).values()
        if getattr(source, "kind", None) == "file"
    ]
    assert files, "the example config should read its secrets from files"
    assert {f.parent for f in files} == {PurePosixPath(secret_mount["mountPath"])}
    assert {f.name for f in files} == keys
    # Readable by uid 10001: the files' group is the pod's fsGroup, and may read.
    assert pod()["securityContext"]["fsGroup"] == image_user()[1]
    assert secret["defaultMode"] & 0o040 and not secret["defaultMode"] & 0o007


async def test_the_probes_ask_the_proxy_the_config_names(
    sandbox: Sandbox, make_proxy: Any, tmp_path: Path
) -> None:
    proxy = sidecar()
    ready, live = (
        proxy["readinessProbe"]["exec"]["command"],
        proxy["livenessProbe"]["exec"]["command"],
    )
    assert proxy["startupProbe"]["exec"]["command"] == ready
    assert ready[0] == live[0] and console_scripts()[ready[0]] == "proxy.cli:main"
    assert ready[1] == live[1] == "health" and "health" in COMMANDS
    path, _config = configmap_config(tmp_path)
    server = await make_proxy(routes=[ivanti_key_route(sandbox)])
    # The ConfigMap's config, with the port of a live proxy instead of 8080.
    env = {"AUTH_PROXY_CONFIG": str(path), "AUTH_PROXY_LISTEN": f"127.0.0.1:{server.port}"}

    async def probe(command: list[str]) -> int:
        done = await asyncio.to_thread(run_cli, *command[1:], env=env)
        return done.returncode

    assert (await probe(ready), await probe(live)) == (0, 0)
    server.state.draining = True  # as after SIGTERM: not ready, but alive
    assert (await probe(ready), await probe(live)) == (1, 0)


# --------------------------------------------------------------------------- systemd


def unit() -> dict[str, list[tuple[str, str]]]:
    """The unit file as sections of (key, value) pairs, in order (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def service(key: str) -> list[str]:
    return [v for k, v in unit()["Service"] if k == key]


def setting(key: str) -> str:
    (value,) = service(key)
    return value


def test_the_unit_runs_the_venv_console_script_with_the_config() -> None:
    command = setting("ExecStart").split()
    assert command[0] == "/opt/auth-proxy/bin/auth-proxy"  # pip install into a venv there
    assert PurePosixPath(command[0]).name in console_scripts()
    assert command[1] == "serve" and command[2:] == ["-c", CONFIG_PATH]
    assert setting("ExecReload") == "kill -HUP $MAINPID"
    assert setting("KillMode") == "mixed"  # SIGTERM to the supervisor, which stops its workers
    assert setting("Type") == "exec"
    config = load_config(SYSTEMD_CONFIG, env={})
    assert float(setting("TimeoutStopSec")) > config.shutdown_timeout
    assert is_loopback(config.listen.host) and config.client_auth is None
    assert ("WantedBy", "multi-user.target") in unit()["Install"]


def test_the_unit_is_sandboxed_and_keeps_its_state_in_the_state_directory() -> None:
    expected = {
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "RestrictSUIDSGID": "yes",
        "CapabilityBoundingSet": "",
        "StateDirectory": "auth-proxy",
        "ConfigurationDirectory": str(PurePosixPath(CONFIG_PATH).parent.name),
        "UMask": "0077",
    }
    assert {key: setting(key) for key in expected} == expected
    # %S is /var/lib for a system unit: the state directory, the image's path too.
    assert "AUTH_PROXY_STATE_DIR=%S/auth-proxy" in service("Environment")
    assert env_of(final_stage())["AUTH_PROXY_STATE_DIR"] == "/var/lib/" + setting("StateDirectory")


def test_every_secret_the_config_reads_is_a_credential_of_the_unit(tmp_path: Path) -> None:
    names = {value.split(":")[0] for value in service("LoadCredential")}
    for value in service("LoadCredential"):
        assert value.split(":", 1)[1].startswith("/etc/auth-proxy/credentials/")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name in names:
        (credentials / name).write_text("a secret\n")
    # `auth-proxy check` resolves every secret, as `serve` does before it listens.
    done = run_cli(
        "check",
        "-c",
        str(SYSTEMD_CONFIG),
        env={
            "CREDENTIALS_DIRECTORY": str(credentials),
            "AUTH_PROXY_STATE_DIR": str(tmp_path / "state"),
            "AUTH_PROXY_LISTEN": "127.0.0.1:0",
        },
    )
    assert done.returncode == 0, done.stderr
    # Without the variable (an operator's `check`), the path systemd uses.
    config = load_config(SYSTEMD_CONFIG, env={})
    files = {
        PurePosixPath(source.ref)
        for route in config.routes
        for source in vars(route.auth).values()
        if getattr(source, "kind", None) == "file"
    }
    assert {f.name for f in files} == names
    assert {str(f.parent) for f in files} == {"/run/credentials/auth-proxy.service"}


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (only `verify` is skipped: the unit's keys "
    "are checked above)",
)
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    # verify wants ExecStart's program to exist: this environment's console script.
    script = Path(sys.executable).parent / "auth-proxy"
    assert script.exists(), "the package is not installed in this environment"
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace("/opt/auth-proxy/bin/auth-proxy", str(script)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
        check=False,
    )
    # Unknown or misspelt keys are only warnings: any output counts.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")

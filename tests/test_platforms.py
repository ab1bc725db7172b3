"""Platforms without POSIX extras (Windows), simulated on this one.

A launcher script takes away what Windows lacks — ``fcntl`` (and the other POSIX-only
modules), ``SIGHUP``, ``loop.add_signal_handler``, uvloop — and then runs the real
command line, so these tests exercise the same code a Windows user runs.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from helpers import ROOT, iics_route, spawn_served, write_config

from proxy.sandbox import Sandbox

POSIX_ONLY = ("fcntl", "termios", "pwd", "grp", "resource", "pty", "tty", "syslog")

# Runs before anything of ours is imported: what a Windows Python would not have.
WINDOWS_LIKE = f"""
import asyncio, signal, sys
for name in {POSIX_ONLY!r} + ("uvloop",):
    sys.modules[name] = None  # importing it raises ImportError
del signal.SIGHUP, signal.SIGUSR1

class Loop(asyncio.SelectorEventLoop):
    def add_signal_handler(self, *args):
        raise NotImplementedError  # as the Proactor loop on Windows

class Policy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self):
        return Loop()

asyncio.set_event_loop_policy(Policy())
"""


def launcher(tmp_path: Path, extra: str = "") -> list[str]:
    script = tmp_path / "windows_like.py"
    script.write_text(
        WINDOWS_LIKE + extra + "\nfrom proxy.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    return [str(script)]


def test_no_module_imports_a_posix_only_module(tmp_path: Path) -> None:
    script = tmp_path / "import_all.py"
    script.write_text(
        WINDOWS_LIKE
        + "import pkgutil, importlib, proxy\n"
        + "for m in pkgutil.walk_packages(proxy.__path__, 'proxy.'):\n"
        + "    if m.name != 'proxy.__main__':  # that one runs the command line\n"
        + "        importlib.import_module(m.name)\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr


async def test_serve_without_fcntl_or_sighup_reloads_over_http_and_stops_on_sigterm(
    sandbox: Sandbox, tmp_path: Path, unused_tcp_port: int
) -> None:
    config = tmp_path / "config.yaml"
    listen = {"host": "127.0.0.1", "port": unused_tcp_port}
    # forward_proxy: its CA is created under the lock that needs fcntl on POSIX.
    fp = {"enabled": True}
    write_config(config, [iics_route(sandbox)], listen=listen, forward_proxy=fp)
    served = await spawn_served(config, unused_tcp_port, tmp_path, launcher=launcher(tmp_path))
    try:
        assert (tmp_path / "ca.pem").exists() and (tmp_path / "ca-key.pem").exists()
        write_config(
            config,
            [iics_route(sandbox), iics_route(sandbox, name="more", prefix="/more")],
            listen=listen,
            forward_proxy=fp,
        )
        async with aiohttp.ClientSession() as http:
            async with http.post(served.url("/-/reload"), headers={"X-Auth-Proxy": "1"}) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["added"] == ["more"]
            async with http.get(served.url("/more/saas/api/v2/agent")) as resp:
                assert resp.status == 200
        served.proc.send_signal(signal.SIGTERM)
        events = await served.finish()
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()
    assert any(e["event"] == "shutting_down" and e["signal"] == "SIGTERM" for e in events)


@pytest.mark.parametrize("command", ["check", "serve"])
def test_workers_need_fork(tmp_path: Path, command: str) -> None:
    config = tmp_path / "config.yaml"
    route = {
        "name": "r",
        "match": {"prefix": "/r"},
        "auth": {"type": "ivanti-api-key", "tenant": "t.example", "api_key": "k"},
    }
    write_config(config, [route], workers=2)
    result = subprocess.run(
        [
            sys.executable,
            *launcher(tmp_path, "import os\ndel os.fork\n"),
            command,
            "-c",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "workers: " in result.stderr and "workers: 1" in result.stderr
    assert "Traceback" not in result.stderr

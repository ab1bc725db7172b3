"""``workers: N``: N processes serving the same ports (SO_REUSEPORT), each with its own sessions.

The parent binds nothing it keeps: it binds one SO_REUSEPORT socket per worker and
listener, forks, and closes its copies, so the kernel spreads connections over the
workers only. It forwards SIGTERM/SIGINT/SIGHUP to the workers, restarts a worker that
dies unexpectedly, and exits when they have all stopped.

Workers share one thing: a login lockout board. A vendor that rejected the credentials
in one worker must not be asked again by the others (accounts lock), so a rejection is
written to a small file per route that every worker reads before it logs in. An entry
names the rejected credentials by a keyed fingerprint (``proxy.sessions.credentials``); the key
is made once in the supervisor, so the workers it forks compare the same fingerprints.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import dataclasses
import json
import os
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from proxy.config import Config

log = structlog.get_logger("auth_proxy.workers")

RESTART_DELAY = 1.0
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class Lockout:
    until: float
    message: str
    credentials: str  # fingerprint of the rejected credentials: others are not locked out


class LockoutBoard:
    """Login rejections shared between worker processes, one file per route."""

    def __init__(self, directory: Path, key: bytes) -> None:
        self.directory = directory
        self.key = key  # for credential fingerprints

    def _path(self, route: str) -> Path:
        return self.directory / f"{route}.json"

    def get(self, route: str) -> Lockout | None:
        try:
            data = json.loads(self._path(route).read_text())
            return Lockout(float(data["until"]), str(data["message"]), str(data["credentials"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, route: str, lockout: Lockout) -> None:
        tmp = self._path(route).with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(lockout)))
        tmp.replace(self._path(route))  # atomic: readers see the old or the new file

    def clear(self, route: str) -> None:
        self._path(route).unlink(missing_ok=True)


Sockets = dict[tuple[str, int], socket.socket]  # keyed by the configured (host, port)


def bind_listeners(config: Config) -> Sockets:
    """One SO_REUSEPORT socket per listener, on the configured ports (0: any free one)."""
    from proxy.server.app import bind_socket

    wanted = [(config.listen.host, config.listen.port)] + [
        (r.match.listen.host or config.listen.host, r.match.listen.port)
        for r in config.routes
        if r.match.listen is not None
    ]
    return {(host, port): bind_socket(host, port, reuse_port=True) for host, port in wanted}


class Supervisor:
    def __init__(self, config: Config, config_path: Path | None) -> None:
        self.config = config
        self.config_path = config_path
        self.stopping = False
        self.pids: dict[int, int] = {}  # pid -> worker index
        self.board = LockoutBoard(
            Path(tempfile.mkdtemp(prefix="auth-proxy-lockouts-")), os.urandom(32)
        )
        self.ports: dict[tuple[str, int], int] = {}

    def _bind(self) -> Sockets:
        """Fresh SO_REUSEPORT sockets on the ports the first worker's sockets got."""
        from proxy.server.app import bind_socket

        return {key: bind_socket(key[0], port, reuse_port=True) for key, port in self.ports.items()}

    def run(self) -> int:
        first = bind_listeners(self.config)
        self.ports = {key: sock.getsockname()[1] for key, sock in first.items()}
        log.info("workers_starting", workers=self.config.workers, ports=sorted(self.ports.values()))
        for index in range(self.config.workers):
            self._spawn(index, first if index == 0 else self._bind())
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop)
        signal.signal(signal.SIGHUP, self._forward)
        try:
            return self._wait()
        finally:
            for path in self.board.directory.glob("*"):
                path.unlink(missing_ok=True)
            self.board.directory.rmdir()

    def _spawn(self, index: int, sockets: Sockets) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                _exit_with_parent()
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                structlog.contextvars.bind_contextvars(worker=index)
                code = _worker_main(self.config, self.config_path, sockets, self.board)
            finally:
                os._exit(code)
        # The parent never accepts: a socket it kept open would still be handed connections.
        for sock in sockets.values():
            sock.close()
        self.pids[pid] = index

    def _on_stop(self, signum: int, frame: Any) -> None:
        self.stopping = True
        self._forward(signum, frame)

    def _forward(self, signum: int, _frame: Any) -> None:
        for pid in list(self.pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _wait(self) -> int:
        worst = 0
        while self.pids:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            index = self.pids.pop(pid, None)
            if index is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                worst = max(worst, code)
                continue
            log.error("worker_died", worker=index, exit_code=code)
            time.sleep(RESTART_DELAY)
            if not self.stopping:
                self._spawn(index, self._bind())
        return worst


def _exit_with_parent() -> None:
    """Linux: get SIGTERM if the supervisor dies (even by SIGKILL), so no worker is orphaned."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor's own handlers remain
        return
    if os.getppid() == 1:  # the parent died before the call took effect
        os._exit(1)


def _worker_main(
    config: Config,
    config_path: Path | None,
    sockets: dict[tuple[str, int], socket.socket],
    board: LockoutBoard,
) -> int:
    from proxy.cli import _install_uvloop, serve

    _install_uvloop()
    return asyncio.run(serve(config, config_path, sockets=sockets, lockouts=board))


def run_workers(config: Config, config_path: Path | None) -> int:
    return Supervisor(config, config_path).run()

"""``workers: N``: N processes serving the same ports (SO_REUSEPORT).

The supervisor binds one SO_REUSEPORT socket per worker and listener, forks, and closes
its copies, so the kernel spreads connections over the workers only. Each worker runs
the ``target`` it was given (the CLI's serve loop), the way uvicorn's supervisors take a
target callable. It forwards SIGTERM/SIGINT/SIGHUP to the workers, restarts a worker
that dies unexpectedly, and exits when they have all stopped.

What the workers share (sessions, login leases, rejections) they share through the
session store; the supervisor knows nothing of it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import structlog

from proxy.config import Config
from proxy.server.listeners import Sockets, bind_listeners, bind_socket

log = structlog.get_logger("auth_proxy.workers")

RESTART_DELAY = 1.0
PR_SET_PDEATHSIG = 1

# What a worker process runs: its sockets in, an exit code out.
WorkerTarget = Callable[[Sockets], int]


class Supervisor:
    def __init__(
        self,
        config: Config,
        target: WorkerTarget,
        on_exit: Callable[[int], None] = lambda pid: None,
    ) -> None:
        self.config = config
        self.target = target
        self.on_exit = on_exit  # called with the pid of a worker that ended
        self.stopping = False
        self.pids: dict[int, int] = {}  # pid -> worker index
        self.ports: dict[tuple[str, int], int] = {}

    def _bind(self) -> Sockets:
        """Fresh SO_REUSEPORT sockets on the ports the first worker's sockets got."""
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
        return self._wait()

    def _spawn(self, index: int, sockets: Sockets) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                _exit_with_parent()
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                structlog.contextvars.bind_contextvars(worker=index)
                code = self.target(sockets)
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
            self.on_exit(pid)
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

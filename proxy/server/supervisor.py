"""``workers: N``: N processes serving the same ports (SO_REUSEPORT; README, "Workers").

The supervisor binds one SO_REUSEPORT socket per worker and listener, forks, and closes
its copies, so the kernel spreads connections over the workers only. Each worker runs
the ``target`` it was given (the CLI's serve loop), the way uvicorn's supervisors take a
target callable.

The supervisor holds the current config. On SIGHUP, or when a worker asks (``POST
/-/reload``), it reads and validates the file and sends what it accepted to every worker
(``server.workerlink``); a file it refuses leaves it and the workers on the config they
had. A worker it starts again runs that current config, listening as its siblings do on
what they all started with. A worker that dies is restarted after a delay that doubles
while it keeps dying soon after its start (``Backoff``). SIGTERM, SIGINT and SIGUSR1
(reopen the audit log) are forwarded; the supervisor exits when every worker has stopped.

What the workers share (sessions, login leases, rejections) they share through the
session store; the supervisor knows nothing of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from proxy.config import Config, ConfigError
from proxy.core.errors import ProxyError
from proxy.server.guard import Guard
from proxy.server.listeners import Sockets, bind_listeners, bind_socket
from proxy.server.workerlink import Frames, Outbox, Reloaded, ReloadRequest, link_pair

log = structlog.get_logger("auth_proxy.workers")

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class WorkerStart:
    """What a worker process is started with."""

    index: int
    sockets: Sockets
    config: Config  # the supervisor's current config
    startup: Config  # what the listeners were bound for
    link: socket.socket  # the worker's end of its channel to the supervisor


# What a worker process runs: its start in, an exit code out.
WorkerTarget = Callable[[WorkerStart], int]


@dataclass(slots=True)
class Backoff:
    """When to restart a worker that died: ``first`` seconds, doubled for each death in
    a row up to ``cap``; a worker that ran ``stable`` seconds starts the count again."""

    first: float = 1.0
    cap: float = 30.0
    stable: float = 60.0
    deaths: int = 0  # in a row, each soon after its start

    def delay(self, lived: float) -> float:
        if lived >= self.stable:
            self.deaths = 0
        delay = min(self.cap, self.first * 2**self.deaths)
        self.deaths += 1
        return delay


@dataclass(slots=True)
class Worker:
    index: int
    pid: int | None = None
    link: socket.socket | None = None  # the supervisor's end
    frames: Frames = field(default_factory=Frames)
    outbox: Outbox = field(default_factory=Outbox)  # what it has not read yet
    started: float = 0.0  # time.monotonic() at its start
    restart_at: float | None = None
    backoff: Backoff = field(default_factory=Backoff)


class Supervisor:
    def __init__(
        self,
        config: Config,
        target: WorkerTarget,
        read: Callable[[], Config],
        on_exit: Callable[[int], None] = lambda pid: None,
    ) -> None:
        """``read``: the config file, read and validated (raises ``ConfigError``);
        ``on_exit``: called with the pid of a worker that ended."""
        self.startup = self.config = config
        self.target = target
        self.read = read
        self.on_exit = on_exit
        self.stopping = False
        self.workers = [Worker(i) for i in range(config.workers)]
        self.ports: dict[tuple[str, int], int] = {}
        self.selector = selectors.DefaultSelector()
        self._signals: list[int] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self.worst = 0

    def _bind(self) -> Sockets:
        """Fresh SO_REUSEPORT sockets on the ports the first worker's sockets got."""
        return {key: bind_socket(key[0], port, reuse_port=True) for key, port in self.ports.items()}

    def run(self) -> int:
        first = bind_listeners(self.startup)
        self.ports = {key: sock.getsockname()[1] for key, sock in first.items()}
        log.info("workers_starting", workers=len(self.workers), ports=sorted(self.ports.values()))
        for sock in (self._wake_r, self._wake_w):
            sock.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ)
        signal.set_wakeup_fd(self._wake_w.fileno())
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1):
            signal.signal(sig, self._on_signal)
        for worker in self.workers:
            self._spawn(worker, first if worker.index == 0 else self._bind())
        try:
            return self._loop()
        finally:
            signal.set_wakeup_fd(-1)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals.append(signum)  # handled in the loop, not in the middle of it

    def _loop(self) -> int:
        while True:
            while self._signals:
                self._handle(self._signals.pop(0))
            self._reap()
            if self.stopping and not any(w.pid for w in self.workers):
                return self.worst
            self._restart_due()
            for key, events in self.selector.select(self._timeout()):
                if key.fileobj is self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        self._wake_r.recv(4096)
                    continue
                if events & selectors.EVENT_WRITE:
                    self._flush(key.data)
                if events & selectors.EVENT_READ:
                    self._read_link(key.data)

    def _timeout(self) -> float | None:
        due = [w.restart_at for w in self.workers if w.restart_at is not None]
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _handle(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True
            for worker in self.workers:
                worker.restart_at = None
                if worker.pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(worker.pid, signum)
        elif signum == signal.SIGHUP and not self.stopping:
            self._reload(None)
        elif signum == signal.SIGUSR1:  # reopen the audit log (after a rotation)
            for worker in self.workers:
                if worker.pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(worker.pid, signum)

    # ------------------------------------------------------------------ reload

    def _reload(self, asked_by: tuple[Worker, int] | None) -> None:
        """Read the file; send what came of it to every worker. ``asked_by``: the worker
        and token of a ``POST /-/reload``, answered by the same message."""
        try:
            config = self.read()
            asyncio.run(Guard().load(config))  # client tokens that cannot be read
        except (ConfigError, ProxyError) as exc:
            error = exc.message if isinstance(exc, ProxyError) else str(exc)
            log.error("reload_failed", error=error)
            self._send_all(lambda w: Reloaded(None, error, _token(w, asked_by)))
            return
        self.config = config
        self._send_all(lambda w: Reloaded(config, None, _token(w, asked_by)))

    def _send_all(self, message: Callable[[Worker], Reloaded]) -> None:
        for worker in self.workers:
            if worker.pid and worker.link is not None:
                worker.outbox.put(message(worker))
                self._flush(worker)

    def _flush(self, worker: Worker) -> None:
        """Send what the worker's socket takes; watch it for more room if some is left."""
        if worker.link is None:
            return
        worker.outbox.flush(worker.link)
        waiting = selectors.EVENT_WRITE if worker.outbox else 0
        self.selector.modify(worker.link, selectors.EVENT_READ | waiting, worker)

    def _read_link(self, worker: Worker) -> None:
        if worker.link is None:  # closed by a write to it just before
            return
        try:
            data = worker.link.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the worker is gone; its death is seen by _reap
            self._close_link(worker)
            return
        for message in worker.frames.feed(data):
            if isinstance(message, ReloadRequest) and not self.stopping:
                self._reload((worker, message.token))

    # ------------------------------------------------------------------ processes

    def _spawn(self, worker: Worker, sockets: Sockets) -> None:
        ours, theirs = link_pair()
        start = WorkerStart(worker.index, sockets, self.config, self.startup, theirs)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                self._become_worker(parent, ours)
                structlog.contextvars.bind_contextvars(worker=worker.index)
                code = self.target(start)
            except Exception as exc:  # it could not start: the supervisor restarts it
                log.error("worker_failed", error=str(exc))
            finally:
                os._exit(code)
        # The parent never accepts: a socket it kept open would still be handed connections.
        for sock in sockets.values():
            sock.close()
        theirs.close()
        worker.pid, worker.link, worker.frames, worker.outbox = pid, ours, Frames(), Outbox()
        worker.started, worker.restart_at = time.monotonic(), None
        self.selector.register(ours, selectors.EVENT_READ, worker)
        log.info("worker_started", worker=worker.index, pid=pid)

    def _become_worker(self, parent: int, ours: socket.socket) -> None:
        """In the child: drop the supervisor's signal handling and descriptors."""
        _exit_with_parent(parent)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        # A log rotation's signal must not kill a worker still starting up.
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        self.selector.close()
        for sock in (ours, self._wake_r, self._wake_w):
            sock.close()
        for other in self.workers:
            if other.link is not None:
                other.link.close()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = next((w for w in self.workers if w.pid == pid), None)
            if worker is not None:
                self.on_exit(pid)
                self._died(worker, os.waitstatus_to_exitcode(status))

    def _died(self, worker: Worker, code: int) -> None:
        worker.pid = None
        self._close_link(worker)
        if self.stopping:
            self.worst = max(self.worst, code)
            return
        delay = worker.backoff.delay(time.monotonic() - worker.started)
        log.error("worker_died", worker=worker.index, exit_code=code, restart_in=delay)
        worker.restart_at = time.monotonic() + delay

    def _restart_due(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if worker.restart_at is not None and worker.restart_at <= now:
                self._spawn(worker, self._bind())

    def _close_link(self, worker: Worker) -> None:
        if worker.link is not None:
            self.selector.unregister(worker.link)
            worker.link.close()
            worker.link = None


def _token(worker: Worker, asked_by: tuple[Worker, int] | None) -> int | None:
    return asked_by[1] if asked_by is not None and asked_by[0] is worker else None


def _exit_with_parent(parent: int) -> None:
    """Linux: get SIGTERM if the supervisor (pid ``parent``) dies, even by SIGKILL, so no
    worker is orphaned. The supervisor may well be pid 1 itself, in a container."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor's own handlers remain
        return
    if os.getppid() != parent:  # it died before the call took effect
        os._exit(1)

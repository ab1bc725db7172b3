"""The audit log (``log.audit``): who changed what, and who was refused (README,
"Audit log").

One JSON line per request that is not a read (a method other than GET and HEAD) and
per request the proxy refused or failed. Each line is written with one ``os.write`` to a
file opened ``O_APPEND``, so the workers of one proxy can share the file without
interleaving lines. The data reaches the operating system at once; ``fsync`` runs at
most once a second (and at close) in a thread of its own, never on the event loop.

A failing disk (``ENOSPC``, a directory that cannot be made) never stops a request: the line is
lost, counted (``on_error``) and the failure logged once, until writing works again.
A file removed under the proxy (its name gone) is created again at the next line.
``reopen()`` starts a new file at the same path after a rotation (SIGHUP, SIGUSR1).
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import structlog

log = structlog.get_logger("auth_proxy.audit")

SYNC_INTERVAL = 1.0  # seconds: at most one fsync this often
# What fsync says of files it cannot sync (a character device such as /dev/null).
_UNSYNCABLE = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EROFS})
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


def _timestamp(now: float) -> str:
    second = int(now)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{text}.{int((now - second) * 1_000_000):06d}Z"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _sync(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _UNSYNCABLE:
            raise


def _removed(fd: int) -> bool:
    """Whether the open file no longer has a name (one ``fstat``, a microsecond)."""
    try:
        return os.fstat(fd).st_nlink == 0
    except OSError:
        return False  # the write that follows reports it


def _sync_and_close(fd: int) -> None:
    try:
        _sync(fd)
    finally:
        os.close(fd)


class AuditLog:
    def __init__(self, path: str, on_error: Callable[[], object] = lambda: None) -> None:
        self.path = path
        self.errors = 0  # lines lost since the start
        self._on_error = on_error
        self._failing = False
        self._lost = 0  # lines lost since writing last worked
        self._context = ""
        self._fd: int | None = None
        self._dirty = False
        self._timer: asyncio.TimerHandle | None = None
        self._last_sync = 0.0
        # One thread: fsyncs and closes run in the order they were asked for, so a file
        # is never closed under a running fsync (nor its descriptor number reused).
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-sync")
        self._open()

    def _open(self) -> None:
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            self._fd = os.open(self.path, _FLAGS, 0o600)
        except OSError as exc:
            self._fd = None
            self._failed(exc)

    def write(
        self,
        *,
        client: str | None,
        client_addr: str | None,
        route: str | None,
        method: str,
        path: str,
        status: int,
        request_id: str,
        code: str | None,
    ) -> None:
        """One line; ``path`` already redacted as in the access log."""
        if not self._context:
            bound = structlog.contextvars.get_contextvars()  # e.g. the worker's index
            self._context = "".join(f", {json.dumps(k)}: {json.dumps(v)}" for k, v in bound.items())
        record = {
            "timestamp": _timestamp(time.time()),
            "client": client,
            "client_addr": client_addr,
            "route": route,
            "method": method,
            "path": path,
            "status": status,
            "request_id": request_id,
            "code": code,
        }
        line = json.dumps(record)[:-1] + self._context + "}\n"
        if self._fd is not None and _removed(self._fd):
            # Removed under us (``rm``, a directory cleaned up): lines written on would
            # reach nobody. Start the file again, as a rotation does.
            log.warning("audit_file_removed", path=self.path)
            self._thread.submit(_sync_and_close, self._fd)
            self._fd = None
        if self._fd is None:
            self._open()  # the file may be creatable again (a directory restored)
            if self._fd is None:
                return
        try:
            _write_all(self._fd, line.encode())
        except OSError as exc:
            self._failed(exc)
            return
        if self._failing:
            self._failing = False
            log.info("audit_write_recovered", path=self.path, lost=self._lost)
            self._lost = 0
        self._dirty = True
        self._schedule_sync()

    def _failed(self, exc: OSError) -> None:
        self.errors += 1
        self._lost += 1
        self._on_error()
        if not self._failing:
            self._failing = True
            log.error("audit_write_failed", path=self.path, error=exc.strerror or str(exc))

    # ------------------------------------------------------------------ durability

    def _schedule_sync(self) -> None:
        if self._timer is not None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._last_sync + SYNC_INTERVAL - loop.time())
        self._timer = loop.call_later(delay, self._start_sync)

    def _start_sync(self) -> None:
        self._timer = None
        if not self._dirty or self._fd is None:
            return
        self._dirty = False
        self._last_sync = asyncio.get_running_loop().time()
        self._thread.submit(_sync, self._fd).add_done_callback(self._synced)

    def _synced(self, done: Future[None]) -> None:
        exc = done.exception()
        if isinstance(exc, OSError):  # runs in the sync thread: log only
            log.error("audit_sync_failed", path=self.path, error=exc.strerror or str(exc))

    # ------------------------------------------------------------------ rotation, close

    def reopen(self) -> None:
        """Write to a new file at ``path`` (after a rotation renamed the old one)."""
        old = self._fd
        self._open()
        if old is not None:
            self._thread.submit(_sync_and_close, old)
        log.info("audit_reopened", path=self.path)

    async def close(self) -> None:
        """Sync and close the file, and stop the sync thread."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                await asyncio.wrap_future(self._thread.submit(_sync_and_close, fd))
            except OSError as exc:
                log.error("audit_sync_failed", path=self.path, error=exc.strerror or str(exc))
        self._thread.shutdown(wait=False)

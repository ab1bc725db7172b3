"""The channel between the ``workers: N`` supervisor and each worker (README, "Workers").

The supervisor holds the current config: it reads and validates the file on a reload
and sends the config it accepted (or why it refused the file) to every worker, so all
of them, and any worker it starts later, run the same config even when the file changes
again meanwhile. A worker asked to reload (``POST /-/reload``, or a SIGHUP sent to the
worker itself) asks the supervisor, and answers with what applying its answer did.

One Unix socket pair per worker, made before the fork; each message is a length-prefixed
pickle. Only the two processes hold its ends, so nothing else can write to it. The
supervisor never waits on a worker: what a worker has not read yet waits in its
``Outbox``, where a newer config replaces the ones not begun, so a hung worker costs the
supervisor one config's worth of memory and resumes on the last one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import pickle
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from proxy.config import Config
from proxy.server.state import ReloadResult

log = structlog.get_logger("auth_proxy.workers")

_LENGTH = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class ReloadRequest:
    """Worker to supervisor: read the file again; ``token`` comes back in the answer."""

    token: int


@dataclass(frozen=True, slots=True)
class Reloaded:
    """Supervisor to worker: the config to run, or ``error`` when the file was refused
    (the worker keeps its config). ``token`` names the request it answers, if any."""

    config: Config | None
    error: str | None = None
    token: int | None = None


def encode(message: ReloadRequest | Reloaded) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


class Frames:
    """Messages out of a byte stream that arrives in pieces."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[ReloadRequest | Reloaded]:
        self._buffer += data
        out = []
        while len(self._buffer) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(self._buffer)
            end = _LENGTH.size + size
            if len(self._buffer) < end:
                break
            out.append(pickle.loads(self._buffer[_LENGTH.size : end]))
            self._buffer = self._buffer[end:]
        return out


def link_pair() -> tuple[socket.socket, socket.socket]:
    """(the supervisor's end, which never blocks, the worker's end)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    return ours, theirs


class Outbox:
    """The supervisor's messages to one worker that it has not taken yet."""

    def __init__(self) -> None:
        self._started = b""  # the rest of a message partly sent: it must go on whole
        self._queue: list[Reloaded] = []

    def __bool__(self) -> bool:
        return bool(self._started or self._queue)

    def put(self, message: Reloaded) -> None:
        """Queue ``message``. A config is the whole of it: a newer one makes the earlier
        configs not begun pointless, unless they answer a request (``token``)."""
        if message.config is not None:
            self._queue = [m for m in self._queue if m.token is not None]
        self._queue.append(message)

    def flush(self, sock: socket.socket) -> None:
        """Send what the socket takes now; the rest waits for it to be writable. A worker
        that died or hangs misses nothing it still needs: its replacement starts with
        the supervisor's current config anyway."""
        try:
            while self:
                if not self._started:
                    self._started = encode(self._queue.pop(0))
                self._started = self._started[sock.send(self._started) :]
        except BlockingIOError:
            return
        except OSError as exc:
            log.warning("worker_link_failed", error=str(exc))
            self._started, self._queue = b"", []


class SupervisorLink:
    """A worker's end: applies what the supervisor sends, and asks it for reloads."""

    def __init__(
        self,
        sock: socket.socket,
        apply: Callable[[Config], Awaitable[ReloadResult]],
        refused: Callable[[str], ReloadResult],
    ) -> None:
        self._sock = sock
        self._apply = apply
        self._refused = refused
        self._tokens = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[ReloadResult]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._requests: set[asyncio.Task[ReloadResult]] = set()

    async def start(self) -> None:
        self._sock.setblocking(False)
        reader, self._writer = await asyncio.open_unix_connection(sock=self._sock)
        self._task = asyncio.get_running_loop().create_task(self._read(reader))

    async def request_reload(self) -> ReloadResult:
        """Have the supervisor read the file; what applying its answer did here."""
        if self._writer is None or self._writer.is_closing():
            return ReloadResult(ok=False, error="the supervisor cannot be reached")
        token = next(self._tokens)
        future = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        self._writer.write(encode(ReloadRequest(token)))
        await self._writer.drain()
        return await future

    def schedule_reload(self) -> None:
        """From a SIGHUP sent to this worker: the same as ``request_reload``."""
        task = asyncio.get_running_loop().create_task(self.request_reload())
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        frames = Frames()
        while data := await reader.read(65536):
            for message in frames.feed(data):
                if not isinstance(message, Reloaded):
                    continue
                if message.config is not None:
                    result = await self._apply(message.config)
                else:
                    result = self._refused(message.error or "the config was refused")
                waiting = self._waiting.pop(message.token, None) if message.token else None
                if waiting is not None and not waiting.done():
                    waiting.set_result(result)
        for future in self._waiting.values():  # the supervisor is gone
            if not future.done():
                future.set_result(ReloadResult(ok=False, error="the supervisor is gone"))
        self._waiting.clear()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._writer is not None:
            self._writer.close()

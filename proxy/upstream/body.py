"""A request body on its way upstream: kept for a replay when small enough, else streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from proxy.upstream.watchdog import Watch

CHUNK = 256 * 1024


class Body:
    """A request body: kept in memory when it may need a replay, else streamed once.

    A client that hangs up mid-body cancels the whole request (aiohttp's
    ``handler_cancellation``, set where the listeners start), so a broken read never surfaces here.
    """

    def __init__(self, request: web.BaseRequest, limit: int) -> None:
        self._request = request
        self._limit = limit
        self.kept: bytes | None = None
        self._prefix: list[bytes] = []
        self.empty = not request.can_read_body

    async def prepare(self) -> None:
        if self.empty:
            self.kept = b""
            return
        length = self._request.content_length
        if length is not None and length > self._limit:
            return  # streamed as it arrives
        # Keep it if it ends within the limit, else stream on from what we have read. Not
        # ``request.read()``: that applies aiohttp's own cap (client_max_size, 1 MiB).
        size = 0
        content = self._request.content
        while size <= self._limit:
            chunk = await content.readany()
            if not chunk:
                self.kept = b"".join(self._prefix)
                self._prefix = []
                return
            self._prefix.append(chunk)
            size += len(chunk)

    @property
    def replayable(self) -> bool:
        return self.kept is not None

    def data(self, deadline: Watch) -> bytes | AsyncIterator[bytes] | None:
        if self.kept is not None:
            return self.kept if self.kept or not self.empty else None
        return self._stream(deadline)

    async def _stream(self, deadline: Watch) -> AsyncIterator[bytes]:
        prefix, self._prefix = self._prefix, []
        for chunk in prefix:
            yield chunk
        async for chunk in self._request.content.iter_chunked(CHUNK):
            deadline.extend()  # a long upload is progress, not a stalled upstream
            yield chunk

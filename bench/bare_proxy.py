"""A bare aiohttp reverse proxy: the floor for anything built on aiohttp (bench/bench.py).

One pooled ``ClientSession``, one added header, the response streamed back. No routing,
sessions, logging or error handling. ``--workers N`` runs N processes, each with its own
SO_REUSEPORT socket on the same port.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

try:
    from uvloop import run
except ImportError:
    from asyncio import run

NOT_FORWARDED = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding"}
    | {"upgrade", "host"}
)
CHUNK = 256 * 1024


def kept(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in NOT_FORWARDED)


async def serve(port: int, upstream: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512), auto_decompress=False)

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        headers = kept(request.headers)
        headers["X-Auth"] = "bench-token"
        async with client.request(
            request.method,
            URL(upstream + request.raw_path, encoded=True),
            headers=headers,
            data=request.content if request.can_read_body else None,
            allow_redirects=False,
        ) as answer:
            response = web.StreamResponse(status=answer.status, reason=answer.reason)
            response.headers.extend(kept(answer.headers))
            await response.prepare(request)
            async for chunk in answer.content.iter_chunked(CHUNK):
                await response.write(chunk)
            await response.write_eof()
            return response

    runner = web.ServerRunner(web.Server(handle), handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="origin, e.g. http://127.0.0.1:8000")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.workers == 1:
        run(serve(args.port, args.upstream))
        return
    pids = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            run(serve(args.port, args.upstream))
            os._exit(0)
        pids.append(pid)
    signal.signal(signal.SIGTERM, lambda *_: [os.kill(pid, signal.SIGTERM) for pid in pids])
    for pid in pids:
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()

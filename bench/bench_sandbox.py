"""The vendor side of bench/bench.py: the sandbox, with its IICS login pointing at nginx.

Runs ``proxy.sandbox.run_sandbox()`` with a ``serverUrl`` of ``--server-url`` (the
benchmark's nginx), so the ``iics`` route logs in here and forwards there. Also serves a
sink: ``POST /sink`` reads the body in chunks and discards it, answering the byte count;
``GET /stats`` answers the number of logins the sandbox has seen. Prints its URLs as one
JSON line on stdout and runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket

from aiohttp import web

from proxy.sandbox.runner import run_sandbox
from proxy.sandbox.state import SandboxState

CHUNK = 256 * 1024


def build_sink_app(state: SandboxState) -> web.Application:
    async def sink(request: web.Request) -> web.Response:
        size = 0
        async for chunk in request.content.iter_chunked(CHUNK):
            size += len(chunk)
        return web.json_response({"bytes": size})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"logins": len(state.logins)})

    app = web.Application()
    app.router.add_post("/sink", sink)
    app.router.add_get("/stats", stats)
    return app


async def main(server_url: str) -> None:
    state = SandboxState(server_url_override=server_url)
    async with run_sandbox(state, base_port=0) as sandbox:
        sock = socket.create_server(("127.0.0.1", 0))
        runner = web.AppRunner(build_sink_app(state), access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        sink = f"http://127.0.0.1:{sock.getsockname()[1]}"
        print(json.dumps({"login": sandbox.urls.login, "sink": sink}), flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-url", required=True, help="serverUrl the IICS login answers")
    asyncio.run(main(parser.parse_args().server_url))

"""The fake IICS POD host (``na1.dm-us.informaticacloud.com``): the REST APIs a session
opens, large exports and imports, and test helpers (echo, status, slow)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import re
from collections.abc import Iterator

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from proxy.sandbox.appkit import (
    add_handlers,
    body_chunks,
    journal_middleware,
    read_json_object,
    route,
)
from proxy.sandbox.iics import dead_session, malformed_v2, str_field, v2_error, v3_error
from proxy.sandbox.state import IicsSession, SandboxState, SandboxUrls
from proxy.sandbox.tokens import random_id

EXPORT_CHUNK = 64 * 1024
# A prime-length pattern never lines up with chunk boundaries, so a dropped, repeated
# or reordered chunk changes the digest.
_PATTERN_LENGTH = 251
_PATTERN_TILE = bytes(range(_PATTERN_LENGTH)) * (EXPORT_CHUNK // _PATTERN_LENGTH + 2)


def export_bytes(size: int) -> Iterator[bytes]:
    """The deterministic content of export ``size-<size>``, in 64 KiB chunks."""
    offset = 0
    while offset < size:
        length = min(EXPORT_CHUNK, size - offset)
        start = offset % _PATTERN_LENGTH
        yield _PATTERN_TILE[start : start + length]
        offset += length


def expected_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for chunk in export_bytes(size):
        digest.update(chunk)
    return digest.hexdigest()


def _session_header(path: str) -> tuple[str, ...]:
    if path.startswith("/saas/api/v2/"):
        return ("icSessionId", "INFA-SESSION-ID")
    if path.startswith("/saas/public/core/v3/"):
        return ("INFA-SESSION-ID",)
    return ("IDS-SESSION-ID",)


def _presented_session_id(request: web.Request) -> str | None:
    """The session id from the header that the request's path calls for."""
    headers = _session_header(request.path)
    return next((request.headers[h] for h in headers if h in request.headers), None)


_VALID_SESSION_ID = "/saas/api/v2/user/validSessionId"


def _probe_service(request: web.Request) -> str | None:
    """validSessionId is journaled apart: it asks about a session, it is not API traffic."""
    return "iics-probe" if request.path == _VALID_SESSION_ID else None


def _require_session(state: SandboxState) -> Middleware:
    """Refuse any POD request without a live session (and mark the session as used).

    validSessionId is the exception: the session it asks about is in its body.
    """

    @web.middleware
    async def require_session(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == _VALID_SESSION_ID:
            return await handler(request)
        if state.use_iics_session(_presented_session_id(request)) is None:
            return dead_session(request.path)
        return await handler(request)

    return require_session


class _Pod:
    """Handlers of a POD host (``na1.dm-us.informaticacloud.com``); all need a session."""

    def __init__(self, state: SandboxState, urls: SandboxUrls) -> None:
        self.state = state
        self.urls = urls

    def _session(self, request: web.Request) -> IicsSession:
        """The session that ``_require_session`` already found live."""
        return self.state.iics_sessions[_presented_session_id(request) or ""]

    @route("GET", "/saas/api/v2/agent")
    async def agents(self, request: web.Request) -> web.Response:
        org_id = self.state.iics_users[self._session(request).username].legacy_org_id
        agents = [
            {
                "@type": "agent",
                "id": f"01000008000000000{number:03d}",
                "orgId": org_id,
                "name": f"sandbox-agent-{number}",
                "description": "",
                "createTime": "2024-02-01T08:00:00.000Z",
                "updateTime": "2024-02-01T08:00:00.000Z",
                "createdBy": "demo",
                "updatedBy": "demo",
                "active": active,
                "readyToRun": active,
                "platform": "linux64",
                "agentHost": f"agent{number}.sandbox.localhost",
                "agentVersion": "65.0.4",
            }
            for number, active in ((1, True), (2, False))
        ]
        return web.json_response(agents)

    @route("POST", "/saas/api/v2/user/logout")
    async def v2_logout(self, request: web.Request) -> web.Response:
        self.state.iics_sessions.pop(self._session(request).session_id, None)
        return web.Response(status=200)

    @route("POST", "/saas/public/core/v3/logout")
    async def v3_logout(self, request: web.Request) -> web.Response:
        self.state.iics_sessions.pop(self._session(request).session_id, None)
        return web.json_response({})

    @route("POST", _VALID_SESSION_ID)
    async def valid_session_id(self, request: web.Request) -> web.Response:
        """How long the session in the body has left, in whole minutes; not a use of it."""
        body = await read_json_object(request)
        if body is None:
            return malformed_v2()
        username, token = str_field(body, "userName"), str_field(body, "icToken")
        if username is None or token is None:
            return v2_error(400, "APP_10000", "userName and icToken are required.")
        session = self.state.iics_sessions.get(token)
        left = 0.0
        if session is not None and session.username == username:
            left = self.state.iics_time_left(session)
        return web.json_response(
            {
                "@type": "validatedToken",
                "timeUntilExpire": max(0, math.floor(left / 60)),
                "isValidToken": left > 0,
            }
        )

    @route("GET", "/saas/public/core/v3/objects")
    async def objects(self, request: web.Request) -> web.Response:
        objects = [
            {
                "id": f"obj{number:019d}",
                "path": f"Default/mapping_{number}",
                "type": "DTEMPLATE",
                "description": "",
                "updateTime": "2024-03-01T10:00:00.000Z",
            }
            for number in range(1, 4)
        ]
        try:
            limit = int(request.query.get("limit", len(objects)))
        except ValueError:
            return v3_error(400, "APP_10001", "limit must be an integer.")
        shown = objects[: max(limit, 0)]
        return web.json_response(
            {"count": len(shown), "objects": shown, "rawQuery": request.rel_url.raw_query_string}
        )

    @route("GET", "/saas/public/core/v3/export/{id}/package")
    async def export_package(self, request: web.Request) -> web.StreamResponse:
        match = re.fullmatch(r"size-(\d{1,15})", request.match_info["id"])
        if match is None:
            return v3_error(404, "MIGRATION_404", "Export job not found.")
        size = int(match.group(1))
        response = web.StreamResponse(
            headers={"Content-Disposition": f'attachment; filename="export-{size}.zip"'}
        )
        response.content_type = "application/zip"
        response.content_length = size
        await response.prepare(request)
        for chunk in export_bytes(size):
            await response.write(chunk)
        await response.write_eof()
        return response

    @route("POST", "/saas/public/core/v3/import/package")
    async def import_package(self, request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        size = 0
        async for chunk in body_chunks(request):
            digest.update(chunk)
            size += len(chunk)
        return web.json_response(
            {"jobId": random_id(22), "size": size, "sha256": digest.hexdigest()}
        )

    # /echo is outside /saas, so tests can see IDS-SESSION-ID auth for "other" services.
    @route("*", "/saas/api/v2/echo", "/saas/public/core/v3/echo", "/echo")
    async def echo(self, request: web.Request) -> web.Response:
        """Test helper, not a vendor API: shows exactly what arrived."""
        body = await request.read()
        try:
            text, encoding = body.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(body).decode("ascii"), "base64"
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return web.json_response(
            {
                "method": request.method,
                "path": request.raw_path,
                "headers": headers,
                "body": text,
                "bodyEncoding": encoding,
            }
        )

    @route("GET", "/saas/api/v2/redirect")
    async def redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(self.urls.pod + "/saas/api/v2/agent")

    @route("GET", "/saas/api/v2/status/{code}")
    async def status(self, request: web.Request) -> web.Response:
        try:
            code = int(request.match_info["code"])
        except ValueError:
            code = 0
        if not 200 <= code <= 599:
            return v2_error(400, "APP_10001", "The status must be between 200 and 599.")
        if code in (204, 304):
            return web.Response(status=code)
        if code >= 400:
            return v2_error(code, f"SANDBOX_{code}", f"Sandbox answered {code} as asked.")
        return web.json_response({"@type": "status", "code": code}, status=code)

    @route("GET", "/saas/api/v2/slow")
    async def slow(self, request: web.Request) -> web.Response:
        try:
            seconds = float(request.query.get("seconds", "1"))
        except ValueError:
            seconds = -1
        if not 0 <= seconds <= 600:
            return v2_error(400, "APP_10001", "seconds must be a number from 0 to 600.")
        await asyncio.sleep(seconds)
        return web.json_response({"@type": "slow", "seconds": seconds})


def build_pod_app(state: SandboxState, urls: SandboxUrls) -> web.Application:
    app = web.Application(
        middlewares=[
            journal_middleware(state, "iics-pod", lambda r: None, _probe_service),
            _require_session(state),
        ]
    )
    add_handlers(app, _Pod(state, urls))
    return app

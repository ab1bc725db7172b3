"""What every fake vendor app shares: routes declared on their handlers, the journal
middleware (which also applies the state's failure switches and rate limits), and readers
of request bodies."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict

from proxy.sandbox.state import SandboxState, SeenRequest

JOURNAL_BODY_LIMIT = 64 * 1024
"""Request bodies at or above this size (or of unknown size) are journaled as ``None``."""

HandlerT = TypeVar("HandlerT", bound=Callable[..., Awaitable[web.StreamResponse]])
_ROUTES = "sandbox_routes"  # the attribute ``route`` sets on a handler


def route(method: str, *paths: str) -> Callable[[HandlerT], HandlerT]:
    """Declare that a handler method answers ``method`` on ``paths`` (see ``add_handlers``)."""

    def mark(handler: HandlerT) -> HandlerT:
        declared = getattr(handler, _ROUTES, ())
        setattr(handler, _ROUTES, (*declared, *((method, path) for path in paths)))
        return handler

    return mark


def add_handlers(app: web.Application, handlers: object, prefixes: tuple[str, ...] = ("",)) -> None:
    """Route to every ``@route`` method of ``handlers``, under each of ``prefixes``.

    A GET route also answers HEAD, as aiohttp's ``add_get`` does.
    """
    for _, handler in inspect.getmembers(handlers, inspect.ismethod):
        for method, path in getattr(handler, _ROUTES, ()):
            for prefix in prefixes:
                if method == "GET":
                    app.router.add_get(prefix + path, handler)
                else:
                    app.router.add_route(method, prefix + path, handler)


async def read_json_object(request: web.Request) -> dict[str, Any] | None:
    """The request body as a JSON object, or ``None`` if it is anything else."""
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


async def rejection_text(state: SandboxState, request: web.Request, usual: str) -> str:
    """The text of a refused login: ``usual``, or ``state.rejection_echo`` filled in."""
    if state.rejection_echo is None:
        return usual
    body = await request.text()
    password = (await read_json_object(request) or {}).get("password")
    return state.rejection_echo.replace("{password}", str(password)).replace("{body}", body)


def _is_small(request: web.Request) -> bool:
    length = request.content_length
    return length is not None and length < JOURNAL_BODY_LIMIT


async def body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The request body piece by piece, without holding a large one in memory."""
    if _is_small(request):
        # The journal may have read it already; read() hands back that cached copy.
        yield await request.read()
        return
    async for chunk in request.content.iter_chunked(JOURNAL_BODY_LIMIT):
        yield chunk


async def _journal_body(request: web.Request) -> bytes | None:
    if not request.body_exists:
        return b""
    return await request.read() if _is_small(request) else None


def journal_middleware(
    state: SandboxState,
    app_name: str,
    login_service: Callable[[web.Request], str | None],
    service_of: Callable[[web.Request], str | None] = lambda _request: None,
) -> Middleware:
    """Journal every request; login endpoints obey the state's failure switches, and
    every other request the app's rate limit.

    ``login_service`` names the login endpoint a request is for (``None`` for any other
    request, which is journaled in ``state.requests`` under ``app_name``, or under the
    name ``service_of`` gives it: a session probe is not API traffic).
    """

    @web.middleware
    async def journal(request: web.Request, handler: Handler) -> web.StreamResponse:
        service = login_service(request)
        seen = SeenRequest(
            service=service or service_of(request) or app_name,
            method=request.method,
            url=f"{request.scheme}://{request.host}{request.raw_path}",
            headers=CIMultiDict(request.headers),
            body=await _journal_body(request),
        )
        if service is None:
            state.requests.append(seen)
            limit = state.rate_limits.get(app_name)
            refusal = limit.refusal(state.clock.now()) if limit is not None else None
            return refusal or await handler(request)
        state.logins.append(seen)
        if state.login_delay:
            await asyncio.sleep(state.login_delay)
        if state.login_status_override is not None:
            return web.json_response(
                {"error": {"code": "SANDBOX", "message": "Forced by login_status_override."}},
                status=state.login_status_override,
            )
        if state.login_non_json:
            return web.Response(
                text="<html><body><h1>Down for maintenance</h1></body></html>",
                content_type="text/html",
            )
        return await handler(request)

    return journal

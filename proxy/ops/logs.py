"""Logging: structlog to stdout, JSON lines by default, with secrets masked (the README:
"Logs").

Every event passes through ``Redactor`` last before rendering: values of known secret
keys, auth headers and query parameters are masked, and any secret value in use
(resolved passwords, session ids, tokens — registered by the session manager for as
long as they are in use) is replaced wherever it appears in an event, also JSON-escaped
or URL-encoded. Client-visible messages go through the same redactor.

Every event logged while a request is handled carries its ``request_id`` (the
``REQUEST_ID`` context variable, set once per request by the server's pipeline; tasks a
request starts, such as the login it triggers, inherit it). Records of the standard
``logging`` module (aiohttp's, asyncio's) go through the same chain and renderer, so
with ``format: json`` every line on stdout is one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar
from typing import Any, Protocol, TextIO

import structlog
from structlog.typing import Processor

from proxy.core.masking import (
    MASK,
    MIN_SECRET,
    QUERY_PARAM,
    USERINFO,
    forms,
    is_secret_name,
    mask_param,
)


class Registration:
    """Values the redactor masks until ``release()``: owned by whatever may show them.

    A lease holds its session's ids, a route its latest credentials; two owners may hold
    the same value, which stays masked until both let go.
    """

    __slots__ = ("_redactor", "values")

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self.values: tuple[str, ...] = ()

    def add(self, *values: str) -> None:
        self._redactor._hold(values)
        self.values += values

    def release(self) -> None:
        values, self.values = self.values, ()
        self._redactor._drop(values)


class Redactor:
    """A structlog processor that masks secrets anywhere in an event dict.

    Besides secret-named fields, it masks the values registered with ``add()`` for as
    long as they are held: the sessions in use and each route's latest credentials, so
    its pattern (and the cost of a log line) does not grow with the proxy's history.
    """

    def __init__(self) -> None:
        self._held: dict[str, int] = {}  # form -> how many registrations hold it
        self._pattern: re.Pattern[str] | None = None
        self._stale = False

    def __len__(self) -> int:
        """How many strings are masked (each held value in each of its forms)."""
        return len(self._held)

    def add(self, *values: str) -> Registration:
        registration = Registration(self)
        registration.add(*values)
        return registration

    def _hold(self, values: tuple[str, ...]) -> None:
        for value in values:
            for form in forms(value):
                if len(form) >= MIN_SECRET:
                    count = self._held.get(form, 0)
                    self._held[form] = count + 1
                    self._stale = self._stale or count == 0

    def _drop(self, values: tuple[str, ...]) -> None:
        for value in values:
            for form in forms(value):
                if len(form) >= MIN_SECRET:
                    count = self._held.pop(form) - 1
                    if count:
                        self._held[form] = count
                    else:
                        self._stale = True

    def _compile(self) -> None:
        # Changes come in pairs (a new session, the old one released): compiled once,
        # when next needed.
        alternatives = sorted(self._held, key=len, reverse=True)
        pattern = "|".join(re.escape(v) for v in alternatives)
        self._pattern = re.compile(pattern) if pattern else None
        self._stale = False

    def text(self, value: str) -> str:
        if self._stale:
            self._compile()
        if self._pattern is not None:
            value = self._pattern.sub(MASK, value)
        if "://" in value:
            value = USERINFO.sub(MASK + "@", value)
        if "=" in value:
            value = QUERY_PARAM.sub(mask_param, value)
        return value

    def value(self, key: str, value: Any) -> Any:
        if value is not None and is_secret_name(key):
            return MASK
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(key, v) for v in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self.text(str(value))

    def __call__(self, _logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
        for key, value in event.items():
            if isinstance(value, str | Mapping | list | tuple) or is_secret_name(key):
                event[key] = self.value(key, value)
        return event


REDACTOR = Redactor()

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# The id of the request being handled. The pipeline sets it once per request; aiohttp
# runs each request in a task of its own, with a copy of the context, so it ends with
# the request, and every task the request starts (a login, a renewal) keeps it.
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)


def add_request_id(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
    """A structlog processor: the request's id on every event logged on its behalf."""
    request_id = REQUEST_ID.get()
    if request_id is not None and "request_id" not in event:
        event["request_id"] = request_id
    return event


def _json_text(value: str | None) -> str:
    """A JSON string literal; the common plain-ASCII case without the encoder."""
    if value is None:
        return "null"
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return json.dumps(value)


class AccessRecord(Protocol):
    """What the access line reads of a finished request (the pipeline's ``Exchange``)."""

    @property
    def route_name(self) -> str | None: ...
    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def status(self) -> int: ...
    @property
    def upstream_seconds(self) -> float: ...
    @property
    def upstream_status(self) -> int | None: ...
    @property
    def replayed(self) -> bool: ...
    @property
    def bytes_in(self) -> int: ...
    @property
    def bytes_out(self) -> int: ...
    @property
    def client_addr(self) -> str | None: ...
    @property
    def client(self) -> str | None: ...
    @property
    def error_code(self) -> str | None: ...
    @property
    def request_id(self) -> str: ...


def _console_fields(entry: AccessRecord, path: str, seconds: float) -> dict[str, Any]:
    return {
        "route": entry.route_name,
        "method": entry.method,
        "path": path,
        "status": entry.status,
        "duration_ms": round(seconds * 1000, 2),
        "upstream_ms": round(entry.upstream_seconds * 1000, 2),
        "upstream_status": entry.upstream_status,
        "replayed": entry.replayed,
        "bytes_in": entry.bytes_in,
        "bytes_out": entry.bytes_out,
        "client_addr": entry.client_addr,
        "client": entry.client,
        "code": entry.error_code,
        "request_id": entry.request_id,
    }


class AccessLog:
    """The one access line per request, written without the general processor chain.

    It is the only event on every request's path, so it is formatted directly: the same
    JSON shape as other events (plus the bound context, e.g. ``worker``), the path passed
    through the redactor, and the lines of one loop iteration written together in a
    single write. The console format goes through structlog as usual. Access lines are
    info events: a ``log.level`` above info turns them off (``enabled``).
    """

    def __init__(self) -> None:
        self._stream: TextIO = sys.stdout
        self._json = True
        self.enabled = True
        self._lines: list[str] = []
        self._second = -1
        self._second_text = ""
        self._context: str | None = None  # bound context, rendered once per process

    def configure(self, stream: TextIO, fmt: str, level: str = "info") -> None:
        self.flush()
        self._stream = stream
        self._json = fmt == "json"
        self.enabled = _LEVELS[level] <= logging.INFO
        self._context = None

    def _timestamp(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((now - second) * 1_000_000):06d}Z"

    def write(self, entry: AccessRecord, seconds: float) -> None:
        if not self.enabled:
            return
        path = REDACTOR.text(entry.path)
        if not self._json:
            structlog.get_logger("auth_proxy.access").info(
                "request", **_console_fields(entry, path, seconds)
            )
            return
        if self._context is None:
            bound = structlog.contextvars.get_contextvars()
            self._context = "".join(f", {json.dumps(k)}: {json.dumps(v)}" for k, v in bound.items())
        # Route names (config-validated) and methods (HTTP tokens) need no escaping.
        route = entry.route_name
        route_text = "null" if route is None else f'"{route}"'
        upstream_status = entry.upstream_status
        line = (
            f'{{"route": {route_text}, "method": "{entry.method}", '
            f'"path": {_json_text(path)}, "status": {entry.status}, '
            f'"duration_ms": {seconds * 1000:.2f}, '
            f'"upstream_ms": {entry.upstream_seconds * 1000:.2f}, '
            f'"upstream_status": {"null" if upstream_status is None else upstream_status}, '
            f'"replayed": {"true" if entry.replayed else "false"}, '
            f'"bytes_in": {entry.bytes_in}, "bytes_out": {entry.bytes_out}, '
            f'"client_addr": {_json_text(entry.client_addr)}, '
            f'"client": {_json_text(entry.client)}, '
            f'"code": {_json_text(entry.error_code)}, '
            f'"request_id": {_json_text(entry.request_id)}{self._context}, '
            f'"event": "request", "level": "info", "timestamp": "{self._timestamp()}"}}'
        )
        if not self._lines:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop: write at once
                self._lines.append(line)
                self.flush()
                return
        self._lines.append(line)

    def flush(self) -> None:
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        self._stream.write("\n".join(lines) + "\n")
        self._stream.flush()


ACCESS_LOG = AccessLog()


class _Verbosity:
    """Whether debug events are wanted; hot paths check it before building them."""

    debug = False


VERBOSITY = _Verbosity()


class _StdlibHandler(logging.StreamHandler):
    """Where records of the ``logging`` module (aiohttp's, asyncio's) go: our stream,
    through our processors. A class of its own, so a new setup replaces the old one."""


def setup_logging(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    VERBOSITY.debug = level == "debug"
    ACCESS_LOG.configure(out, fmt, level)
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    context: list[Processor] = [structlog.contextvars.merge_contextvars, add_request_id]
    stamp: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*context, *stamp, structlog.processors.format_exc_info, REDACTOR, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    handler = _StdlibHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*context, structlog.stdlib.add_logger_name, *stamp],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                REDACTOR,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])

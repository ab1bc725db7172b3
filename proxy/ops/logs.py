"""Logging: structlog to stdout, JSON lines by default, with secrets masked (the README:
"Logs").

Every event passes through ``Redactor`` last before rendering: values of known secret
keys, auth headers and query parameters are masked, and any secret value in use
(resolved passwords, session ids, tokens — registered by the session manager for as
long as they are in use) is replaced wherever it appears in an event, also JSON-escaped
or URL-encoded. Client-visible messages go through the same redactor.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

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


def _json_text(value: str | None) -> str:
    """A JSON string literal; the common plain-ASCII case without the encoder."""
    if value is None:
        return "null"
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return json.dumps(value)


class AccessLog:
    """The one access line per request, written without the general processor chain.

    It is the only event on every request's path, so it is formatted directly: the same
    JSON shape as other events (plus the bound context, e.g. ``worker``), the path passed
    through the redactor, and the lines of one loop iteration written together in a
    single write. The console format goes through structlog as usual.
    """

    def __init__(self) -> None:
        self._stream: TextIO = sys.stdout
        self._json = True
        self._lines: list[str] = []
        self._second = -1
        self._second_text = ""
        self._context: str | None = None  # bound context, rendered once per process

    def configure(self, stream: TextIO, fmt: str) -> None:
        self.flush()
        self._stream = stream
        self._json = fmt == "json"
        self._context = None

    def _timestamp(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((now - second) * 1_000_000):06d}Z"

    def write(
        self,
        route: str | None,
        method: str,
        path: str,
        status: int,
        seconds: float,
        upstream_seconds: float,
        replayed: bool,
        request_id: str,
        client: str | None = None,
    ) -> None:
        path = REDACTOR.text(path)
        if not self._json:
            structlog.get_logger("auth_proxy.access").info(
                "request",
                route=route,
                method=method,
                path=path,
                status=status,
                duration_ms=round(seconds * 1000, 2),
                upstream_ms=round(upstream_seconds * 1000, 2),
                replayed=replayed,
                request_id=request_id,
                client=client,
            )
            return
        if self._context is None:
            bound = structlog.contextvars.get_contextvars()
            self._context = "".join(f", {json.dumps(k)}: {json.dumps(v)}" for k, v in bound.items())
        # Route names (config-validated) and methods (HTTP tokens) need no escaping.
        route_text = "null" if route is None else f'"{route}"'
        line = (
            f'{{"route": {route_text}, "method": "{method}", '
            f'"path": {_json_text(path)}, "status": {status}, '
            f'"duration_ms": {seconds * 1000:.2f}, '
            f'"upstream_ms": {upstream_seconds * 1000:.2f}, '
            f'"replayed": {"true" if replayed else "false"}, '
            f'"request_id": {_json_text(request_id)}, '
            f'"client": {"null" if client is None else _json_text(client)}'
            f"{self._context}, "
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

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _Verbosity:
    """Whether debug events are wanted; hot paths check it before building them."""

    debug = False


VERBOSITY = _Verbosity()


def setup_logging(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    VERBOSITY.debug = level == "debug"
    ACCESS_LOG.configure(stream or sys.stdout, fmt)
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=(stream or sys.stdout).isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            REDACTOR,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=stream or sys.stdout),
        cache_logger_on_first_use=False,
    )

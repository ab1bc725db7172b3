"""What the fake IICS / IDMC hosts share: their error shapes and the dead-session answer.

Where the real behaviour is unknown (the code for an expired session, the login-failure
status) the sandbox picks one answer and sticks to it: 401 ``AUTH_01`` for a dead session,
403 ``UI_10000`` for a failed login.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from aiohttp import web


def iso_utc(timestamp: float) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``, as identity-service writes times."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def v2_error(status: int, code: str, description: str) -> web.Response:
    body = {"@type": "error", "code": code, "description": description, "statusCode": status}
    return web.json_response(body, status=status)


def v3_error(status: int, code: str, message: str) -> web.Response:
    body = {
        "error": {
            "code": code,
            "message": message,
            "requestId": secrets.token_urlsafe(16),
            "details": None,
        }
    }
    return web.json_response(body, status=status)


def ids_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


NOT_JSON = "The request body is not a valid JSON object."


def malformed_v2() -> web.Response:
    return v2_error(400, "APP_10000", NOT_JSON)


def str_field(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    return value if isinstance(value, str) else None


def dead_session(path: str) -> web.Response:
    message = "Invalid or expired session ID."
    if path.startswith("/saas/api/v2/"):
        return v2_error(401, "AUTH_01", message)
    if path.startswith("/saas/public/core/v3/"):
        return v3_error(401, "AUTH_01", message)
    return ids_error(401, "AUTH_01", message)

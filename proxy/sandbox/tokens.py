"""Ids and HS256 JWTs, just enough for the fakes to mint and check their own tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import string
from typing import Any


def random_id(length: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_jwt(claims: dict[str, Any], key: bytes) -> str:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def read_jwt(token: str, key: bytes) -> dict[str, Any] | None:
    """The claims of ``token`` if ``key`` signed it, else ``None``. Does not check ``exp``."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    header, payload, signature = parts
    expected = hmac.new(key, f"{header}.{payload}".encode("ascii", "replace"), hashlib.sha256)
    try:
        if not hmac.compare_digest(_b64url(expected.digest()), signature):
            return None
        claims = json.loads(_b64url_decode(payload))
    except ValueError:
        return None
    return claims if isinstance(claims, dict) else None

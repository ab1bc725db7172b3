"""Keys, encryption at rest and credential fingerprints for the session store.

One master key (``session_store.key``, or a random key file next to a local store)
yields two subkeys by HKDF: one for AES-GCM, one for HMAC fingerprints. Whoever can
read the store's files or Redis keys sees ciphertext and HMACs only.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from proxy.store.values import StoreConfigError

KEY_BYTES = 32
MIN_KEY_BYTES = 16
_FORMAT = b"\x01"  # first byte of every sealed blob: lets a later format coexist
_NONCE = 12  # 96-bit random nonce per write, as AES-GCM wants
_SALT = b"auth-proxy session store v1"


def master_key(value: str | bytes) -> bytes:
    """The configured ``session_store.key`` as bytes; too short a key is a config error."""
    raw = value.encode() if isinstance(value, str) else bytes(value)
    if len(raw) < MIN_KEY_BYTES:
        raise StoreConfigError(
            f"session_store.key must be at least {MIN_KEY_BYTES} bytes long "
            "(e.g. the output of `openssl rand -base64 32`)"
        )
    return raw


def _derive(master: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=_SALT, info=purpose).derive(
        master
    )


def _associated(purpose: str, key: str, context: Sequence[str]) -> bytes:
    # Length-prefixed parts: no two different (purpose, key, context) encode alike.
    parts = [purpose, key, *context]
    return b"".join(len(p.encode()).to_bytes(4, "big") + p.encode() for p in parts)


class Sealer:
    """Authenticated encryption bound to where a value is stored, and fingerprints."""

    def __init__(self, master: bytes) -> None:
        self._aead = AESGCM(_derive(master, b"seal"))
        self._mac_key = _derive(master, b"fingerprint")

    def seal(self, purpose: str, key: str, data: bytes, *context: str) -> bytes:
        """Encrypt ``data`` for slot ``purpose`` of store key ``key`` (and ``context``,
        e.g. the record version): a blob moved to another key or slot fails to open."""
        nonce = os.urandom(_NONCE)
        return _FORMAT + nonce + self._aead.encrypt(nonce, data, _associated(purpose, key, context))

    def open(self, purpose: str, key: str, blob: bytes, *context: str) -> bytes | None:
        """The plaintext, or None if the blob was written under another key, moved or
        altered: the store then treats the value as absent."""
        if len(blob) < 1 + _NONCE or blob[:1] != _FORMAT:
            return None
        nonce, body = blob[1 : 1 + _NONCE], blob[1 + _NONCE :]
        try:
            return self._aead.decrypt(nonce, body, _associated(purpose, key, context))
        except InvalidTag:
            return None

    def fingerprint(self, identity: Sequence[str], secrets: Sequence[str]) -> str:
        """HMAC-SHA256 of the identity fields and the secrets: equal for every store that
        shares the master key, different as soon as any field or secret differs."""
        canonical = json.dumps([list(identity), list(secrets)], separators=(",", ":"))
        return hmac.new(self._mac_key, canonical.encode(), hashlib.sha256).hexdigest()


def load_or_create_key_file(path: Path) -> bytes:
    """The key in ``path``, created (0600, random) if missing. Creation is atomic: the
    key is written to a private temporary file (O_EXCL) and linked into place, so a
    worker starting at the same moment reads either no file or the whole key."""
    try:
        return _read_key_file(path)
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(KEY_BYTES))
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):  # another process won: use its key
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return _read_key_file(path)


def _read_key_file(path: Path) -> bytes:
    with path.open("rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        data = handle.read()
    if mode & 0o077:
        raise StoreConfigError(f"the store key file {path} is readable by others: chmod 600 it")
    if len(data) != KEY_BYTES:
        raise StoreConfigError(f"the store key file {path} is damaged: remove it to start over")
    return data

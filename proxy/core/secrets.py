"""Secret sources: a literal, ``{env: NAME}``, ``{file: PATH}`` or ``{command: "..."}``.

A ``Secret`` is resolved when a login needs it, not when the config is read: a
``{command}`` runs on every login (single-use SAML/OAuth tokens), a ``{file}`` is re-read
(rotated Kubernetes secrets). Its ``repr`` never shows the value, nor a command's
arguments and environment, which often carry a token of their own.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from proxy.core.errors import LoginFailed

SecretKind = Literal["literal", "env", "file", "command"]

COMMAND_TIMEOUT = 30.0
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True, slots=True)
class Secret:
    kind: SecretKind
    ref: str  # the literal value, variable name, absolute path or shell command

    def __repr__(self) -> str:
        if self.kind == "literal":
            return "Secret(****)"
        return f"Secret({self.kind}={self._shown()!r})"

    def describe(self) -> str:
        """A masked, human description for `auth-proxy check`."""
        if self.kind == "literal":
            return "****"
        return f"{{{self.kind}: {self._shown()}}}"

    def _shown(self) -> str:
        return _program(self.ref) if self.kind == "command" else self.ref

    async def resolve(self) -> str:
        """The current value. Failures are ``LoginFailed`` naming the source, never the value."""
        if self.kind == "literal":
            return self.ref
        if self.kind == "env":
            value = os.environ.get(self.ref)
            if value is None:
                raise LoginFailed(f"secret environment variable {self.ref} is not set")
            return value
        if self.kind == "file":
            try:
                text = await asyncio.to_thread(Path(self.ref).read_text, encoding="utf-8")
            except OSError as exc:
                raise LoginFailed(
                    f"secret file {self.ref} cannot be read: {exc.strerror}"
                ) from None
            return text.rstrip("\r\n")
        return await _run_command(self.ref)


def _program(command: str) -> str:
    """The name of the program a shell command runs, and "…" if it had more."""
    try:
        words = shlex.split(command)
    except ValueError:  # unbalanced quotes: the shell will say so when it runs
        words = command.split()
    program = next((i for i, word in enumerate(words) if not _ASSIGNMENT.match(word)), None)
    if program is None:
        return "…"
    name = os.path.basename(words[program])
    return name if len(words) == 1 else f"{name} …"


async def _run_command(command: str) -> str:
    proc = await asyncio.create_subprocess_shell(
        command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise LoginFailed(f"secret command timed out after {COMMAND_TIMEOUT:.0f}s") from None
    if proc.returncode != 0:
        raise LoginFailed(f"secret command exited with status {proc.returncode}")
    value = out.decode("utf-8", "replace").strip()
    if not value:
        raise LoginFailed("secret command printed nothing")
    return value

"""What ``serve`` checks before it listens, and ``check`` checks the same way (README,
Checking a config in CI): a config that passes here starts, and can log in.

Each problem is one line starting with the key to change. The checks read and bind, but
change nothing: every secret source is resolved (a ``{command}`` is not run: it may hand
out single-use tokens) and never shown; the forward-proxy CA, the state directory, the
audit log and an explicit ``session_store.path`` must be readable or creatable by this
user; every fixed port must be free; every TLS listener's files usable and within their
validity. Warnings (a listener beyond loopback without TLS, a certificate that expires
soon) do not stop it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from proxy.config import Config, ConfigError, key_path
from proxy.core.secrets import Secret
from proxy.server.listen_tls import Findings, load_listeners
from proxy.server.listeners import bind_problem, probe_bind
from proxy.server.startup import check_startup, plain_beyond_loopback

Loc = tuple[str | int, ...]


def preflight(config: Config) -> list[str]:
    """Every problem that would stop ``serve`` or its logins, one line each."""
    return preflight_report(config).problems


def preflight_report(config: Config) -> Findings:
    """Every problem (as ``preflight``) and every warning, one line each."""
    found = Findings()
    try:
        check_startup(config)
    except ConfigError as exc:
        found.problems.extend(exc.lines)
    found.problems += _workers(config)
    found.problems += [f"{key_path(loc)}: {why}" for loc, why in _secret_problems(config)]
    found.problems += _state(config)
    found.problems += _ports(config)
    found.warnings += plain_beyond_loopback(config)
    try:
        found.warnings += load_listeners(config).warnings
    except ConfigError as exc:
        found.problems.extend(exc.lines)
    return found


def check_preflight(config: Config) -> None:
    """Raise a ``ConfigError`` with every problem ``preflight`` finds."""
    if problems := preflight(config):
        raise ConfigError(*problems)


def secrets_in(model: BaseModel, loc: Loc = ()) -> Iterator[tuple[Loc, Secret]]:
    """Every secret source in the config, with its key path."""
    for name in type(model).model_fields:
        yield from _secrets_at(getattr(model, name), (*loc, name))


def _secrets_at(value: object, loc: Loc) -> Iterator[tuple[Loc, Secret]]:
    if isinstance(value, Secret):
        yield loc, value
    elif isinstance(value, BaseModel):
        yield from secrets_in(value, loc)
    elif isinstance(value, tuple):
        for i, item in enumerate(value):
            yield from _secrets_at(item, (*loc, i))


def _secret_problems(config: Config) -> Iterator[tuple[Loc, str]]:
    for loc, secret in secrets_in(config):
        if secret.kind == "env":
            value = os.environ.get(secret.ref)
            if value is None:
                yield loc, f"environment variable {secret.ref} is not set"
            elif not value:
                yield loc, f"environment variable {secret.ref} is empty"
        elif secret.kind == "file":
            try:
                text = Path(secret.ref).read_text(encoding="utf-8")
            except FileNotFoundError:
                yield loc, f"secret file {secret.ref} does not exist"
            except OSError as exc:
                yield (
                    loc,
                    f"secret file {secret.ref} cannot be read by uid {_uid()}: {exc.strerror}",
                )
            except UnicodeDecodeError:
                yield loc, f"secret file {secret.ref} is not UTF-8 text"
            else:
                if not text.rstrip("\r\n"):
                    yield loc, f"secret file {secret.ref} is empty"


def _uid() -> str:
    getuid = getattr(os, "getuid", None)  # not on Windows
    return str(getuid()) if getuid else "?"


def _workers(config: Config) -> list[str]:
    if config.workers > 1 and not hasattr(os, "fork"):
        return [
            f"workers: {config.workers} needs fork(), which this platform lacks (Linux and "
            "macOS have it); use workers: 1"
        ]
    return []


def _state(config: Config) -> list[str]:
    """The forward-proxy CA readable or creatable; the state directory writable."""
    problems: list[str] = []
    fp = config.forward_proxy
    if fp.enabled:
        cert, key = Path(fp.ca.cert), Path(fp.ca.key)
        present = [p for p in (cert, key) if p.exists()]
        if len(present) == 2:
            for name, path in (("cert", cert), ("key", key)):
                if reason := _unreadable(path):
                    problems.append(f"forward_proxy.ca.{name}: {path} {reason}")
        elif present:
            missing = key if present[0] == cert else cert
            problems.append(
                f"forward_proxy.ca: {present[0]} exists but {missing} does not; restore it, "
                "or delete both to generate a new CA"
            )
        else:
            for name, path in (("cert", cert), ("key", key)):
                if reason := _uncreatable(path.parent):
                    problems.append(
                        f"forward_proxy.ca.{name}: cannot create {path}: {reason}; "
                        "set state_dir (AUTH_PROXY_STATE_DIR) to a writable directory, "
                        "or forward_proxy.ca to writable paths"
                    )
    if config.log.audit is not None and (why := _unappendable(Path(config.log.audit))):
        problems.append(f"log.audit: {config.log.audit} cannot be written: {why}")
    if config.state_dir is not None and (why := _uncreatable(Path(config.state_dir))):
        problems.append(f"state_dir: cannot write in {config.state_dir}: {why}")
    store = config.session_store
    if store.type == "local" and store.path is not None and (why := _uncreatable(Path(store.path))):
        problems.append(f"session_store.path: {store.path} cannot be used: {why}")
    if config.workers > 1 and config.state_dir is None and store.type == "memory":
        try:
            temp_problem = _uncreatable(Path(tempfile.gettempdir()))
        except FileNotFoundError:
            temp_problem = "there is no writable temporary directory"
        if temp_problem:
            problems.append(
                f"workers: {config.workers} workers share their login verdicts through files, "
                f"and {temp_problem}; set state_dir (AUTH_PROXY_STATE_DIR) or TMPDIR"
            )
    return problems


def _unreadable(path: Path) -> str | None:
    try:
        with path.open("rb"):
            return None
    except OSError as exc:
        return f"cannot be read by uid {_uid()}: {exc.strerror}"


def _unappendable(path: Path) -> str | None:
    """Why lines cannot be appended to ``path`` (created, with its directory, if
    missing), or None. An existing file is opened for appending, and not changed."""
    if not path.exists():
        return _uncreatable(path.parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
    except OSError as exc:
        return f"{exc.strerror} (uid {_uid()})"
    return None


def _uncreatable(directory: Path) -> str | None:
    """Why files cannot be created in ``directory`` (made if missing), or None.

    Tried, not guessed from mode bits: ACLs, read-only mounts and root all count.
    """
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".auth-proxy-check-"):
            return None
    except OSError as exc:
        return f"{existing} is not writable by uid {_uid()} ({exc.strerror})"


def _ports(config: Config) -> list[str]:
    problems: list[str] = []
    index = {route.name: i for i, route in enumerate(config.routes)}
    for host, port, route in config.listeners():
        if port == 0:  # any free port
            continue
        error = probe_bind(host, port)
        if error is None:
            continue
        if route is None:
            key, fix = "listen.port", "change listen.port, or start with --listen HOST:PORT"
        else:
            key = f"routes[{index[route]}].match.listen.port"
            fix = f"change {key}"
        problems.append(f"{key}: {host}:{port} {bind_problem(error, host)}; {fix}")
    return problems

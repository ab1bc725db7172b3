"""Turning pydantic's validation errors into the lines a user reads.

One line per key path, in file order, in plain words: ``routes[1].auth.password:
required``; an unknown key names the nearest valid one (the README's "Configuration
reference" shows examples).
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from proxy.config.auth import AUTH_MODELS
from proxy.config.clients import ENTRY_TAGS
from proxy.config.errors import ConfigError, Loc, Problem, key_path
from proxy.config.model import Config

# pydantic error types and the words a user reads instead.
_PLAIN = {
    "too_short": "must have at least one entry",
    "string_too_short": "must not be empty",
    "string_type": "must be a string",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models a field holds, through Optional, unions and tuples."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) in (Union, types.UnionType, tuple, Annotated):
        return [m for arg in get_args(annotation) for m in _models_in(arg)]
    return []


def _models_at(loc: Loc) -> list[type[BaseModel]]:
    """The model(s) whose fields are valid at ``loc`` (a pydantic location, with tags)."""
    models: list[type[BaseModel]] = [Config]
    for part in loc:
        if isinstance(part, int):
            continue  # an entry of a tuple: the same models
        inner = [
            m
            for model in models
            if part in model.model_fields
            for m in _models_in(model.model_fields[part].annotation)
        ]
        if not inner and part in AUTH_MODELS:  # the discriminated union's selected type
            inner = [AUTH_MODELS[part]]
        if not inner and part in ENTRY_TAGS:  # a client_auth.tokens entry's kind
            continue
        if not inner:
            return []
        models = inner
    return models


def _given_instead(loc: Loc) -> str:
    """For a key that may be replaced by another one (login_url by pod): say so."""
    for model in _models_at(loc[:-1]):
        key, other = getattr(model, "GIVEN_INSTEAD", ("", ""))
        if key == loc[-1]:
            return f" (or give {other})"
    return ""


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _clean_loc(loc: Loc) -> Loc:
    """The key path as written in the file: without pydantic's union tags."""
    out: list[str | int] = []
    for part in loc:
        if out and out[-1] == "auth" and isinstance(part, str) and part in AUTH_MODELS:
            continue
        if len(out) > 1 and out[-2] == "tokens" and isinstance(out[-1], int) and part in ENTRY_TAGS:
            continue
        out.append(part)
    return tuple(out)


def problems_of(exc: ValidationError) -> list[Problem]:
    """Each of pydantic's errors as a key path as written and a sentence."""
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc, kind, ctx = err["loc"], err["type"], err.get("ctx", {})
        where = _clean_loc(loc)
        if kind == "too_short" and len(err["input"]) >= ctx.get("min_length", 1):
            continue  # entries were given, and their own errors say what is wrong
        if kind == "missing":
            message = "required" + _given_instead(loc)
        elif kind == "extra_forbidden":
            fields = (f for model in _models_at(loc[:-1]) for f in model.model_fields)
            message = "unknown key" + _did_you_mean(str(loc[-1]), fields)
        elif kind == "union_tag_invalid":
            given, valid = str(ctx.get("tag")), list(AUTH_MODELS)
            where = (*where, "type")
            message = (
                f'unknown auth type "{given}"{_did_you_mean(given, valid)}; '
                f"valid: {', '.join(valid)}"
            )
        elif kind == "union_tag_not_found":
            where, message = (*where, "type"), "required"
        elif kind in _PLAIN:
            message = _PLAIN[kind]
        elif kind == "literal_error":
            message = f"must be one of {ctx.get('expected')}"
        elif kind == "string_pattern_mismatch" and where[-1:] == ("name",):
            message = "may contain only letters, digits, '_', '.' and '-'"
        else:
            message = err["msg"].removeprefix("Value error, ").replace("Input should", "must")
        problems.append((where, message))
    return problems


def _positions(node: Any, loc: Loc = (), out: dict[Loc, int] | None = None) -> dict[Loc, int]:
    """Each key path in the document, numbered in file order."""
    out = {} if out is None else out
    out[loc] = len(out)
    if isinstance(node, dict):
        for k, v in node.items():
            _positions(v, (*loc, str(k)), out)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _positions(v, (*loc, i), out)
    return out


def report(problems: list[Problem], data: Any) -> ConfigError:
    """One line per key path (pydantic can report several per union), in file order."""
    positions = _positions(data)

    def order(problem: Problem) -> int:
        loc = problem[0]
        while loc not in positions:  # a missing key sorts with its parent
            loc = loc[:-1]
        return positions[loc]

    seen: dict[Loc, str] = {}
    for loc, message in sorted(problems, key=order):
        seen.setdefault(loc, message)
    return ConfigError(*(f"{key_path(loc)}: {message}" for loc, message in seen.items()))

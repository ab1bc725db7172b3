"""Point OData link fields at the proxy instead of the tenant, and touch nothing else.

Ivanti's OData answers carry absolute links to the tenant (``@odata.context``,
``@odata.nextLink``, ``@odata.id``, ...). A client that follows one would go around the
proxy, without a session. ``rewrite_links`` swaps the tenant base at the start of those
values for the route's base and keeps every other byte of the body as it was: the JSON
is not re-serialised, the link values are spliced in place.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

LINK_ANNOTATIONS = frozenset(
    {
        "context",
        "nextLink",
        "deltaLink",
        "id",
        "editLink",
        "readLink",
        "navigationLink",
        "associationLink",
        "mediaEditLink",
        "mediaReadLink",
    }
)
"""OData JSON control information whose value is a URL (not ``metadataEtag``, ``type``...)."""

# ``@odata.nextLink``, ``Owner@odata.navigationLink``, and OData 4.01's ``@nextLink``.
_LINK_KEY = re.compile(r"[^@]*@(?:odata\.)?(?P<term>\w+)", re.ASCII)
_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
# From a token boundary: skip, inside the regex engine, everything up to the next string
# that could be a link key (one holding "@", or an escape that might spell one).
# Possessive: nothing skipped is ever reconsidered, so a miss costs linear time.
_NEXT_CANDIDATE = re.compile(
    r'(?>[^"]++|"[^"\\@]*+")*+(?P<string>"[^"\\]*+(?:\\.[^"\\]*+)*+")', re.DOTALL
)
# One character of a JSON string's content: an escape or a plain character.
_CHAR = re.compile(r'\\u[0-9a-fA-F]{4}|\\["\\/bfnrt]|[^\\]', re.DOTALL)
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_WHITESPACE = " \t\n\r"
_LINK_END = "/?#"


def rewrite_links(body: bytes, upstream_base: str, public_base: str) -> bytes | None:
    """``body`` with link fields under ``upstream_base`` moved under ``public_base``.

    Bases are an origin plus an optional path (``https://tenant/HEAT``); a link is
    rewritten only where the base ends at a path boundary, comparing scheme and host
    case-insensitively. Link values keep their style (``https:\\/\\/`` stays escaped).
    ``None`` when the body is not UTF-8 JSON or has no link to rewrite. The caller
    bounds the size: the body is parsed once to be sure it is JSON.
    """
    try:
        text = body.decode("utf-8")
        json.loads(text)
    except (UnicodeDecodeError, ValueError):
        return None
    base = _Base(upstream_base, public_base)
    pieces: list[str] = []
    copied = 0
    position = 0
    # Valid JSON has no quote outside strings, so scanning from one string's end always
    # lands on the next string's opening quote, never inside a string.
    while (candidate := _NEXT_CANDIDATE.match(text, position)) is not None:
        key = candidate["string"]
        position = candidate.end()
        colon = _skip_whitespace(text, position)
        if colon == len(text) or text[colon] != ":" or not _is_link_key(key):
            continue
        value_start = _skip_whitespace(text, colon + 1)
        value = _STRING.match(text, value_start)
        if value is None:  # a link field holding a non-string; leave it
            continue
        position = value.end()
        rewritten = base.rebase(value.group()[1:-1])
        if rewritten is not None:
            pieces += (text[copied : value_start + 1], rewritten)
            copied = value.end() - 1
    if not pieces:
        return None
    pieces.append(text[copied:])
    return "".join(pieces).encode("utf-8")


def _skip_whitespace(text: str, index: int) -> int:
    while index < len(text) and text[index] in _WHITESPACE:
        index += 1
    return index


def _is_link_key(token: str) -> bool:
    name = json.loads(token) if "\\" in token else token[1:-1]
    match = _LINK_KEY.fullmatch(name)
    return match is not None and match["term"] in LINK_ANNOTATIONS


def _char(escape: str) -> str:
    if not escape.startswith("\\"):
        return escape
    if escape[1] == "u":
        return chr(int(escape[2:], 16))
    return _ESCAPES.get(escape[1], escape[1])


class _Base:
    """The upstream base, matched against the raw (still escaped) content of a string."""

    def __init__(self, base: str, public: str) -> None:
        self.text = base.rstrip("/")
        parts = urlsplit(self.text)
        # Scheme and host compare case-insensitively; the path does not.
        self.origin_length = len(f"{parts.scheme}://{parts.netloc}")
        self.origin = self.text[: self.origin_length].lower()
        self.path = self.text[self.origin_length :]
        public = json.dumps(public.rstrip("/"), ensure_ascii=False)[1:-1]
        # A vendor that escapes slashes gets the new base with escaped slashes too.
        self.public = {False: public, True: public.replace("/", "\\/")}

    def rebase(self, raw: str) -> str | None:
        """``raw`` (a string's content as written) with this base swapped for the public one."""
        end = len(self.text)
        if "\\" in raw[: end + 1]:  # escapes up to the boundary: read them one by one
            return self._rebase_escaped(raw)
        head = raw[:end]
        if (
            head[: self.origin_length].lower() != self.origin
            or head[self.origin_length :] != self.path
        ):
            return None
        if raw[end : end + 1] not in ("", *_LINK_END):
            return None  # https://tenant.example.com is not under https://tenant
        return self.public[False] + raw[end:]

    def _rebase_escaped(self, raw: str) -> str | None:
        matched = 0
        end = 0
        for char in _CHAR.finditer(raw):
            if matched == len(self.text):
                if _char(char.group()) not in _LINK_END:
                    return None
                break
            wanted, got = self.text[matched], _char(char.group())
            same = wanted.lower() == got.lower() if matched < self.origin_length else wanted == got
            if not same:
                return None
            matched += 1
            end = char.end()
        if matched < len(self.text):
            return None
        return self.public["\\/" in raw[:end]] + raw[end:]

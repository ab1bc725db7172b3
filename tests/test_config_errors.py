"""Config errors as a user sees them: every problem at once, one line each, with its key
path and, for a typo, the key that was probably meant. And the loaded model: typed values
all the way down (no dicts), ``resolve`` parsed once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import run_cli
from pydantic import BaseModel

from proxy.config import ConfigError, Header, HostPort, ResolveRule, parse_config
from proxy.upstream.client import MappedResolver

AUTH = {"type": "ivanti-api-key", "tenant": "t.example.com", "api_key": "k"}
IICS = {"type": "iics-password", "pod": "dm-us", "username": "u", "password": "p"}
VALID_TYPES = (
    "iics-password, iics-password-v3, iics-saml, iics-oauth, iics-salesforce, idmc-jwt, "
    "ivanti-session, ivanti-api-key"
)


def route(name: str = "r", prefix: str = "/r", auth: dict[str, Any] | None = None, **extra: Any):
    return {"name": name, "match": {"prefix": prefix}, "auth": auth or AUTH, **extra}


def errors_of(data: dict[str, Any], **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(data, **kwargs)
    assert str(exc.value) == "\n".join(exc.value.lines)
    return list(exc.value.lines)


# --------------------------------------------------------------------------- all at once


BROKEN = """\
lisen: {port: 8080}
workers: many
upstream:
  connect_timeout: 0
routes:
  - name: a
    match: {prefix: /a}
    auth:
      type: iics-password
      pod: dm-us
      username: u
      passwrd: x
  - name: b
    match: {prefix: b}
    auth: {type: ivanti-api-key, tenant: t, api_key: k}
    upstream: {read_timout: 5}
"""

BROKEN_LINES = [
    'lisen: unknown key (did you mean "listen"?)',
    "workers: must be a whole number",
    "upstream.connect_timeout: must be greater than 0",
    "routes[0].auth.password: required",
    'routes[0].auth.passwrd: unknown key (did you mean "password"?)',
    "routes[1].match.prefix: must start with /",
    'routes[1].upstream.read_timout: unknown key (did you mean "read_timeout"?)',
]


def test_every_error_in_the_file_is_reported_in_file_order(tmp_path: Path) -> None:
    assert errors_of(yaml.safe_load(BROKEN)) == BROKEN_LINES


def test_the_cli_prints_each_error_on_its_own_line_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text(BROKEN)
    for command in ("check", "serve"):
        result = run_cli(command, "-c", str(config))
        assert result.returncode == 2
        assert result.stdout == ""
        assert "Traceback" not in result.stderr
        assert result.stderr.splitlines() == [
            f"auth-proxy: config error: {line}" for line in BROKEN_LINES
        ]


def test_cross_route_problems_are_all_reported() -> None:
    data = {
        "listen": {"port": 8080},
        "routes": [
            route("a", "/a"),
            route("a", "/b"),
            route("c", "/a/x"),
            {"name": "d", "match": {"listen": {"port": 8080}}, "auth": AUTH},
            {"name": "e", "match": {"host": "x.localhost"}, "auth": AUTH},
            {"name": "f", "match": {"host": ["x.localhost", "y.localhost"]}, "auth": AUTH},
        ],
    }
    assert errors_of(data) == [
        "routes[1].name: 'a' is already used by routes[0]",
        "routes[2].match.prefix: '/a/x' overlaps routes[0] prefix '/a'",
        "routes[3].match.listen.port: 8080 is the main listener's port",
        "routes[5].match.host: 'x.localhost' is already matched by routes[4]",
    ]


def test_every_missing_environment_variable_is_reported_without_knock_on_errors() -> None:
    data = {
        "listen": {"host": "${HOST}", "port": 8080},
        "routes": [route(auth={**IICS, "username": "${USER}", "password": "${PW}"}, bogus=1)],
    }
    assert errors_of(data, env={}) == [
        "listen.host: environment variable HOST is not set",
        "routes[0].auth.username: environment variable USER is not set",
        "routes[0].auth.password: environment variable PW is not set",
        "routes[0].bogus: unknown key",
    ]


# --------------------------------------------------------------------------- did you mean


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (
            {"lisen": {"port": 1}, "routes": [route()]},
            'lisen: unknown key (did you mean "listen"?)',
        ),
        (
            {"routes": [route(headrs={"X-A": "1"})]},
            'routes[0].headrs: unknown key (did you mean "headers"?)',
        ),
        (
            {"routes": [route(auth={**IICS, "passwrd": "p"})]},
            'routes[0].auth.passwrd: unknown key (did you mean "password"?)',
        ),
        (
            {"routes": [route(upstream={"read_timout": 5})]},
            'routes[0].upstream.read_timout: unknown key (did you mean "read_timeout"?)',
        ),
        (
            {"upstream": {"read_timout": 5}, "routes": [route()]},
            'upstream.read_timout: unknown key (did you mean "read_timeout"?)',
        ),
        (
            {"routes": [route(match={"prefix": "/r", "lisen": {"port": 9}})]},
            'routes[0].match.lisen: unknown key (did you mean "listen"?)',
        ),
        (
            # The fields of the selected auth type only: role is an ivanti-session key.
            {"routes": [route(auth={**AUTH, "role": "x"})]},
            "routes[0].auth.role: unknown key",
        ),
        (
            {"routes": [route(auth={**IICS, "colour": "blue"})]},
            "routes[0].auth.colour: unknown key",
        ),
    ],
)
def test_an_unknown_key_names_the_nearest_valid_one(data: dict[str, Any], line: str) -> None:
    assert errors_of(data) == [line]


def test_unknown_auth_type_names_the_type_key_and_the_valid_types() -> None:
    typo = {"routes": [route(auth={**IICS, "type": "iics-pasword"})]}
    assert errors_of(typo) == [
        'routes[0].auth.type: unknown auth type "iics-pasword" (did you mean "iics-password"?); '
        f"valid: {VALID_TYPES}"
    ]
    far = {"routes": [route(auth={"type": "kerberos"})]}
    assert errors_of(far) == [
        f'routes[0].auth.type: unknown auth type "kerberos"; valid: {VALID_TYPES}'
    ]


def test_messages_stay_human() -> None:
    data = {
        "listen": 5,
        "log": {"level": "loud"},
        "routes": [route(auth={**AUTH, "api_key": None, "idle_timeout": "soon"}, match="/r")],
    }
    lines = errors_of(data)
    assert lines == [
        "listen: must be a mapping",
        "log.level: must be one of 'debug', 'info', 'warning' or 'error'",
        "routes[0].match: must be a mapping",
        "routes[0].auth.api_key: must be a string or a secret source ({env:}, {file:}, {command:})",
        "routes[0].auth.idle_timeout: must be a number",
    ]
    assert len({line.split(":")[0] for line in lines}) == len(lines)  # one line per key


def test_an_auth_that_is_not_a_mapping_is_one_line() -> None:
    assert errors_of({"routes": [route(auth="iics-password")]}) == [
        "routes[0].auth: must be a mapping"
    ]


# --------------------------------------------------------------------------- headers


def test_header_names_differing_only_in_case_are_rejected() -> None:
    data = {"routes": [route(headers={"X-Product": "a", "x-product": "b", "X-Other": "c"})]}
    assert errors_of(data) == [
        "routes[0].headers: 'x-product' repeats 'X-Product' (header names ignore case)"
    ]


def test_headers_are_name_value_pairs_in_file_order() -> None:
    config = parse_config({"routes": [route(headers={"X-B": "2", "X-A": "1"})]})
    headers = config.routes[0].headers
    assert headers == (Header("X-B", "2"), Header("X-A", "1"))
    assert all(type(header) is Header for header in headers)


# --------------------------------------------------------------------------- typed model


def _walk(value: Any, where: str, seen: list[str]) -> None:
    assert not isinstance(value, dict | list | set), f"{where} is a {type(value).__name__}"
    seen.append(where)
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _walk(getattr(value, name), f"{where}.{name}", seen)
    elif isinstance(value, tuple):
        for i, item in enumerate(value):
            _walk(item, f"{where}[{i}]", seen)


FULL = {
    "client_auth": {"tokens": ["t"]},
    "upstream": {"resolve": {"na1.example.com:443": "127.0.0.1:8443"}},
    "forward_proxy": {"enabled": True, "passthrough": ["*.example.org"]},
    "routes": [
        route(
            "a",
            "/a",
            {**IICS, "reauth_on": [401, 403]},
            headers={"X-INFA-PRODUCT-ID": "CDGC"},
            allowed_hosts=["x.example.com"],
            upstream={"resolve": {"[::1]:443": "[::1]:8443"}, "read_timeout": 5},
        ),
        route(
            "b",
            "/b",
            {
                "type": "iics-oauth",
                "login_url": "https://login.example.com/",
                "org_id": "o",
                "client_credentials": {
                    "token_url": "https://idp.example.com/token",
                    "client_id": "c",
                    "client_secret": {"env": "S"},
                },
            },
        ),
        {
            "name": "c",
            "match": {"host": ["c.localhost", "*.c.localhost"]},
            "auth": {
                "type": "ivanti-session",
                "tenant": "t",
                "username": "u",
                "password": "p",
                "role": "Admin",
            },
        },
    ],
}


def test_the_loaded_model_holds_no_dict_or_list_anywhere() -> None:
    config = parse_config(FULL)
    seen: list[str] = []
    _walk(config, "config", seen)
    assert "config.routes[0].headers[0]" in seen
    assert "config.routes[0].upstream.resolve[0]" in seen
    assert "config.routes[1].auth.client_credentials.client_secret" in seen
    assert hash(config) == hash(parse_config(FULL))  # hashable, and equal when equal
    assert config == parse_config(FULL)


def test_derived_urls_are_plain_fields() -> None:
    config = parse_config(FULL)
    assert config.routes[0].auth.login_url == "https://dm-us.informaticacloud.com"
    assert config.routes[1].auth.login_url == "https://login.example.com"
    assert config.routes[2].auth.url == "https://t"


async def test_resolve_is_parsed_once_into_typed_addresses() -> None:
    config = parse_config(FULL)
    top = config.upstream.resolve
    assert top == (ResolveRule(HostPort("na1.example.com", 443), HostPort("127.0.0.1", 8443)),)
    rule = top[0]
    assert type(rule) is ResolveRule
    assert type(rule.name) is HostPort and type(rule.address) is HostPort
    assert type(rule.name.port) is int and type(rule.address.port) is int
    merged = config.upstream_for(config.routes[0])
    assert merged.resolve == (ResolveRule(HostPort("::1", 443), HostPort("::1", 8443)),)
    assert type(merged.resolve[0]) is ResolveRule and merged.read_timeout == 5
    # The resolver reads the typed rules as they are.
    resolver = MappedResolver(top)
    try:
        (found,) = await resolver.resolve("NA1.example.com", 443)
    finally:
        await resolver.close()
    assert (found["hostname"], found["host"], found["port"]) == (
        "NA1.example.com",
        "127.0.0.1",
        8443,
    )


def test_resolve_entries_that_are_not_host_port_are_all_named() -> None:
    data = {
        "upstream": {"resolve": {"a.example.com": "127.0.0.1:1", "b.example.com:443": "x:y"}},
        "routes": [route()],
    }
    assert errors_of(data) == [
        "upstream.resolve: 'a.example.com' must be host:port; 'x:y' must be host:port"
    ]

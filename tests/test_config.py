"""Configuration (SPEC §3): validation with key paths, interpolation, secret sources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy.config import ConfigError, parse_config
from proxy.config.load import load_config
from proxy.core.errors import LoginFailed


def one_route(auth: dict[str, Any] | None = None, **route: Any) -> dict[str, Any]:
    auth = auth or {"type": "ivanti-api-key", "tenant": "t.example.com", "api_key": "k"}
    return {"routes": [{"name": "r", "match": {"prefix": "/r"}, "auth": auth, **route}]}


def error_of(data: Any, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(data, **kwargs)
    return str(exc.value)


IICS = {"type": "iics-password", "pod": "dm-us", "username": "u", "password": "p"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            one_route({"type": "iics-password", "pod": "dm-us", "username": "u"}),
            "routes[0].auth.password: required",
        ),
        (one_route({**IICS, "passwrd": "x"}), "routes[0].auth.passwrd: unknown key"),
        (one_route({"pod": "dm-us"}), "routes[0].auth.type: required"),
        (one_route({"type": "iics-magic"}), 'routes[0].auth.type: unknown auth type "iics-magic"'),
        (
            one_route({**IICS, "login_url": "https://x"}),
            "routes[0].auth: give exactly one of login_url or pod",
        ),
        (one_route(match={"prefix": "/-/admin"}), "routes[0].match.prefix: /-/ is reserved"),
        (one_route(match={"prefix": "iics"}), "routes[0].match.prefix: must start with /"),
        (
            one_route(match={"prefix": "/a", "host": "h"}),
            "routes[0].match: give exactly one of prefix, host or listen",
        ),
        (
            one_route(headers={"X-Bad": "a\r\nInjected: yes"}),
            "routes[0].headers: value of X-Bad contains CR, LF or NUL",
        ),
        (one_route(bogus=1), "routes[0].bogus: unknown key"),
        ({"routes": []}, "routes: must have at least one entry"),
        ({**one_route(), "listen": {"port": "eighty"}}, "listen.port:"),
        (one_route({**IICS, "reauth_on": [400]}), "routes[0].auth.reauth_on: 400 cannot trigger"),
        (
            one_route({"type": "ivanti-api-key", "tenant": "t", "api_key": {"vault": "x"}}),
            "routes[0].auth.api_key: unknown secret source 'vault'",
        ),
        (
            one_route(
                {"type": "ivanti-api-key", "tenant": "t", "api_key": {"env": "A", "file": "b"}}
            ),
            "routes[0].auth.api_key: a secret source is one of",
        ),
    ],
)
def test_errors_name_the_key_path(data: dict[str, Any], message: str) -> None:
    assert error_of(data).startswith(message)


def test_second_route_errors_carry_its_index() -> None:
    data = one_route()
    data["routes"].append(
        {"name": "s", "match": {"prefix": "/s"}, "auth": {"type": "iics-password"}}
    )
    assert error_of(data).splitlines() == [
        "routes[1].auth.login_url: required (or give pod)",
        "routes[1].auth.username: required",
        "routes[1].auth.password: required",
    ]


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        ({"prefix": "/iics"}, {"prefix": "/iics/v2"}, "overlaps routes[0] prefix '/iics'"),
        ({"prefix": "/a"}, {"prefix": "/a/"}, "overlaps"),
        ({"host": "x.localhost"}, {"host": ["y.localhost", "x.localhost"]}, "already matched"),
        ({"listen": {"port": 9001}}, {"listen": {"port": 9001}}, "already used by routes[0]"),
    ],
)
def test_ambiguous_routes_are_config_errors(
    first: dict[str, Any], second: dict[str, Any], message: str
) -> None:
    auth = {"type": "ivanti-api-key", "tenant": "t", "api_key": "k"}
    data = {
        "routes": [
            {"name": "a", "match": first, "auth": auth},
            {"name": "b", "match": second, "auth": auth},
        ]
    }
    text = error_of(data)
    assert text.startswith("routes[1].match.")
    assert message in text


def test_duplicate_names_and_main_port_clash() -> None:
    auth = {"type": "ivanti-api-key", "tenant": "t", "api_key": "k"}
    dup = {
        "routes": [
            {"name": "a", "match": {"prefix": "/a"}, "auth": auth},
            {"name": "a", "match": {"prefix": "/b"}, "auth": auth},
        ]
    }
    assert error_of(dup) == "routes[1].name: 'a' is already used by routes[0]"
    clash = {"listen": {"port": 8080}, **one_route(match={"listen": {"port": 8080}})}
    assert error_of(clash) == "routes[0].match.listen.port: 8080 is the main listener's port"


def test_prefix_segments_that_only_share_characters_do_not_overlap() -> None:
    auth = {"type": "ivanti-api-key", "tenant": "t", "api_key": "k"}
    config = parse_config(
        {
            "routes": [
                {"name": "a", "match": {"prefix": "/iics"}, "auth": auth},
                {"name": "b", "match": {"prefix": "/iicsx/"}, "auth": auth},
            ]
        }
    )
    assert [r.match.prefix for r in config.routes] == ["/iics", "/iicsx"]


def test_interpolation_with_defaults_and_missing_variables() -> None:
    env = {"USER_NAME": "alice", "EMPTY": ""}
    data = one_route(
        {
            "type": "iics-password",
            "login_url": "https://${HOST:-dm-us.informaticacloud.com}",
            "username": "${USER_NAME}",
            "password": "${EMPTY:-fallback}",
        }
    )
    auth = parse_config(data, env=env).routes[0].auth
    assert auth.login_url == "https://dm-us.informaticacloud.com"
    assert auth.username == "alice"
    assert repr(auth.password) == "Secret(****)"
    missing = one_route({**IICS, "username": "${NOPE}"})
    assert (
        error_of(missing, env={}) == "routes[0].auth.username: environment variable NOPE is not set"
    )


def test_defaults_and_overrides() -> None:
    config = parse_config(
        {
            **one_route(IICS, upstream={"read_timeout": 600}),
            "upstream": {"connect_timeout": 3},
        }
    )
    route = config.routes[0]
    settings = config.upstream_for(route)
    assert (settings.connect_timeout, settings.read_timeout) == (3, 600)
    assert settings.retry_body_limit == 1_048_576 and settings.verify_tls and settings.trust_env
    assert config.listen.host == "127.0.0.1" and config.listen.port == 8080
    assert route.auth.login_url == "https://dm-us.informaticacloud.com"
    assert (route.auth.idle_timeout, route.auth.refresh_margin) == (1800, 120)
    assert route.auth.login_retry_after == 300 and route.auth.reauth_on == (401,)
    ivanti = parse_config(one_route()).routes[0].auth
    assert ivanti.idle_timeout == 1200 and ivanti.base_url == "https://t.example.com"


def test_config_objects_are_immutable() -> None:
    config = parse_config(one_route())
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error
        config.routes[0].name = "other"  # type: ignore[misc]


async def test_secret_sources_resolve_at_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_file = tmp_path / "pw.txt"
    secret_file.write_text("from-file\n")
    (tmp_path / "config.yaml").write_text(
        "routes:\n"
        "  - name: r\n"
        "    match: {prefix: /r}\n"
        "    auth:\n"
        "      type: iics-saml\n"
        "      pod: dm-us\n"
        "      org_id: org\n"
        "      saml_token: {file: pw.txt}\n"
    )
    config = load_config(tmp_path / "config.yaml")
    token = config.routes[0].auth.saml_token
    assert await token.resolve() == "from-file"
    secret_file.write_text("rotated\n")
    assert await token.resolve() == "rotated"  # re-read, for rotated mounted secrets

    monkeypatch.setenv("SECRET_X", "from-env")
    env_secret = (
        parse_config(
            one_route({"type": "ivanti-api-key", "tenant": "t", "api_key": {"env": "SECRET_X"}})
        )
        .routes[0]
        .auth.api_key
    )
    assert await env_secret.resolve() == "from-env"
    monkeypatch.delenv("SECRET_X")
    with pytest.raises(LoginFailed, match="SECRET_X is not set"):
        await env_secret.resolve()

    counter = tmp_path / "n"
    command = (
        parse_config(
            one_route(
                {
                    "type": "ivanti-api-key",
                    "tenant": "t",
                    "api_key": {"command": f"echo x >> {counter}; wc -l < {counter}"},
                }
            )
        )
        .routes[0]
        .auth.api_key
    )
    assert [await command.resolve(), await command.resolve()] == ["1", "2"]  # runs each time
    failing = (
        parse_config(
            one_route({"type": "ivanti-api-key", "tenant": "t", "api_key": {"command": "exit 3"}})
        )
        .routes[0]
        .auth.api_key
    )
    with pytest.raises(LoginFailed, match="exited with status 3"):
        await failing.resolve()


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("routes:\n  - name: a\n    match: {prefix: /a\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: .* at line \d+"):
        load_config(path)

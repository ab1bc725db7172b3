"""A login answer's server URL must be one the HTTP client can use, or the login failed.

An IICS login names the host every later call goes to (``serverUrl``, v3 ``baseApiUrl``).
A URL that parses loosely but that the client cannot use must fail the login (502
``login_failed``, then backoff), never become the session's upstream and turn every
request into a 500 until the session ends.
"""

from __future__ import annotations

import aiohttp
import pytest
from helpers import base, iics_route

from proxy.core.errors import LoginFailed, UntrustedUpstream
from proxy.flows.base import server_url, trust_upstream
from proxy.sandbox import Sandbox

# (serverUrl with {port} for the sandbox POD's port, a word the error message must contain)
UNUSABLE = [
    ("http://evil.com\\.127.0.0.1:{port}/saas", "backslash"),
    ("http://127.0.0.1:99999/saas", "port"),
    ("http://127.0.0.1:0/saas", "port"),
    ("http://127.0.0.1:x/saas", "port"),
    ("http://" + "ä" * 64 + ".127.0.0.1:{port}/saas", "idna"),
    ("http://\ud800.127.0.0.1:{port}/saas", "idna"),
    ("http://xn--abc.127.0.0.1:{port}/saas", "host"),
    ("http://:{port}/saas", "host"),
    ("https://user:hunter2@127.0.0.1:{port}/saas", "user"),
    ("http://na 1.127.0.0.1:{port}/saas", "space"),
    ("http://a\x00b.127.0.0.1:{port}/saas", "control"),
    ("http://127.0.0.1%2e:{port}/saas", "host"),
    ("http://[::1/saas", "ipv6"),
    ("http://[fe80::1%25eth0]:{port}/saas", "host"),
    ("ftp://127.0.0.1:{port}/saas", "scheme"),
    ("/saas", "scheme"),
]


@pytest.mark.parametrize(("template", "word"), UNUSABLE, ids=range(len(UNUSABLE)))
async def test_an_unusable_server_url_fails_the_login_then_backs_off(
    template: str, word: str, sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, logs
) -> None:
    bad = template.replace("{port}", sandbox.urls.pod.rsplit(":", 1)[1])
    sandbox.state.server_url_override = bad
    server = await make_proxy(routes=[iics_route(sandbox)])
    url = base(server, "/iics/saas/api/v2/agent")
    async with http.get(url) as resp:
        body = await resp.json()
        assert (resp.status, body["error"]["code"]) == (502, "login_failed")
        message = body["error"]["message"]
        assert "server URL" in message and word in message.lower(), message
        assert "hunter2" not in message
    async with http.get(url) as resp:
        assert resp.status == 503
        assert resp.headers["X-Auth-Proxy-Error"] == "login_backoff"
        assert resp.headers["Retry-After"].isdigit()
    assert logs.events("login_ok") == []
    assert [e["code"] for e in logs.events("login_failed")] == ["login_failed"]
    assert "Traceback" not in logs.text
    assert "hunter2" not in logs.text


async def test_an_unusable_v3_base_api_url_fails_the_login(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, logs
) -> None:
    sandbox.state.server_url_override = "http://127.0.0.1:99999/saas"
    server = await make_proxy(routes=[iics_route(sandbox, type="iics-password-v3")])
    async with http.get(base(server, "/iics/saas/api/v2/agent")) as resp:
        assert resp.status == 502
        assert "port" in (await resp.json())["error"]["message"].lower()
    assert logs.events("login_ok") == []


async def test_a_host_with_a_trailing_dot_is_followed_without_it(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    pod = sandbox.urls.pod
    sandbox.state.server_url_override = pod.replace("127.0.0.1", "127.0.0.1.") + "/saas"
    server = await make_proxy(routes=[iics_route(sandbox)])
    async with http.get(base(server, "/iics/saas/api/v2/agent")) as resp:
        assert resp.status == 200
    assert sandbox.state.requests[-1].headers["Host"] == pod.split("//")[1]


# ---------------------------------------------------------------- the validator itself


@pytest.mark.parametrize(
    ("given", "usable"),
    [
        (
            "https://na1.dm-us.informaticacloud.com/saas",
            "https://na1.dm-us.informaticacloud.com/saas",
        ),
        (
            "https://NA1.DM-US.InformaticaCloud.com/saas/",
            "https://na1.dm-us.informaticacloud.com/saas",
        ),
        (
            "https://na1.dm-us.informaticacloud.com./saas",
            "https://na1.dm-us.informaticacloud.com/saas",
        ),
        ("https://na1.example.com:443/saas", "https://na1.example.com/saas"),
        ("http://na1.example.com:80", "http://na1.example.com"),
        ("https://na1.example.com:8443/saas?x=1#f", "https://na1.example.com:8443/saas"),
        ("https://bücher.example/saas", "https://xn--bcher-kva.example/saas"),
        ("https://xn--bcher-kva.example/saas", "https://xn--bcher-kva.example/saas"),
        ("https://[::1]:8443/saas", "https://[::1]:8443/saas"),
        ("https://[2001:DB8::1]/saas", "https://[2001:db8::1]/saas"),
        ("http://127.0.0.1:9301/saas", "http://127.0.0.1:9301/saas"),
        ("https://pod_1.example.com/saas", "https://pod_1.example.com/saas"),
        ("https://na1.example.com/a%20b/../saas", "https://na1.example.com/saas"),
    ],
)
def test_server_url_gives_the_url_the_client_will_use(given: str, usable: str) -> None:
    assert str(server_url(given)) == usable


@pytest.mark.parametrize(
    ("given", "word"),
    [
        (template.replace("{port}", "9301"), word)
        for template, word in UNUSABLE
        if "\ud800" not in template  # pytest ids cannot hold a lone surrogate
    ]
    + [
        ("https://user@na1.example.com/saas", "user"),
        ("https://na1.example.com%2f@evil.example/saas", "user"),
        ("https://na1.example.com\\@evil.example/saas", "user"),
        ("https://-na1.example.com/saas", "host"),
        ("https://na1..example.com/saas", "host"),
        ("https://" + "a" * 64 + ".example.com/saas", "host"),
        ("https://" + "a." * 127 + "com/saas", "host"),
        ("https://na1.example.com:+443/saas", "port"),
        ("https://na1.example.com:-1/saas", "port"),
        ("https://[127.0.0.1]/saas", "ipv6"),
        ("https://na1.example.com\r\nX-Evil: 1/saas", "control"),
        ("https://na1.example.com\t/saas", "control"),
        ("https:///saas", "host"),
        ("javascript:alert(1)", "scheme"),
        ("", "scheme"),
    ],
)
def test_server_url_refuses_an_unusable_url(given: str, word: str) -> None:
    with pytest.raises(LoginFailed) as raised:
        server_url(given)
    assert word in raised.value.message.lower()
    assert "hunter2" not in raised.value.message


def test_server_url_refuses_a_host_the_client_cannot_encode() -> None:
    with pytest.raises(LoginFailed, match=r"(?i)idna"):
        server_url("https://\ud800.example.com/saas")


LOGIN = "https://dm-us.informaticacloud.com"


@pytest.mark.parametrize(
    ("given", "login", "allowed", "origin"),
    [
        (
            "https://na1.DM-US.informaticacloud.com./saas",
            LOGIN,
            (),
            "https://na1.dm-us.informaticacloud.com",
        ),
        (
            "https://nä1.dm-us.informaticacloud.com/saas",
            LOGIN,
            (),
            "https://xn--n1-via.dm-us.informaticacloud.com",
        ),
        (
            "https://dm-us.informaticacloud.com:8443/saas",
            LOGIN,
            (),
            "https://dm-us.informaticacloud.com:8443",
        ),
        ("http://[::1]:9301/saas", "http://127.0.0.1:9300", ("::1",), "http://[::1]:9301"),
        ("http://127.0.0.1:9301/saas", "http://127.0.0.1:9300", (), "http://127.0.0.1:9301"),
    ],
)
def test_trust_upstream_checks_the_host_that_will_be_contacted(
    given: str, login: str, allowed: tuple[str, ...], origin: str
) -> None:
    assert str(trust_upstream(given, login, allowed).origin) == origin


@pytest.mark.parametrize(
    ("given", "login"),
    [
        ("https://evil.example/saas", LOGIN),
        ("https://informaticacloud.com/saas", LOGIN),
        ("https://evil-dm-us.informaticacloud.com/saas", LOGIN),
        ("https://evil.example#@dm-us.informaticacloud.com/saas", LOGIN),
        # An IP address has no subdomains: "x.127.0.0.1" is some other name entirely.
        ("http://evil.com.127.0.0.1:9301/saas", "http://127.0.0.1:9300"),
        ("http://[::ffff:127.0.0.1]:9301/saas", "http://127.0.0.1:9300"),
    ],
)
def test_trust_upstream_refuses_other_hosts(given: str, login: str) -> None:
    with pytest.raises(UntrustedUpstream):
        trust_upstream(given, login, ())

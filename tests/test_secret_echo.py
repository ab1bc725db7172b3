"""A vendor that echoes the submitted password in its refusal: no client and no log sees it.

Every route's password is wrong, so the sandbox refuses it and echoes it back: verbatim,
inside the request body it quotes (JSON-escaped), or cut short by the proxy's limit on
vendor text. No form of it may reach the 502 body, ``/-/sessions``, the output of
``auth-proxy check --login`` or the log; the rest of the vendor's text still does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import base, ivanti_session_route, prefix_route, run_check, write_config

from proxy.core.masking import MASK
from proxy.sandbox import Sandbox

PASSWORD = 'Mk8echo"Q7zz/4b1d%&x+y'  # JSON, URL and form encodings all differ
MARKER = "Mk8echo"  # its prefix: in every escaped or cut-off form of it

ECHOES = {
    "verbatim": "password '{password}' is wrong",
    "json-escaped": "cannot accept {body}",
    # The proxy keeps 300 characters of vendor text: the cut falls inside the password.
    "truncated": "." * 290 + " {password} is wrong",
}

PATHS = {
    "v2": "/saas/api/v2/agent",
    "v3": "/saas/public/core/v3/objects",
    "ivs": "/api/odata/businessobject/incidents",
}


def wrong_password_routes(sandbox: Sandbox) -> list[dict[str, Any]]:
    iics = {"login_url": sandbox.urls.login, "username": "demo", "password": PASSWORD}
    return [
        prefix_route("v2", {"type": "iics-password", **iics}),
        prefix_route("v3", {"type": "iics-password-v3", **iics}),
        ivanti_session_route(sandbox, name="ivs", prefix="/ivs", password=PASSWORD),
    ]


@pytest.mark.parametrize("echo", list(ECHOES))
async def test_an_echoed_password_reaches_no_client_and_no_log(
    echo: str, sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession, logs
) -> None:
    sandbox.state.rejection_echo = ECHOES[echo]
    server = await make_proxy(routes=wrong_password_routes(sandbox), log={"level": "debug"})
    answers: list[str] = []
    for name, path in PATHS.items():
        for _ in range(2):  # the refusal itself, then the lockout repeating its message
            async with http.get(base(server, f"/{name}{path}")) as resp:
                assert resp.status == 502
                answers.append(await resp.text())
                assert json.loads(answers[-1])["error"]["code"] == "login_rejected"
    async with http.get(base(server, "/-/sessions")) as resp:
        sessions_text = await resp.text()
    await server.stop(drain_timeout=1)

    assert len(sandbox.state.logins) == 3  # one refused login per route, no retry
    assert all(seen.json()["password"] == PASSWORD for seen in sandbox.state.logins)
    outputs = {"502 body": "".join(answers), "/-/sessions": sessions_text, "log": logs.text}
    assert [where for where, text in outputs.items() if MARKER in text] == []
    # The vendor's text came through, masked where it held the password.
    for name, status in json.loads(sessions_text).items():
        assert status["state"] == "rejected", name
        assert MASK in status["last_error"] and "(HTTP 4" in status["last_error"], name


@pytest.mark.parametrize("echo", list(ECHOES))
async def test_check_login_prints_no_echoed_password(
    echo: str, sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.state.rejection_echo = ECHOES[echo]
    path = tmp_path / "config.yaml"
    write_config(path, wrong_password_routes(sandbox))
    code, out, err = await run_check("-c", str(path), "--login")
    assert code == 1
    assert out.count("FAILED (login_rejected)") == 3
    assert [where for where, text in {"stdout": out, "stderr": err}.items() if MARKER in text] == []
    lines = err.strip().splitlines()
    assert len(lines) == 3 and all(MASK in line for line in lines), err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"password '{PASSWORD}' is wrong", f"password '{MASK}' is wrong"),
        (json.dumps({"password": PASSWORD}), json.dumps({"password": MASK})),
        ("password=Mk8echo%22Q7zz%2F4b1d%25%26x%2By&x=1", f"password={MASK}&x=1"),
        ("/login/Mk8echo%22Q7zz/4b1d%25%26x%2By", f"/login/{MASK}"),
        ('cut at Mk8echo"Q7…)', f"cut at {MASK}…)"),
        ("no secret here…", "no secret here…"),
    ],
)
def test_scrub_masks_a_value_verbatim_escaped_encoded_or_cut_off(text: str, expected: str) -> None:
    from proxy.core.masking import scrub

    assert scrub(text, [PASSWORD, "unrelated-value"]) == expected

"""``auth-proxy check --login``: logs each route in (and out again), prints a table of
what it got, and names the routes that failed, never their secrets."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import ORG_UUID, iics_route, ivanti_key_route, run_check, v2_logins, write_config

from proxy.sandbox import Sandbox

LOGOUT = "/saas/api/v2/user/logout"
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


async def test_check_login_reports_each_route_and_logs_out(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    write_config(path, [iics_route(sandbox), ivanti_key_route(sandbox)])
    code, out, err = await run_check("-c", str(path), "--login")
    assert code == 0, err
    table = out[out.index("ROUTE") :].splitlines()
    assert table[0].split() == ["ROUTE", "TYPE", "UPSTREAM", "ORG", "SESSION", "EXPIRES"]
    iics = table[1].split()
    assert iics[:4] == ["iics", "iics-password", sandbox.urls.pod, ORG_UUID]
    assert ISO.fullmatch(iics[4])
    assert table[2].split() == ["ivanti", "ivanti-api-key", sandbox.urls.ivanti, "-", "never"]
    assert v2_logins(sandbox) == 1
    assert len(sandbox.state.requests_to(LOGOUT)) == 1  # the session it opened is closed
    assert "demo-password" not in out + err


async def test_check_login_names_failing_routes_and_exits_1(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    bad = iics_route(sandbox, name="bad", prefix="/bad", password="s3cret-wrong")
    write_config(path, [iics_route(sandbox), bad])
    code, out, err = await run_check("-c", str(path), "--login")
    assert code == 1
    assert "FAILED (login_rejected)" in out
    (line,) = err.strip().splitlines()
    assert line.startswith("auth-proxy: login failed for route bad: login_rejected: ")
    assert "s3cret-wrong" not in out + err
    assert re.search(r"^iics\s+iics-password\s+http", out, re.M)


async def test_check_login_only_the_named_routes_and_unknown_names_exit_2(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    write_config(path, [iics_route(sandbox), ivanti_key_route(sandbox)])
    code, out, err = await run_check("-c", str(path), "--login", "ivanti")
    assert code == 0, err
    assert "ivanti-api-key" in out[out.index("ROUTE") :]
    assert "iics-password" not in out[out.index("ROUTE") :]
    assert v2_logins(sandbox) == 0

    code, _, err = await run_check("-c", str(path), "--login", "ivanti", "nosuch")
    assert code == 2
    assert "unknown route nosuch" in err
    assert v2_logins(sandbox) == 0

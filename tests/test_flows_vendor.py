"""IICS flow pieces for vendor-aware forwarding, fed answers without sockets: picking the
v3 product by name, and asking the vendor for the org's session timeout."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import LOGIN, POD, FlowCalls, answer, run_flow, v2_user

from proxy.config import IicsPasswordAuth
from proxy.core.errors import LoginFailed, UpstreamUnreachable
from proxy.flows.base import LoginResponse
from proxy.flows.iics import IicsPasswordFlow, select_product, valid_session_probe

PRODUCTS = [
    {"name": "Integration Cloud", "baseApiUrl": POD + "/saas"},
    {"name": "Data Integration", "baseApiUrl": "https://di.dm-us.informaticacloud.com/saas"},
]

# --------------------------------------------------------------------------- products


def test_without_a_name_the_first_product_is_used() -> None:
    assert select_product(PRODUCTS, None) == POD + "/saas"


@pytest.mark.parametrize("name", ["Data Integration", "data integration", " Data Integration "])
def test_a_product_is_picked_by_name(name: str) -> None:
    assert select_product(PRODUCTS, name) == "https://di.dm-us.informaticacloud.com/saas"


def test_an_unknown_name_fails_the_login_listing_the_names_there_were() -> None:
    with pytest.raises(LoginFailed) as failed:
        select_product(PRODUCTS, "CDGC")
    assert failed.value.code == "login_failed"
    assert failed.value.message == (
        "IICS v3 login answer has no product named 'CDGC'; "
        "it lists 'Integration Cloud', 'Data Integration'"
    )


@pytest.mark.parametrize("products", [[], None, "x", [{"baseApiUrl": 5}], [17]])
def test_no_usable_product_fails_the_login(products: Any) -> None:
    with pytest.raises(LoginFailed, match="no baseApiUrl"):
        select_product(products, None)


def test_an_unknown_name_among_no_names() -> None:
    with pytest.raises(LoginFailed, match="no product named 'CDGC'; it lists none"):
        select_product([{"baseApiUrl": POD}, "junk"], "CDGC")


def test_the_chosen_product_needs_a_base_url() -> None:
    with pytest.raises(LoginFailed, match="no baseApiUrl"):
        select_product([*PRODUCTS, {"name": "CAI"}], "CAI")


def test_vendor_names_are_shown_printable_and_short() -> None:
    products = [{"name": "Bad\nName\x1b[31m" + "x" * 200, "baseApiUrl": POD}]
    with pytest.raises(LoginFailed) as failed:
        select_product(products, "CDGC")
    assert "\n" not in failed.value.message and "\x1b" not in failed.value.message
    assert len(failed.value.message) < 200
    with pytest.raises(LoginFailed, match=r"it lists 'Gr\\xf6\\xdfe'$"):
        select_product([{"name": "Größe", "baseApiUrl": POD}], "CDGC")


# --------------------------------------------------------------------------- validSessionId

SERVER_URL = POD + "/saas"


def probe_answer(minutes: Any = 29, valid: Any = True, status: int = 200) -> LoginResponse:
    body = {"@type": "validatedToken", "timeUntilExpire": minutes, "isValidToken": valid}
    return answer(status, body)


async def test_the_probe_asks_valid_session_id_and_returns_seconds() -> None:
    calls = FlowCalls()
    probe = valid_session_probe(SERVER_URL, "demo", "SID22charsSID22charsXX")
    assert await run_flow(probe, probe_answer(29), calls=calls) == 1740
    (request,) = calls.requests
    assert (request.method, request.url) == ("POST", SERVER_URL + "/api/v2/user/validSessionId")
    assert request.purpose == "probe"
    assert request.headers == {"Content-Type": "application/json", "Accept": "application/json"}
    assert json.loads(request.body or b"") == {
        "@type": "validatedToken",
        "userName": "demo",
        "icToken": "SID22charsSID22charsXX",
    }
    assert "SID22chars" not in repr(request)


async def test_a_trailing_slash_on_the_server_url_is_not_doubled() -> None:
    calls = FlowCalls()
    probe = valid_session_probe(SERVER_URL + "/", "demo", "S")
    assert await run_flow(probe, probe_answer(5), calls=calls) == 300
    assert calls.requests[0].url == SERVER_URL + "/api/v2/user/validSessionId"


@pytest.mark.parametrize(
    "reply",
    [
        probe_answer(29, valid=False),
        probe_answer(0),
        probe_answer(-3),
        probe_answer("29"),
        probe_answer(True),
        probe_answer(None),
        answer(raw=b'{"timeUntilExpire": NaN, "isValidToken": true}'),
        answer(raw=b'{"timeUntilExpire": 1e999, "isValidToken": true}'),
        probe_answer(29, valid="true"),
        probe_answer(29, status=401),
        probe_answer(29, status=429),
        probe_answer(29, status=500),
        answer(body=[29]),
        answer(raw=b"<html>maintenance</html>"),
    ],
)
async def test_any_unusable_answer_gives_none(reply: LoginResponse) -> None:
    assert await run_flow(valid_session_probe(SERVER_URL, "demo", "S"), reply) is None


def test_a_transport_failure_thrown_in_gives_none() -> None:
    probe = valid_session_probe(SERVER_URL, "demo", "S")
    next(probe)
    with pytest.raises(StopIteration) as stop:
        probe.throw(UpstreamUnreachable("connection refused"))
    assert stop.value.value is None


async def test_fractional_minutes_are_kept() -> None:
    assert await run_flow(valid_session_probe(SERVER_URL, "u", "S"), probe_answer(2.5)) == 150


def password_flow() -> IicsPasswordFlow:
    auth = IicsPasswordAuth.model_validate(
        {"type": "iics-password", "login_url": LOGIN, "username": "demo", "password": "pw"}
    )
    return IicsPasswordFlow(auth)


async def test_a_flow_probes_its_session_for_the_org_timeout() -> None:
    flow = password_flow()
    session = await run_flow(flow.login(), answer(body={**v2_user(), "name": "demo"}))
    calls = FlowCalls()
    assert await run_flow(flow.org_idle_timeout(session), probe_answer(5), calls=calls) == 300
    body = json.loads(calls.requests[0].body or b"")
    assert (body["userName"], body["icToken"]) == ("demo", "SID22charsSID22charsXX")
    assert calls.requests[0].url == POD + "/saas/api/v2/user/validSessionId"


async def test_a_jwt_session_is_not_probed() -> None:
    """Its end is the JWT's exp; there is no idle clock to learn."""
    flow = password_flow()
    token = "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjIwMDAwMDAwMDB9.c2ln"
    session = await run_flow(flow.login(), answer(body=v2_user(session_id=token)))
    assert session.hard_expiry == 2_000_000_000
    assert await run_flow(flow.org_idle_timeout(session)) is None


async def test_a_session_without_a_user_name_is_not_probed() -> None:
    flow = password_flow()
    user = {k: v for k, v in v2_user().items() if k != "name"}
    session = await run_flow(flow.login(), answer(body=user))
    assert await run_flow(flow.org_idle_timeout(session)) is None

"""The Ivanti session login flow as protocol logic: the session key (or a JWT) the
tenant answers; run by the product's driver on canned answers, no sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import FlowCalls, answer, jwt, run_flow

from proxy.config import IvantiSessionAuth
from proxy.core.errors import LoginFailed, LoginRejected
from proxy.flows.ivanti import IvantiSessionFlow


def ivanti_flow(**extra: Any) -> IvantiSessionFlow:
    auth = IvantiSessionAuth.model_validate(
        {
            "type": "ivanti-session",
            "tenant": "t.saasit.com",
            "username": "u",
            "password": "pw",
            "role": "Admin",
            **extra,
        }
    )
    return IvantiSessionFlow(auth)


async def test_ivanti_session_key_is_sent_raw() -> None:
    calls = FlowCalls()
    session = await run_flow(ivanti_flow().login(), answer(body="t.saasit.com#ABC#2"), calls=calls)
    (req,) = calls.requests
    assert req.url == "https://t.saasit.com/api/rest/authentication/login"
    assert json.loads(req.body or b"") == {
        "tenant": "t.saasit.com",
        "username": "u",
        "password": "pw",
        "role": "Admin",
    }
    assert dict(session.headers) == {"Authorization": "t.saasit.com#ABC#2"}
    assert session.upstream == "https://t.saasit.com"
    assert session.hard_expiry is None and session.sliding


async def test_ivanti_jwt_is_sent_as_bearer_and_bounds_the_session() -> None:
    token = jwt(sub="u", exp=1_800_000_000)
    session = await run_flow(ivanti_flow().login(), answer(body=token))
    assert dict(session.headers) == {"Authorization": f"Bearer {token}"}
    assert session.hard_expiry == 1_800_000_000


async def test_ivanti_heat_url_keeps_its_path() -> None:
    calls = FlowCalls()
    flow = ivanti_flow(url="https://onprem.example/HEAT")
    session = await run_flow(flow.login(), answer(body="t.saasit.com#K#2"), calls=calls)
    assert calls.requests[0].url == "https://onprem.example/HEAT/api/rest/authentication/login"
    assert session.upstream == "https://onprem.example/HEAT"


async def test_ivanti_bad_login_is_rejected_with_vendor_text() -> None:
    err = {
        "code": "ISM_4000",
        "description": "Bad Request",
        "message": ["Unhandled system exception: Tenant Not Found or wrong Password."],
    }
    with pytest.raises(LoginRejected, match="ISM_4000: Unhandled system exception: Tenant"):
        await run_flow(ivanti_flow().login(), answer(400, err))


@pytest.mark.parametrize("body", [{"key": "x"}, "", None])
async def test_ivanti_answer_that_is_not_a_string_is_a_failure(body: Any) -> None:
    with pytest.raises(LoginFailed):
        await run_flow(ivanti_flow().login(), answer(body=body))


async def test_ivanti_has_no_rest_logout() -> None:
    flow = ivanti_flow()
    session = await run_flow(flow.login(), answer(body="t.saasit.com#K#2"))
    assert flow.logout(session) is None

"""IICS login flows as protocol logic (v3 password, SAML): each generator is run by the
product's driver and fed canned vendor answers, no sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import LOGIN, POD, FlowCalls, answer, jwt, run_flow, v2_user

from proxy.config import IicsPasswordV3Auth, IicsSamlAuth
from proxy.core.errors import LoginFailed, LoginRejected, UntrustedUpstream
from proxy.core.secrets import Secret
from proxy.flows.base import LoginResponse
from proxy.flows.iics import IicsPasswordV3Flow, IicsSamlFlow

# --------------------------------------------------------------------------- IICS v3


def v3_flow(**extra: Any) -> IicsPasswordV3Flow:
    auth = IicsPasswordV3Auth.model_validate(
        {"type": "iics-password-v3", "login_url": LOGIN, "username": "u", "password": "pw", **extra}
    )
    return IicsPasswordV3Flow(auth)


def v3_answer(session_id: str = "V3SESSION", base: str = POD + "/saas") -> LoginResponse:
    return answer(
        body={
            "products": [{"name": "Integration Cloud", "baseApiUrl": base}],
            "userInfo": {"sessionId": session_id, "orgId": "ORG22", "name": "u"},
        }
    )


async def test_v3_login_request_and_session() -> None:
    calls = FlowCalls()
    session = await run_flow(v3_flow().login(), v3_answer(), calls=calls)
    (req,) = calls.requests
    assert (req.method, req.url) == ("POST", LOGIN + "/saas/public/core/v3/login")
    assert json.loads(req.body or b"") == {"username": "u", "password": "pw"}
    assert req.headers["Content-Type"] == "application/json"
    assert dict(session.headers) == {
        "icSessionId": "V3SESSION",
        "INFA-SESSION-ID": "V3SESSION",
        "IDS-SESSION-ID": "V3SESSION",
    }
    assert session.upstream == POD
    assert session.base_for("/ma/api/v2/user") == LOGIN
    assert session.org == "ORG22"


async def test_v3_logout_goes_to_login_host_with_infa_session_id() -> None:
    flow = v3_flow()
    session = await run_flow(flow.login(), v3_answer())
    req = flow.logout(session)
    assert req.url == LOGIN + "/saas/public/core/v3/logout"
    assert req.headers["INFA-SESSION-ID"] == "V3SESSION"


@pytest.mark.parametrize(
    ("body", "missing"),
    [
        ({"products": [], "userInfo": {"sessionId": "x"}}, "baseApiUrl"),
        ({"products": [{"baseApiUrl": POD}]}, "userInfo"),
        ({"products": [{"baseApiUrl": POD}], "userInfo": {}}, "sessionId"),
    ],
)
async def test_v3_incomplete_answer_is_a_failure(body: Any, missing: str) -> None:
    with pytest.raises(LoginFailed, match=missing):
        await run_flow(v3_flow().login(), answer(body=body))


async def test_v3_bad_password_is_rejected_with_vendor_code() -> None:
    err = {"error": {"code": "IDS_085", "message": "User name or password is not valid."}}
    with pytest.raises(LoginRejected, match="IDS_085: User name or password is not valid"):
        await run_flow(v3_flow().login(), answer(403, err))


async def test_v3_base_api_url_is_ssrf_checked() -> None:
    with pytest.raises(UntrustedUpstream, match=r"evil\.example"):
        await run_flow(v3_flow().login(), v3_answer(base="https://evil.example/saas"))


async def test_jwt_session_id_bounds_the_session() -> None:
    token = jwt(sub="u", exp=2_000_000_000)
    session = await run_flow(v3_flow().login(), v3_answer(session_id=token))
    assert session.hard_expiry == 2_000_000_000
    assert session.sliding


async def test_the_v3_flow_still_takes_the_first_product() -> None:
    """Picking a product by name (``select_product``) is not wired into the flow yet."""
    products = [
        {"name": "Data Integration", "baseApiUrl": "https://di.dm-us.informaticacloud.com/saas"},
        {"name": "Integration Cloud", "baseApiUrl": POD + "/saas"},
    ]
    body = {"products": products, "userInfo": {"sessionId": "S", "name": "u"}}
    session = await run_flow(v3_flow().login(), answer(body=body))
    assert session.upstream == "https://di.dm-us.informaticacloud.com"


# --------------------------------------------------------------------------- SAML


async def test_saml_resolves_its_source_on_every_login() -> None:
    auth = IicsSamlAuth.model_validate(
        {
            "type": "iics-saml",
            "login_url": LOGIN,
            "saml_token": {"command": "mint"},
            "org_id": "ORG",
        }
    )
    flow = IicsSamlFlow(auth)
    bodies = []
    for assertion in ("first-assertion", "second-assertion"):
        calls = FlowCalls()
        await run_flow(
            flow.login(), answer(body=v2_user()), secrets={"mint": assertion}, calls=calls
        )
        assert calls.resolved == [Secret("command", "mint")]
        (req,) = calls.requests
        assert req.url == LOGIN + "/ma/api/v2/user/loginSaml"
        bodies.append(json.loads(req.body or b""))
    assert bodies == [
        {"samlToken": "first-assertion", "orgId": "ORG"},
        {"samlToken": "second-assertion", "orgId": "ORG"},
    ]

"""The IDMC JWT login flow as protocol logic: an identity-service login, then a JWT
minted (and re-minted on renewal) with a fresh nonce; run by the product's driver on
canned answers, no sockets."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from helpers import LOGIN, FlowCalls, answer, jwt, run_flow

from proxy.config import IdmcJwtAuth
from proxy.core.errors import LoginFailed, LoginRejected
from proxy.flows.base import LoginResponse
from proxy.flows.idmc import IdmcJwtFlow


def idmc_flow() -> IdmcJwtFlow:
    auth = IdmcJwtAuth.model_validate(
        {
            "type": "idmc-jwt",
            "login_url": LOGIN,
            "username": "u",
            "password": "pw",
            "upstream": "https://cdgc-api.dm-us.informaticacloud.com",
        }
    )
    return IdmcJwtFlow(auth)


def ids_answer(sid: str = "IDSSID", expire: str = "2030-01-01T00:00:00.000Z") -> LoginResponse:
    return answer(body={"sessionId": sid, "orgId": "ORG22", "sessionExpireTime": expire})


def minted(token: str) -> LoginResponse:
    return answer(body={"jwt_token": token})


async def test_idmc_login_then_mint() -> None:
    token = jwt(sub="u", exp=1_900_000_000)
    calls = FlowCalls()
    session = await run_flow(idmc_flow().login(), ids_answer(), minted(token), calls=calls)
    login, mint = calls.requests
    assert login.url == LOGIN + "/identity-service/api/v1/Login"
    assert json.loads(login.body or b"") == {"username": "u", "password": "pw"}
    url = urlsplit(mint.url)
    assert url.path == "/identity-service/api/v1/jwt/Token"
    query = parse_qs(url.query)
    assert query["client_id"] == ["idmc_api"]
    assert len(query["nonce"][0]) >= 16
    assert mint.headers["Cookie"] == "USER_SESSION=IDSSID"
    assert mint.headers["IDS-SESSION-ID"] == "IDSSID"
    assert dict(session.headers) == {
        "Authorization": f"Bearer {token}",
        "X-INFA-ORG-ID": "ORG22",
        "IDS-SESSION-ID": "IDSSID",
    }
    assert session.upstream == "https://cdgc-api.dm-us.informaticacloud.com"
    assert session.hard_expiry == 1_893_456_000  # 2030-01-01T00:00:00Z
    assert session.token_expiry == 1_900_000_000
    assert not session.sliding


async def test_idmc_nonce_is_fresh_per_mint() -> None:
    flow = idmc_flow()
    calls = FlowCalls()
    session = await run_flow(flow.login(), ids_answer(), minted(jwt(exp=1)), calls=calls)
    await run_flow(flow.renew(session), minted(jwt(exp=2)), calls=calls)
    _, *mints = calls.requests
    nonces = {parse_qs(urlsplit(r.url).query)["nonce"][0] for r in mints}
    assert len(mints) == 2 and len(nonces) == 2


async def test_idmc_renew_reminits_without_login() -> None:
    flow = idmc_flow()
    session = await run_flow(flow.login(), ids_answer(), minted(jwt(exp=100)))
    calls = FlowCalls()
    renewed = await run_flow(flow.renew(session), minted(jwt(exp=200)), calls=calls)
    (mint,) = calls.requests
    assert "/jwt/Token?" in mint.url
    assert renewed.token_expiry == 200
    assert renewed.hard_expiry == session.hard_expiry
    assert dict(renewed.headers)["IDS-SESSION-ID"] == "IDSSID"


async def test_idmc_renew_falls_back_to_full_login_on_401() -> None:
    flow = idmc_flow()
    session = await run_flow(flow.login(), ids_answer(), minted(jwt(exp=100)))
    calls = FlowCalls()
    renewed = await run_flow(
        flow.renew(session),
        answer(401, {"error": {"code": "IDS_401", "message": "expired"}}),
        ids_answer(sid="NEWSID"),
        minted(jwt(exp=300)),
        calls=calls,
    )
    assert [urlsplit(r.url).path.rsplit("/", 1)[-1] for r in calls.requests] == [
        "Token",
        "Login",
        "Token",
    ]
    assert dict(renewed.headers)["IDS-SESSION-ID"] == "NEWSID"


async def test_idmc_jwt_without_exp_lives_30_minutes_from_iat() -> None:
    session = await run_flow(idmc_flow().login(), ids_answer(), minted(jwt(iat=1000)))
    assert session.token_expiry == 2800


async def test_idmc_opaque_token_lives_30_minutes() -> None:
    before = time.time()
    session = await run_flow(idmc_flow().login(), ids_answer(), minted("opaque"))
    expiry = session.token_expiry
    assert expiry is not None and before + 1800 <= expiry <= time.time() + 1800


async def test_idmc_bad_password_is_rejected() -> None:
    err = {"error": {"code": "IDS_085", "message": "User name or password is not valid."}}
    with pytest.raises(LoginRejected, match="IDS_085"):
        await run_flow(idmc_flow().login(), answer(401, err))


async def test_idmc_unreadable_expire_time_is_a_failure() -> None:
    with pytest.raises(LoginFailed, match="sessionExpireTime"):
        await run_flow(idmc_flow().login(), ids_answer(expire="next tuesday"))


async def test_idmc_logout() -> None:
    flow = idmc_flow()
    session = await run_flow(flow.login(), ids_answer(), minted(jwt(exp=1)))
    req = flow.logout(session)
    assert req.url == LOGIN + "/identity-service/api/v1/Logout"
    assert req.headers["IDS-SESSION-ID"] == "IDSSID"

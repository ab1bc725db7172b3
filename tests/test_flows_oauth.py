"""The IICS OAuth login flow as protocol logic: a configured token, or one fetched with
client credentials (RFC 6749) and fed to loginOAuth; run by the product's driver on
canned answers, no sockets."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs

import pytest
from helpers import LOGIN, FlowCalls, answer, run_flow, v2_user

from proxy.config import IicsOAuthAuth
from proxy.core.errors import LoginFailed, LoginRejected
from proxy.flows.base import LoginResponse
from proxy.flows.iics import IicsOAuthFlow


def oauth_flow(**extra: Any) -> IicsOAuthFlow:
    auth = IicsOAuthAuth.model_validate(
        {"type": "iics-oauth", "login_url": LOGIN, "org_id": "ORG", **extra}
    )
    return IicsOAuthFlow(auth)


CC = {
    "token_url": "https://idp.example/oauth2/token",
    "client_id": "my client",
    "client_secret": "s3cr&t:x",
}


async def test_oauth_with_configured_token_source() -> None:
    calls = FlowCalls()
    flow = oauth_flow(oauth_token={"env": "TOKEN"})
    session = await run_flow(
        flow.login(), answer(body=v2_user()), secrets={"TOKEN": "the.jwt.value"}, calls=calls
    )
    (req,) = calls.requests
    assert req.url == LOGIN + "/ma/api/v2/user/loginOAuth"
    assert json.loads(req.body or b"") == {"oauthToken": "the.jwt.value", "orgId": "ORG"}
    assert "the.jwt.value" in session.secrets


async def test_oauth_client_credentials_with_basic_auth() -> None:
    token = answer(body={"access_token": "fresh.jwt.token", "token_type": "Bearer"})
    calls = FlowCalls()
    flow = oauth_flow(client_credentials={**CC, "scope": "api://iics"})
    await run_flow(flow.login(), token, answer(body=v2_user()), calls=calls)
    grant, login = calls.requests
    assert grant.url == CC["token_url"]
    assert grant.headers["Content-Type"] == "application/x-www-form-urlencoded"
    # RFC 6749 §2.3.1: id and secret are form-urlencoded, then base64'd together.
    assert (
        grant.headers["Authorization"]
        == "Basic " + base64.b64encode(b"my+client:s3cr%26t%3Ax").decode()
    )
    assert parse_qs((grant.body or b"").decode()) == {
        "grant_type": ["client_credentials"],
        "scope": ["api://iics"],
    }
    assert json.loads(login.body or b"")["oauthToken"] == "fresh.jwt.token"


async def test_oauth_client_credentials_with_form_auth() -> None:
    token = answer(body={"access_token": "fresh.jwt.token"})
    calls = FlowCalls()
    flow = oauth_flow(client_credentials={**CC, "auth_method": "form"})
    await run_flow(flow.login(), token, answer(body=v2_user()), calls=calls)
    grant = calls.requests[0]
    assert "Authorization" not in grant.headers
    assert parse_qs((grant.body or b"").decode()) == {
        "grant_type": ["client_credentials"],
        "client_id": ["my client"],
        "client_secret": ["s3cr&t:x"],
    }


async def test_oauth_rfc6749_error_is_a_rejection_naming_the_error() -> None:
    err = {"error": "invalid_client", "error_description": "Client authentication failed."}
    with pytest.raises(LoginRejected) as caught:
        await run_flow(oauth_flow(client_credentials=CC).login(), answer(401, err))
    assert caught.value.message == (
        "OAuth token endpoint idp.example rejected the client "
        "(HTTP 401: invalid_client: Client authentication failed.)"
    )


async def test_oauth_scope_error_is_a_rejection_of_the_request() -> None:
    err = {"error": "invalid_scope", "error_description": "Unknown scope."}
    with pytest.raises(LoginRejected, match=r"rejected the token request .*invalid_scope"):
        await run_flow(oauth_flow(client_credentials=CC).login(), answer(400, err))


@pytest.mark.parametrize(
    "response",
    [
        answer(503, {"error": "temporarily_unavailable"}),
        answer(200, raw=b"<html>sign in</html>"),
        answer(200, {"token_type": "Bearer"}),
    ],
)
async def test_oauth_endpoint_trouble_is_a_failure(response: LoginResponse) -> None:
    with pytest.raises(LoginFailed):
        await run_flow(oauth_flow(client_credentials=CC).login(), response)

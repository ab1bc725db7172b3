"""Ivanti Service Manager: REST API keys and session logins."""

from __future__ import annotations

from typing import ClassVar

from proxy.config import IvantiApiKeyAuth, IvantiSessionAuth
from proxy.core.errors import LoginFailed
from proxy.flows.base import (
    PLACEHOLDER_SESSION,
    Emulated,
    Flow,
    FlowGen,
    Session,
    jwt_claims,
    jwt_exp,
    post_json,
    secret,
)


class IvantiFlow(Flow):
    """What both Ivanti flows share: a legacy client's login is answered by the proxy."""

    credential_headers = ("Authorization",)

    emulated_paths: ClassVar[dict[str, str]] = {"/api/rest/authentication/login": "login"}

    def emulate(self, kind: str, session: Session | None, public_base: str | None) -> Emulated:
        # Shaped like a session key, so clients that check for "#" accept it.
        tenant = getattr(self.auth, "tenant", None) or "tenant"
        return Emulated(200, f"{tenant}#{PLACEHOLDER_SESSION.upper()}#2")


class IvantiApiKeyFlow(IvantiFlow):
    """No login: the static key is sent as ``Authorization: rest_api_key=<key>``."""

    type_name = "ivanti-api-key"
    can_relogin = False
    auth: IvantiApiKeyAuth

    def login(self) -> FlowGen:
        key = yield from secret(self.auth.api_key)
        return Session(
            headers=(("Authorization", f"rest_api_key={key}"),),
            upstream=self.auth.base_url,
            sliding=False,  # keys never expire
            secrets=(key,),
        )


class IvantiSessionFlow(IvantiFlow):
    """A user login; the answer is a bare JSON string: a session key, or a JWT (OIDC).

    A failed login is a 400 ``ISM_4000``, which ``check_login`` makes a rejection: the
    tenant soft-locks the account after 5 bad attempts. There is no REST logout.
    """

    type_name = "ivanti-session"
    auth: IvantiSessionAuth

    def login(self) -> FlowGen:
        what = "Ivanti login"
        password = yield from secret(self.auth.password)
        body = {
            "tenant": self.auth.tenant,
            "username": self.auth.username,
            "password": password,
            "role": self.auth.role,
        }
        value = yield from post_json(
            f"{self.auth.base_url}/api/rest/authentication/login", body, what
        )
        if not isinstance(value, str) or not value.strip():
            raise LoginFailed(f"{what} answer is not a session key string")
        value = value.strip()
        # Session keys look like "<tenant>#<key>#<n>"; OIDC tenants answer a JWT instead.
        if self.auth.tenant.lower() in value.lower() or jwt_claims(value) is None:
            return Session(
                headers=(("Authorization", value),),
                upstream=self.auth.base_url,
                user=self.auth.username,
                secrets=(value,),
            )
        return Session(
            headers=(("Authorization", f"Bearer {value}"),),
            upstream=self.auth.base_url,
            hard_expiry=jwt_exp(value),
            user=self.auth.username,
            secrets=(value,),
        )

"""The ``auth:`` block of a route: one model per auth type, and the session tuning keys.

Each model is picked by its ``type``; ``AUTH_MODELS`` maps the type names to them. The
README's "Auth types" section describes every type and its keys.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import Field, field_validator, model_validator

from proxy.config.fields import SecretField, StrictModel, http_url


class SessionTuning(StrictModel):
    """The keys every auth type has: how long a session lives and when to log in again."""

    idle_timeout: float = Field(default=1800, gt=0)
    refresh_margin: float = Field(default=120, ge=0)
    reauth_on: tuple[int, ...] = (401,)
    login_retry_after: float = Field(default=300, ge=0)

    @field_validator("reauth_on")
    @classmethod
    def _statuses(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for status in value:
            if not 400 <= status <= 599:
                raise ValueError(f"{status} is not an HTTP error status")
            if status == 400:
                # Ivanti answers 400 for "record not found"; re-logging in on it loops.
                raise ValueError("400 cannot trigger a re-login (it also means 'not found')")
        return value


SESSION_TUNING_KEYS = frozenset(SessionTuning.model_fields)


def _pod_url(pod: object) -> str:
    return f"https://{pod}.informaticacloud.com"


class _IicsLogin(SessionTuning):
    login_url: str  # given, or derived from pod before validation
    pod: str | None = None

    GIVEN_INSTEAD: ClassVar[tuple[str, str]] = ("login_url", "pod")  # for "required" errors
    _url = field_validator("login_url")(lambda v: http_url(v, "login_url"))

    @model_validator(mode="before")
    @classmethod
    def _derive_login_url(cls, data: Any) -> Any:
        # Not raising here when neither is given: a failing before-validator would hide
        # every other error in the block; a missing login_url is reported with the rest.
        if isinstance(data, dict) and data.get("login_url") is None and data.get("pod") is not None:
            return {**data, "login_url": _pod_url(data["pod"])}
        return data

    @model_validator(mode="after")
    def _not_both(self) -> _IicsLogin:
        if self.pod is not None and self.login_url != _pod_url(self.pod):
            raise ValueError("give exactly one of login_url or pod")
        return self

    @field_validator("pod")
    @classmethod
    def _pod(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z0-9-]+", value):
            raise ValueError(f"{value!r} must look like dm-us")
        return value

    @property
    def login_origin(self) -> str:
        return self.login_url


class IicsPasswordAuth(_IicsLogin):
    type: Literal["iics-password"]
    username: str = Field(min_length=1, max_length=255)
    password: SecretField


class IicsPasswordV3Auth(_IicsLogin):
    type: Literal["iics-password-v3"]
    username: str = Field(min_length=1, max_length=255)
    password: SecretField
    product: str | None = Field(default=None, min_length=1)  # products[] entry; default first


class IicsSamlAuth(_IicsLogin):
    type: Literal["iics-saml"]
    saml_token: SecretField
    org_id: str = Field(min_length=1)


class ClientCredentials(StrictModel):
    token_url: str
    client_id: str = Field(min_length=1)
    client_secret: SecretField
    scope: str | None = None
    auth_method: Literal["basic", "form"] = "basic"

    _url = field_validator("token_url")(lambda v: http_url(v, "token_url"))


class IicsOAuthAuth(_IicsLogin):
    type: Literal["iics-oauth"]
    org_id: str = Field(min_length=1)
    oauth_token: SecretField | None = None
    client_credentials: ClientCredentials | None = None

    @model_validator(mode="after")
    def _one_source(self) -> IicsOAuthAuth:
        if (self.oauth_token is None) == (self.client_credentials is None):
            raise ValueError("give exactly one of oauth_token or client_credentials")
        return self


class SalesforceLogin(StrictModel):
    login_url: str = "https://login.salesforce.com"
    username: str = Field(min_length=1)
    password: SecretField
    security_token: SecretField | None = None
    api_version: str = "64.0"

    _url = field_validator("login_url")(lambda v: http_url(v, "login_url"))

    @field_validator("api_version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> str:
        text = str(value)
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a version like 64.0") from None
        if number > 64.0:
            raise ValueError("SOAP login() does not exist in API 65.0 and later; use <= 64.0")
        return f"{number:.1f}"


class IicsSalesforceAuth(_IicsLogin):
    type: Literal["iics-salesforce"]
    sf_session_id: SecretField | None = None
    sf_server_url: str | None = None
    salesforce: SalesforceLogin | None = None

    @model_validator(mode="after")
    def _one_source(self) -> IicsSalesforceAuth:
        given = self.sf_session_id is not None or self.sf_server_url is not None
        if given == (self.salesforce is not None):
            raise ValueError("give sf_session_id with sf_server_url, or salesforce")
        if given and (self.sf_session_id is None or self.sf_server_url is None):
            raise ValueError("sf_session_id and sf_server_url go together")
        return self


class IdmcJwtAuth(_IicsLogin):
    type: Literal["idmc-jwt"]
    username: str = Field(min_length=1, max_length=255)
    password: SecretField
    upstream: str
    client_id: str = "idmc_api"

    _url = field_validator("upstream")(lambda v: http_url(v, "upstream"))


class _Ivanti(SessionTuning):
    idle_timeout: float = Field(default=1200, gt=0)
    tenant: str | None = None
    url: str  # given, or derived from tenant before validation

    GIVEN_INSTEAD: ClassVar[tuple[str, str]] = ("url", "tenant")  # for "required" errors
    _url = field_validator("url")(lambda v: http_url(v, "url"))

    @model_validator(mode="before")
    @classmethod
    def _derive_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("url") is None and data.get("tenant"):
            return {**data, "url": f"https://{data['tenant']}"}
        return data

    @property
    def base_url(self) -> str:
        return self.url


class IvantiSessionAuth(_Ivanti):
    type: Literal["ivanti-session"]
    tenant: str = Field(min_length=1)
    username: str = Field(min_length=1)
    password: SecretField
    role: str = Field(min_length=1)


class IvantiApiKeyAuth(_Ivanti):
    type: Literal["ivanti-api-key"]
    api_key: SecretField


AuthConfig = Annotated[
    IicsPasswordAuth
    | IicsPasswordV3Auth
    | IicsSamlAuth
    | IicsOAuthAuth
    | IicsSalesforceAuth
    | IdmcJwtAuth
    | IvantiSessionAuth
    | IvantiApiKeyAuth,
    Field(discriminator="type"),
]
AUTH_MODELS: dict[str, type[SessionTuning]] = {
    get_args(model.model_fields["type"].annotation)[0]: model
    for model in get_args(get_args(AuthConfig)[0])
}
AUTH_TYPES = frozenset(AUTH_MODELS)

"""Ivanti Service Manager (protocols.md §7): REST API keys and session logins."""

from __future__ import annotations

from proxy.config import IvantiApiKeyAuth
from proxy.flows.base import Flow, FlowGen, Session, secret


class IvantiApiKeyFlow(Flow):
    """No login: the static key is sent as ``Authorization: rest_api_key=<key>``."""

    type_name = "ivanti-api-key"
    auth: IvantiApiKeyAuth

    def login(self) -> FlowGen:
        key = yield from secret(self.auth.api_key)
        return Session(
            headers=(("Authorization", f"rest_api_key={key}"),),
            upstream=self.auth.base_url,
            sliding=False,  # keys never expire
            secrets=(key,),
        )

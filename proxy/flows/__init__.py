"""Vendor login flows, one module per vendor family, and the registry of auth types."""

from __future__ import annotations

from proxy.config import Route
from proxy.flows.base import Flow
from proxy.flows.idmc import IdmcJwtFlow
from proxy.flows.iics import (
    IicsOAuthFlow,
    IicsPasswordFlow,
    IicsPasswordV3Flow,
    IicsSalesforceFlow,
    IicsSamlFlow,
)
from proxy.flows.ivanti import IvantiApiKeyFlow, IvantiSessionFlow

FLOWS: dict[str, type[Flow]] = {
    flow.type_name: flow
    for flow in (
        IicsPasswordFlow,
        IicsPasswordV3Flow,
        IicsSamlFlow,
        IicsOAuthFlow,
        IicsSalesforceFlow,
        IdmcJwtFlow,
        IvantiSessionFlow,
        IvantiApiKeyFlow,
    )
}


# A client's copy of any vendor's credential header is dropped on every route: it could
# otherwise speak with credentials the proxy did not choose.
CREDENTIAL_HEADERS = frozenset(
    name.lower() for flow in FLOWS.values() for name in flow.credential_headers
)


def flow_for(route: Route) -> Flow:
    return FLOWS[route.auth.type](route.auth, route.allowed_hosts)

"""Vendor login flows, one module per vendor family, and the registry of auth types."""

from __future__ import annotations

from proxy.config import Route
from proxy.flows.base import Flow
from proxy.flows.iics import IicsPasswordFlow
from proxy.flows.ivanti import IvantiApiKeyFlow

FLOWS: dict[str, type[Flow]] = {
    flow.type_name: flow
    for flow in (
        IicsPasswordFlow,
        IvantiApiKeyFlow,
    )
}


def flow_for(route: Route) -> Flow:
    return FLOWS[route.auth.type](route.auth, route.allowed_hosts)

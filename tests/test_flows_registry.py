"""The registry of auth types: every type the config accepts has a login flow."""

from __future__ import annotations

from proxy.config import AUTH_TYPES
from proxy.flows import FLOWS


def test_every_auth_type_has_a_flow() -> None:
    assert set(FLOWS) == AUTH_TYPES
    assert len(AUTH_TYPES) == 8

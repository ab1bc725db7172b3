"""An offline imitation of the vendor APIs the proxy talks to, served on localhost.

Used by the test suite (in-process, via ``run_sandbox``) and by ``auth-proxy demo`` /
``auth-proxy sandbox``.
"""

from proxy.core.clock import ManualClock
from proxy.sandbox.iics import expected_sha256, export_bytes, mint_saml_token
from proxy.sandbox.runner import Sandbox, SandboxUrls, run_sandbox, serve_forever
from proxy.sandbox.state import RateLimit, SandboxState, SeenRequest

__all__ = [
    "ManualClock",
    "RateLimit",
    "Sandbox",
    "SandboxState",
    "SandboxUrls",
    "SeenRequest",
    "expected_sha256",
    "export_bytes",
    "mint_saml_token",
    "run_sandbox",
    "serve_forever",
]

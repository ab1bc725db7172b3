"""An offline imitation of the vendor APIs the proxy talks to, served on localhost.

Used by the test suite (in-process, via ``run_sandbox``) and by ``auth-proxy demo`` /
``auth-proxy sandbox``.
"""

from proxy.core.clock import ManualClock
from proxy.sandbox.iics_pod import expected_sha256, export_bytes
from proxy.sandbox.ratelimit import RateLimit
from proxy.sandbox.runner import Sandbox, SandboxUrls, run_sandbox, serve_forever
from proxy.sandbox.saml import mint_saml_token
from proxy.sandbox.state import SandboxState, SeenRequest

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

"""``auth-proxy health``: exit 0 when the proxy this config describes answers
``GET /-/healthz`` (``--ready``: ``/-/readyz``) with 200, 1 otherwise. The container's
HEALTHCHECK, and Kubernetes' probes of a sidecar that listens on loopback only (an
``httpGet`` probe comes from outside the pod): it finds the port the way ``serve`` does
(``listen``, ``--listen``, ``AUTH_PROXY_LISTEN``), so it follows the config.
"""

from __future__ import annotations

import http.client
import sys
import urllib.request

from proxy.cli.run import EXIT_OK, EXIT_RUNTIME, local_address
from proxy.config import Config

HEALTH_TIMEOUT = 3.0  # under the HEALTHCHECK's own timeout


def health_command(config: Config, *, ready: bool = False) -> int:
    where = local_address(config)
    if where is None:
        print("auth-proxy: listen.port is 0 (any free port): no fixed address", file=sys.stderr)
        return EXIT_RUNTIME
    # No proxy from the environment (a container's HTTP_PROXY is for outbound calls).
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    path = "/-/readyz" if ready else "/-/healthz"
    try:
        with opener.open(f"http://{where}{path}", timeout=HEALTH_TIMEOUT) as response:
            healthy = response.status == 200
    except (OSError, http.client.HTTPException):
        healthy = False
    if not healthy:
        state = "ready" if ready else "healthy"
        print(f"auth-proxy: no {state} proxy answers on {where}", file=sys.stderr)
        return EXIT_RUNTIME
    return EXIT_OK

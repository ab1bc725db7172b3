"""The fake CDGC API host: accepts the JWTs that identity-service's jwt/Token minted."""

from __future__ import annotations

from aiohttp import web

from proxy.sandbox.appkit import add_handlers, journal_middleware, route
from proxy.sandbox.state import SandboxState, SandboxUrls
from proxy.sandbox.tokens import read_jwt


def _cdgc_unauthorized() -> web.Response:
    return web.json_response({"error": {"code": "AUTH_401", "message": "Unauthorized"}}, status=401)


class _Cdgc:
    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def _jwt_is_good(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        claims = read_jwt(token.strip(), self.state.ids_jwt_key)
        if claims is None or claims.get("jti") not in self.state.ids_jwts:
            return False
        try:
            alive = self.state.clock.now() < float(claims["exp"])
        except (KeyError, TypeError, ValueError):
            return False
        return alive and request.headers.get("X-INFA-ORG-ID") == claims.get("org")

    @route("GET", "/data360/search/v1/assets")
    async def search_assets(self, request: web.Request) -> web.Response:
        if not self._jwt_is_good(request):
            return _cdgc_unauthorized()
        hits = [
            {"core.identity": f"asset-{number}", "summary": {"core.name": name}}
            for number, name in ((1, "CUSTOMERS"), (2, "ORDERS"))
        ]
        return web.json_response(
            {
                "summary": {"total_hits": len(hits)},
                "hits": hits,
                "rawQuery": request.rel_url.raw_query_string,
            }
        )


def build_cdgc_app(state: SandboxState, urls: SandboxUrls) -> web.Application:
    app = web.Application(middlewares=[journal_middleware(state, "cdgc", lambda r: None)])
    add_handlers(app, _Cdgc(state))
    return app

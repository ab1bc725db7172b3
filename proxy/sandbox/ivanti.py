"""Fake Ivanti Service Manager tenant, at the root and under ``/HEAT``."""

from __future__ import annotations

import re
import string
from typing import Any

from aiohttp import web
from yarl import URL

from proxy.sandbox.appkit import (
    add_handlers,
    journal_middleware,
    read_json_object,
    rejection_text,
    route,
)
from proxy.sandbox.state import IvantiSession, SandboxState, SandboxUrls
from proxy.sandbox.tokens import random_id, read_jwt, sign_jwt

# On-prem installs serve the same API under /HEAT.
_PREFIXES = ("", "/HEAT")
_RECORD_TARGET = re.compile(r"(?P<objects>\w+)(?:\('(?P<rec_id>[^']*)'\))?")
_KNOWN_OBJECTS = {"incidents"}

_METADATA = """<?xml version="1.0" encoding="utf-8"?>
<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">
  <edmx:DataServices>
    <Schema Namespace="Ivanti.Sandbox" xmlns="http://docs.oasis-open.org/odata/ns/edm">
      <EntityType Name="Incident">
        <Key><PropertyRef Name="RecId"/></Key>
        <Property Name="RecId" Type="Edm.String" Nullable="false"/>
        <Property Name="IncidentNumber" Type="Edm.Int32"/>
        <Property Name="Subject" Type="Edm.String"/>
        <Property Name="Status" Type="Edm.String"/>
      </EntityType>
      <EntityContainer Name="Container">
        <EntitySet Name="incidents" EntityType="Ivanti.Sandbox.Incident"/>
      </EntityContainer>
    </Schema>
  </edmx:DataServices>
</edmx:Edmx>
"""


def ism_error(status: int, code: str, description: str, message: str) -> web.Response:
    body = {"code": code, "description": description, "message": [message]}
    return web.json_response(body, status=status)


def _unauthorized() -> web.Response:
    return ism_error(
        401, "ISM_4001", "Invalid session key or session timed out", "Authentication required"
    )


def _bad_request(message: str) -> web.Response:
    return ism_error(400, "ISM_4000", "Bad Request", message)


class _Tenant:
    def __init__(self, state: SandboxState, urls: SandboxUrls) -> None:
        self.state = state
        self.urls = urls

    @route("POST", "/api/rest/authentication/login")
    async def login(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        if body is None:
            return _bad_request("The request body is not a valid JSON object.")
        user = self.state.ivanti_users.get(str(body.get("username")))
        if (
            body.get("tenant") != self.state.ivanti_tenant
            or user is None
            or body.get("password") != user.password
            or body.get("role") != user.role
        ):
            usual = (
                "Unhandled system exception: Tenant Not Found or wrong Password"
                " or OpenID not Configured Properly."
            )
            return _bad_request(await rejection_text(self.state, request, usual))
        now = self.state.clock.now()
        username = str(body["username"])
        if self.state.ivanti_session_kind == "jwt":
            jwt_expiry = now + self.state.ivanti_jwt_lifetime
            claims = {"sub": username, "role": user.role, "iat": int(now), "exp": int(jwt_expiry)}
            key = sign_jwt(claims, self.state.ivanti_jwt_key)
            expires_at: float | None = jwt_expiry
        else:
            expires_at = None
            secret = random_id(32, string.ascii_uppercase + string.digits)
            key = f"{self.state.ivanti_tenant}#{secret}#2"
        self.state.ivanti_sessions[key] = IvantiSession(
            key=key, username=username, role=user.role, last_used=now, expires_at=expires_at
        )
        # The whole body is a bare JSON string, not an object, as Ivanti answers.
        return web.json_response(key)

    def _is_authorized(self, request: web.Request) -> bool:
        authorization = request.headers.get("Authorization", "").strip()
        if authorization.startswith("rest_api_key="):
            return authorization.removeprefix("rest_api_key=") in self.state.ivanti_api_keys
        if authorization.lower().startswith("bearer "):
            token = authorization[len("bearer ") :].strip()
            if read_jwt(token, self.state.ivanti_jwt_key) is None:
                return False
            return self.state.use_ivanti_session(token) is not None
        # A raw session key; a JWT sent without "Bearer" is not accepted.
        return "#" in authorization and self.state.use_ivanti_session(authorization) is not None

    @route("GET", "/api/odata/businessobject/{target}")
    async def business_object(self, request: web.Request) -> web.Response:
        if not self._is_authorized(request):
            return _unauthorized()
        target = _RECORD_TARGET.fullmatch(request.match_info["target"])
        objects = target.group("objects").lower() if target else ""
        if target is None or objects not in _KNOWN_OBJECTS:
            return ism_error(404, "ISM_4004", "Not Found", "Invalid path or business object.")
        # Like the tenant, answer with absolute links to itself (under /HEAT if asked so).
        odata = self.urls.ivanti + _prefix_of(request) + "/api/odata"
        collection = f"{odata}/businessobject/{objects}"
        rec_id = target.group("rec_id")
        if rec_id is not None:
            record = self.state.ivanti_incidents.get(rec_id)
            if record is None:
                return _bad_request(f"Invalid key {rec_id!r}.")
            return web.json_response(
                {
                    "@odata.context": f"{odata}/$metadata#{objects}/$entity",
                    "@odata.id": f"{collection}('{rec_id}')",
                    **record,
                }
            )
        paging = {name: request.query.get(name) for name in ("$top", "$skip")}
        for name, value in paging.items():
            if value is not None and not (value.isascii() and value.isdigit()):
                return _bad_request(f"{name} must be a non-negative integer.")
        rows: list[dict[str, Any]] = list(self.state.ivanti_incidents.values())
        skip = int(paging["$skip"] or 0)
        top = None if paging["$top"] is None else int(paging["$top"])
        end = len(rows) if top is None else skip + top
        page = [{"@odata.id": f"{collection}('{row['RecId']}')", **row} for row in rows[skip:end]]
        body: dict[str, Any] = {
            "@odata.context": f"{odata}/$metadata#{objects}",
            "@odata.count": len(page),
            "value": page,
            "rawQuery": request.rel_url.raw_query_string,
        }
        if top and end < len(rows):  # $top=0 would link to itself
            next_page = URL(collection).with_query({**request.query, "$skip": str(end)})
            body["@odata.nextLink"] = str(next_page)
        return web.json_response(body)

    @route("GET", "/api/odata/$metadata")
    async def metadata(self, request: web.Request) -> web.Response:
        if not self._is_authorized(request):
            return _unauthorized()
        return web.Response(text=_METADATA, content_type="application/xml", charset="utf-8")


def _prefix_of(request: web.Request) -> str:
    return next((p for p in _PREFIXES if p and request.path.startswith(p + "/")), "")


def build_ivanti_app(state: SandboxState, urls: SandboxUrls) -> web.Application:
    app = web.Application(
        middlewares=[
            journal_middleware(
                state,
                "ivanti",
                lambda r: (
                    "ivanti-login" if r.path.endswith("/api/rest/authentication/login") else None
                ),
            )
        ]
    )
    add_handlers(app, _Tenant(state, urls), prefixes=_PREFIXES)
    return app

"""Session ids and keys a client puts in a query string are masked in every log line.

A client may pass an ``icSessionId`` (or a token, a key) as a query parameter; the proxy
forwards it untouched, but a debug log of the upstream URL must not show it. Parameter
names match the secret header and field names whatever their case or separators.
"""

from __future__ import annotations

from urllib.parse import urlencode

import aiohttp
import pytest
from helpers import Upstream, base

from proxy.core.masking import MASK

SECRET_PARAMS = (
    "icSessionId",
    "ic_session_id",
    "INFA-SESSION-ID",
    "ids-session-id",
    "jwt",
    "sid",
    "key",
    "access_token",
    "sessionId",
    "apiKey",
)


@pytest.mark.parametrize("name", SECRET_PARAMS)
async def test_a_secret_query_parameter_is_masked_in_the_debug_log(
    name: str, upstream: Upstream, make_proxy, http: aiohttp.ClientSession, logs
) -> None:
    marker = f"Mk9query{name.replace('-', '').replace('_', '')}4e"
    server = await make_proxy(routes=[upstream.route()], log={"level": "debug"})
    query = urlencode({name: marker, "x": "1"})
    async with http.get(base(server, f"/up/items?{query}")) as resp:
        assert resp.status == 200
        assert (await resp.json())["path"] == f"/items?{query}"  # forwarded untouched
    await server.stop(drain_timeout=1)

    (logged,) = [e for e in logs.events("upstream_request")]
    assert marker not in logs.text
    assert logged["url"].endswith(f"/items?{name}={MASK}&x=1")


def test_the_query_masking_keeps_other_parameters_and_plain_text() -> None:
    from proxy.ops.logs import Redactor

    text = Redactor().text
    assert text("/p?a=1&ICSESSIONID=s1&b=2&Ids_Session_Id=s2") == (
        f"/p?a=1&ICSESSIONID={MASK}&b=2&Ids_Session_Id={MASK}"
    )
    assert (
        text("/p?keyword=k&monkey=m&sidebar=s&code=c")
        == f"/p?keyword=k&monkey=m&sidebar=s&code={MASK}"
    )
    assert text("a note with key=value outside a query") == "a note with key=value outside a query"

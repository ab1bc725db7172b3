"""Vendor behaviour the sandbox imitates for vendor-aware forwarding: rate limits, the
org's session timeout (validSessionId), several v3 products, and OData links."""

from __future__ import annotations

import email.utils
import math
from typing import Any

import aiohttp
import pytest
from helpers import DEMO, fetch, sandbox_v2_login, status_of

from proxy.sandbox import RateLimit, Sandbox

API_KEY = {"Authorization": "rest_api_key=demo-api-key"}
# A quarter past a whole second: Retry-After dates round up, the rest stays exact.
CLOCK_START = 1_750_000_000.25


# --------------------------------------------------------------------------- rate limits


async def test_refuse_next_throttles_that_many_requests_then_lets_them_through(sandbox, http):
    limit = RateLimit(refuse_next=2, retry_after=3)
    sandbox.state.rate_limits["ivanti"] = limit
    url = sandbox.urls.ivanti + "/api/odata/businessobject/incidents"
    answers = [await fetch(http, "GET", url, headers=API_KEY) for _ in range(3)]
    assert [status for status, _, _ in answers] == [429, 429, 200]
    _, body, headers = answers[0]
    assert headers["Retry-After"] == "3"
    assert body["error"]["code"] == "RATE_LIMITED"
    assert "Retry-After" not in answers[2].headers
    assert limit.refused == 2 and limit.refuse_next == 0
    assert len(sandbox.state.requests_for("ivanti")) == 3  # every attempt reached the vendor


async def test_the_token_bucket_runs_on_the_sandbox_clock(sandbox, http, clock):
    limit = RateLimit(requests=2, per=60)
    sandbox.state.rate_limits["iics-pod"] = limit
    session = {"icSessionId": await sandbox_v2_login(http, sandbox)}
    url = sandbox.urls.pod + "/saas/api/v2/agent"
    assert [await status_of(http, url, headers=session) for _ in range(2)] == [200, 200]
    status, _, headers = await fetch(http, "GET", url, headers=session)
    assert (status, headers["Retry-After"]) == (429, "30")  # a token every 30 s
    clock.advance(29.5)
    status, _, headers = await fetch(http, "GET", url, headers=session)
    assert (status, headers["Retry-After"]) == (429, "1")  # rounded up, never 0
    clock.advance(0.5)
    assert await status_of(http, url, headers=session) == 200
    assert await status_of(http, url, headers=session) == 429
    clock.advance(600)  # the bucket holds at most 2
    assert [await status_of(http, url, headers=session) for _ in range(3)] == [
        200,
        200,
        429,
    ]
    assert limit.refused == 4


async def test_503_with_an_http_date(sandbox, http, clock):
    sandbox.state.rate_limits["ivanti"] = RateLimit(
        refuse_next=1, status=503, retry_after=120, http_date=True
    )
    url = sandbox.urls.ivanti + "/HEAT/api/odata/businessobject/incidents"
    status, _, headers = await fetch(http, "GET", url, headers=API_KEY)
    assert status == 503
    when = email.utils.parsedate_to_datetime(headers["Retry-After"]).timestamp()
    assert when == math.ceil(clock.now() + 120)
    assert headers["Retry-After"].endswith(" GMT")


async def test_a_throttle_answer_can_leave_out_retry_after(sandbox, http):
    sandbox.state.rate_limits["ivanti"] = RateLimit(refuse_next=1, retry_after=None)
    url = sandbox.urls.ivanti + "/api/odata/businessobject/incidents"
    status, _, headers = await fetch(http, "GET", url, headers=API_KEY)
    assert status == 429 and "Retry-After" not in headers


async def test_rate_limits_are_per_app_and_spare_logins(sandbox, http):
    sandbox.state.rate_limits["ivanti"] = RateLimit(refuse_next=100)
    login = {"tenant": sandbox.state.ivanti_tenant, "role": "Admin", **DEMO}
    url = sandbox.urls.ivanti + "/api/rest/authentication/login"
    async with http.post(url, json=login) as response:
        assert response.status == 200
    session = {"icSessionId": await sandbox_v2_login(http, sandbox)}
    assert (
        await fetch(http, "GET", sandbox.urls.pod + "/saas/api/v2/agent", headers=session)
    ).status == 200


def test_a_rate_limit_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        RateLimit(requests=0)
    with pytest.raises(ValueError):
        RateLimit(per=0, requests=1)
    with pytest.raises(ValueError):
        RateLimit(status=200)


# --------------------------------------------------------------------------- validSessionId


async def valid_session(
    http: aiohttp.ClientSession, sandbox: Sandbox, session_id: str, user: str = "demo"
) -> dict[str, Any]:
    body = {"@type": "validatedToken", "userName": user, "icToken": session_id}
    url = sandbox.urls.pod + "/saas/api/v2/user/validSessionId"
    # No session header: the token is in the body.
    async with http.post(url, json=body, headers={"Accept": "application/json"}) as response:
        assert response.status == 200
        answer: dict[str, Any] = await response.json()
    return answer


async def test_valid_session_id_answers_the_org_timeout_in_minutes(sandbox, http):
    session_id = await sandbox_v2_login(http, sandbox)
    assert await valid_session(http, sandbox, session_id) == {
        "@type": "validatedToken",
        "timeUntilExpire": 30,
        "isValidToken": True,
    }
    [seen] = sandbox.state.requests_to("/saas/api/v2/user/validSessionId")
    assert seen.json()["icToken"] == session_id


async def test_a_five_minute_org_expires_sessions_after_five_idle_minutes(sandbox, http, clock):
    sandbox.state.iics_idle_timeout = 300
    session_id = await sandbox_v2_login(http, sandbox)
    minutes = []
    for step in (0, 150, 100, 49):
        clock.advance(step)
        answer = await valid_session(http, sandbox, session_id)
        assert answer["isValidToken"] is True
        minutes.append(answer["timeUntilExpire"])
    assert minutes == [5, 2, 0, 0]  # asking does not count as use
    clock.advance(1)
    assert await valid_session(http, sandbox, session_id) == {
        "@type": "validatedToken",
        "timeUntilExpire": 0,
        "isValidToken": False,
    }
    agents = sandbox.urls.pod + "/saas/api/v2/agent"
    assert await status_of(http, agents, headers={"icSessionId": session_id}) == 401


async def test_the_org_timeout_slides_with_use(sandbox, http, clock):
    sandbox.state.iics_idle_timeout = 300
    session = {"icSessionId": await sandbox_v2_login(http, sandbox)}
    url = sandbox.urls.pod + "/saas/api/v2/agent"
    for _ in range(3):
        clock.advance(299)
        assert await status_of(http, url, headers=session) == 200
    assert (await valid_session(http, sandbox, session["icSessionId"]))["timeUntilExpire"] == 5
    clock.advance(300)
    assert await status_of(http, url, headers=session) == 401


async def test_valid_session_id_for_a_jwt_session_counts_down_to_its_exp(sandbox, http, clock):
    sandbox.state.iics_users["demo"].session_kind = "jwt"
    sandbox.state.jwt_lifetime = 900
    session_id = await sandbox_v2_login(http, sandbox)
    clock.advance(200)
    answer = await valid_session(http, sandbox, session_id)
    assert answer == {"@type": "validatedToken", "timeUntilExpire": 11, "isValidToken": True}


@pytest.mark.parametrize("who", ["someone-else", "unknown-token"])
async def test_valid_session_id_refuses_other_tokens(sandbox, http, who):
    session_id = await sandbox_v2_login(http, sandbox)
    if who == "someone-else":
        answer = await valid_session(http, sandbox, session_id, user="mallory")
    else:
        answer = await valid_session(http, sandbox, "X" * 22)
    assert (answer["isValidToken"], answer["timeUntilExpire"]) == (False, 0)


async def test_valid_session_id_wants_a_user_and_a_token(sandbox, http):
    url = sandbox.urls.pod + "/saas/api/v2/user/validSessionId"
    async with http.post(url, json={"@type": "validatedToken", "userName": "demo"}) as response:
        assert response.status == 400
        assert (await response.json())["@type"] == "error"


# --------------------------------------------------------------------------- v3 products


async def v3_products(http: aiohttp.ClientSession, sandbox: Sandbox) -> list[dict[str, str]]:
    url = sandbox.urls.login + "/saas/public/core/v3/login"
    async with http.post(url, json=DEMO) as response:
        assert response.status == 200
        products: list[dict[str, str]] = (await response.json())["products"]
    return products


async def test_v3_login_lists_several_products(sandbox, http):
    api = sandbox.urls.pod + "/saas"
    assert await v3_products(http, sandbox) == [
        {"name": "Integration Cloud", "baseApiUrl": api},
        {"name": "Data Integration", "baseApiUrl": api},
    ]


async def test_v3_products_are_configurable(sandbox, http):
    sandbox.state.iics_products = {"Data Integration": "https://di.example.test/saas", "CAI": None}
    assert await v3_products(http, sandbox) == [
        {"name": "Data Integration", "baseApiUrl": "https://di.example.test/saas"},
        {"name": "CAI", "baseApiUrl": sandbox.urls.pod + "/saas"},
    ]


# --------------------------------------------------------------------------- OData links


@pytest.mark.parametrize("prefix", ["", "/HEAT"])
async def test_odata_paging_follows_absolute_next_links(sandbox, http, prefix):
    tenant = sandbox.urls.ivanti + prefix
    url: str | None = tenant + "/api/odata/businessobject/incidents?$top=2"
    pages = []
    while url is not None and len(pages) < 5:
        status, page, _ = await fetch(http, "GET", url, headers=API_KEY)
        assert status == 200
        assert page["@odata.context"] == tenant + "/api/odata/$metadata#incidents"
        pages.append(page)
        url = page.get("@odata.nextLink")
    assert [len(page["value"]) for page in pages] == [2, 1]
    assert pages[0]["@odata.nextLink"] == (
        tenant + "/api/odata/businessobject/incidents?$top=2&$skip=2"
    )
    rows = [row for page in pages for row in page["value"]]
    assert [row["RecId"] for row in rows] == list(sandbox.state.ivanti_incidents)
    for row in rows:
        assert row["@odata.id"] == (
            f"{tenant}/api/odata/businessobject/incidents('{row['RecId']}')"
        )
        status, entity, _ = await fetch(http, "GET", row["@odata.id"], headers=API_KEY)
        assert status == 200 and entity["RecId"] == row["RecId"]
        assert entity["@odata.context"] == tenant + "/api/odata/$metadata#incidents/$entity"
        assert entity["@odata.id"] == row["@odata.id"]


async def test_odata_next_links_keep_the_other_query_options(sandbox, http):
    url = sandbox.urls.ivanti + "/api/odata/businessobject/incidents?$select=Subject&$top=1"
    _, page, _ = await fetch(http, "GET", url, headers=API_KEY)
    assert page["@odata.nextLink"] == (
        sandbox.urls.ivanti + "/api/odata/businessobject/incidents?$select=Subject&$top=1&$skip=1"
    )
    _, last, _ = await fetch(http, "GET", url + "&$skip=2", headers=API_KEY)
    assert len(last["value"]) == 1 and "@odata.nextLink" not in last


@pytest.mark.parametrize(("query", "rows"), [("", 3), ("?$skip=1", 2), ("?$top=0", 0)])
async def test_odata_without_a_page_size_has_no_next_link(sandbox, http, query, rows):
    url = sandbox.urls.ivanti + "/api/odata/businessobject/incidents" + query
    _, page, _ = await fetch(http, "GET", url, headers=API_KEY)
    assert len(page["value"]) == rows and "@odata.nextLink" not in page


@pytest.mark.parametrize("query", ["$skip=-1", "$top=x", "$skip=%C2%B2"])
async def test_odata_paging_options_must_be_numbers(sandbox, http, query):
    url = sandbox.urls.ivanti + "/api/odata/businessobject/incidents?" + query
    status, body, _ = await fetch(http, "GET", url, headers=API_KEY)
    assert status == 400 and body["code"] == "ISM_4000"


@pytest.mark.parametrize("prefix", ["", "/HEAT"])
async def test_metadata_is_xml_and_needs_credentials(sandbox, http, prefix):
    url = sandbox.urls.ivanti + prefix + "/api/odata/$metadata"
    async with http.get(url) as response:
        assert response.status == 401
    async with http.get(url, headers=API_KEY) as response:
        assert response.status == 200
        assert response.content_type == "application/xml"
        text = await response.text()
    assert '<EntitySet Name="incidents"' in text

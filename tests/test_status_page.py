"""The status page at ``/-/`` (README, "Status page"), in a real headless Chromium.

The proxy runs in front of the sandbox with marker credentials; the browser loads the
page, watches it update by itself after a login, sees a rejection with the vendor's
text (which carries a ``<script>``), clears it with the page's button. The page never
shows a secret or a session id, and loads with no console error (CSP violations
included). Selenium's calls block: they run in a thread, the proxy in the test's loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
from helpers import DEMO, base, fetch, iics_route, ivanti_key_route, last_session_id
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from proxy.ops.activity import DAY_MINUTES, LoginHistory, MinuteCounts
from proxy.sandbox import Sandbox
from proxy.server.app import ProxyServer
from tools.chromium import missing, open_chromium

MARK = {
    "iics": "Mk-status-iics-password-71c2",
    "wrong": "Mk-status-wrong-password-9d04",
    "api_key": "Mk-status-ivanti-key-5e3a",
}
SCRIPT = "<script>document.title='pwned'</script>"
PAGE_WAIT = 15.0  # the page refreshes every 3 s
AGENTS = "/saas/api/v2/agent"


@pytest.fixture(scope="module")
def chromium() -> Iterator[WebDriver]:
    problem = missing()
    if problem is not None:
        pytest.fail(f"{problem}: scripts/test installs it")
    driver = open_chromium()
    yield driver
    driver.quit()


async def routed_proxy(make_proxy: Callable[..., Any], sandbox: Sandbox) -> ProxyServer:
    """Three routes: a good login, one the vendor rejects echoing a script and the
    password, an API key route with a concurrency cap."""
    state = sandbox.state
    state.iics_users["demo"].password = MARK["iics"]
    state.ivanti_api_keys = {MARK["api_key"]}
    state.rejection_echo = SCRIPT + " bad password {password}"
    server: ProxyServer = await make_proxy(
        routes=[
            iics_route(sandbox, password=MARK["iics"]),
            iics_route(sandbox, name="wrong", prefix="/wrong", password=MARK["wrong"]),
            ivanti_key_route(sandbox, api_key=MARK["api_key"], upstream={"max_concurrent": 4}),
        ]
    )
    return server


def card_state(driver: WebDriver, route: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, f'[data-route="{route}"] .state').text)


def wait_state(driver: WebDriver, route: str, prefix: str) -> None:
    WebDriverWait(driver, PAGE_WAIT).until(
        lambda d: card_state(d, route).startswith(prefix),
        message=f"{route} never showed {prefix!r}",
    )


def console_errors(driver: WebDriver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def open_page(driver: WebDriver, url: str) -> None:
    driver.get(url)
    driver.get_log("browser")  # from here on: this page's messages only
    driver.execute_script("window.loadedOnce = true")  # gone if the page reloads


def clear_route(driver: WebDriver, route: str) -> str:
    driver.find_element(By.CSS_SELECTOR, f'button[data-clear="{route}"]').click()
    notice = driver.find_element(By.ID, "notice")
    WebDriverWait(driver, PAGE_WAIT).until(lambda d: notice.text != "")
    return str(notice.text)


async def test_page_shows_logins_rejections_and_clears_them(
    chromium: WebDriver, sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await routed_proxy(make_proxy, sandbox)
    page = base(server, "/-/")
    await asyncio.to_thread(open_page, chromium, page)
    for route in ("iics", "wrong", "ivanti"):
        assert await asyncio.to_thread(card_state, chromium, route) == "no session"

    # A login happens: the page shows it on its next refresh, without reloading.
    assert (await fetch(http, "GET", base(server, "/iics" + AGENTS))).status == 200
    await asyncio.to_thread(wait_state, chromium, "iics", "active")
    card = chromium.find_element(By.CSS_SELECTOR, '[data-route="iics"]')
    assert "1 ok" in card.find_element(By.CSS_SELECTOR, '[data-f="logins_hour"]').text
    assert "1 in the last hour" in card.find_element(By.CSS_SELECTOR, '[data-f="requests"]').text

    # The vendor refuses: rejected until a time, with its message shown as text.
    refused = await fetch(http, "GET", base(server, "/wrong" + AGENTS))
    assert refused.body["error"]["code"] == "login_rejected"
    await asyncio.to_thread(wait_state, chromium, "wrong", "rejected until ")
    queue = chromium.find_element(By.CSS_SELECTOR, '[data-route="ivanti"] [data-f="queue"]')
    assert queue.text == "0 of 4 slots in use, 0 waiting"
    wrong = chromium.find_element(By.CSS_SELECTOR, '[data-route="wrong"]')
    message = wrong.find_element(By.CSS_SELECTOR, ".msg").text
    assert SCRIPT in message and "bad password" in message
    assert chromium.title == "auth-proxy status"  # the vendor's script never ran
    assert chromium.find_elements(By.CSS_SELECTOR, "main script") == []
    errors = wrong.find_element(By.CSS_SELECTOR, '[data-f="errors"]').text
    assert "login_rejected" in errors

    # The button lifts the rejection: the next request logs in again (and is refused).
    notice = await asyncio.to_thread(clear_route, chromium, "wrong")
    assert notice == "wrong: lockout cleared; the next request logs in"
    await asyncio.to_thread(wait_state, chromium, "wrong", "no session")
    logins_before = len(sandbox.state.logins)
    assert (await fetch(http, "GET", base(server, "/wrong" + AGENTS))).status == 502
    assert len(sandbox.state.logins) == logins_before + 1

    assert chromium.execute_script("return window.loadedOnce") is True  # never reloaded
    assert await asyncio.to_thread(console_errors, chromium) == []
    shown = [chromium.page_source, (await fetch(http, "GET", base(server, "/-/status.json"))).body]
    shown.append((await fetch(http, "GET", page)).body)
    secrets = [*MARK.values(), last_session_id(sandbox)]
    for text in map(str, shown):
        for secret in secrets:
            assert secret not in text


def overflow(driver: WebDriver) -> int:
    return int(
        driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
    )


async def test_page_fits_a_phone(
    chromium: WebDriver, sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await routed_proxy(make_proxy, sandbox)
    sandbox.state.rejection_echo = "x" * 300  # one long unbroken word
    await fetch(http, "GET", base(server, "/wrong" + AGENTS))
    await fetch(http, "GET", base(server, "/iics" + AGENTS))
    metrics = {"width": 360, "height": 740, "deviceScaleFactor": 2, "mobile": True}
    chromium.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        await asyncio.to_thread(open_page, chromium, base(server, "/-/"))
        await asyncio.to_thread(wait_state, chromium, "wrong", "rejected until ")
        for summary in chromium.find_elements(By.TAG_NAME, "summary"):
            summary.click()  # the attempts tables too
        assert chromium.execute_script("return window.innerWidth") == 360
        assert overflow(chromium) == 0
        assert await asyncio.to_thread(console_errors, chromium) == []
    finally:
        chromium.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


# --------------------------------------------------------------------------- without a browser


async def test_page_headers_forbid_framing_caching_and_inline_code(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await routed_proxy(make_proxy, sandbox)
    for path in ("/-/", "/-/status.json", "/-/status.js", "/-/status.css"):
        got = await fetch(http, "GET", base(server, path))
        assert got.status == 200, path
        csp = got.headers["Content-Security-Policy"]
        assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert got.headers["X-Frame-Options"] == "DENY"
        assert got.headers["Cache-Control"] == "no-store"
    html = (await fetch(http, "GET", base(server, "/-/"))).body
    assert "<script>" not in html and "style=" not in html  # nothing inline for CSP to block
    posted = await fetch(http, "POST", base(server, "/-/"), headers={"X-Auth-Proxy": "1"})
    assert posted.status == 405


async def test_vendor_script_is_escaped_in_the_first_paint(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await routed_proxy(make_proxy, sandbox)
    await fetch(http, "GET", base(server, "/wrong" + AGENTS))
    html = (await fetch(http, "GET", base(server, "/-/"))).body
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in html
    assert SCRIPT not in html


async def test_clear_from_another_site_is_refused_and_from_the_page_accepted(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await routed_proxy(make_proxy, sandbox)
    await fetch(http, "GET", base(server, "/wrong" + AGENTS))
    clear = base(server, "/-/sessions/wrong/clear")
    own = base(server)
    rebound = f"evil.example:{server.port}"
    refusals = [
        {"Origin": "http://evil.example", "X-Auth-Proxy": "1"},
        {"Origin": "http://127.0.0.1:1", "X-Auth-Proxy": "1"},  # another local service
        {"Sec-Fetch-Site": "cross-site", "X-Auth-Proxy": "1"},
        {"Origin": own},  # what a form on the page itself could send
        # A page that rebinds its name to 127.0.0.1: its own origin, but not a loopback Host.
        {"Host": rebound, "Origin": f"http://{rebound}", "X-Auth-Proxy": "1"},
    ]
    for headers in refusals:
        refused = await fetch(http, "POST", clear, headers=headers)
        assert refused.status == 403, headers
        assert card_of(await status_json(http, server), "wrong")["state"] == "rejected"
    accepted = await fetch(
        http,
        "POST",
        clear,
        headers={"Origin": own, "Sec-Fetch-Site": "same-origin", "X-Auth-Proxy": "1"},
    )
    assert accepted.status == 200 and accepted.body["lockout"] is True
    assert card_of(await status_json(http, server), "wrong")["state"] == "none"
    # Only the proxy's own endpoints: a vendor page served through a route has the same
    # origin, and still needs allowed_origins to send more than a GET.
    routed = await fetch(
        http, "POST", base(server, "/iics" + AGENTS), headers={"Origin": own, "X-Auth-Proxy": "1"}
    )
    assert routed.status == 403 and routed.body["error"]["code"] == "forbidden"


async def status_json(http: aiohttp.ClientSession, server: ProxyServer) -> dict[str, Any]:
    got = await fetch(http, "GET", base(server, "/-/status.json"))
    assert got.status == 200
    body: dict[str, Any] = got.body
    return body


def card_of(view: dict[str, Any], route: str) -> dict[str, Any]:
    return next(r for r in view["routes"] if r["name"] == route)


async def test_page_needs_the_client_token_like_the_other_admin_endpoints(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    token = "Mk-status-client-token-77aa"
    server = await make_proxy(routes=[iics_route(sandbox)], client_auth={"tokens": [token]})
    for path in ("/-/", "/-/status.json"):
        assert (await fetch(http, "GET", base(server, path))).status == 401
        auth = {"Proxy-Authorization": f"Bearer {token}"}
        assert (await fetch(http, "GET", base(server, path), headers=auth)).status == 200


async def test_json_counts_errors_by_code_and_logins_by_outcome(
    sandbox: Sandbox, make_proxy, http: aiohttp.ClientSession
) -> None:
    server = await make_proxy(
        routes=[iics_route(sandbox), iics_route(sandbox, name="b", prefix="/b")]
    )
    for _ in range(3):
        assert (await fetch(http, "GET", base(server, "/iics" + AGENTS))).status == 200
    sandbox.state.iics_users["demo"].password = "changed"
    for _ in range(2):  # one login, refused; the second request is refused at once
        assert (await fetch(http, "GET", base(server, "/b" + AGENTS))).status == 502
    view = await status_json(http, server)
    good, bad = card_of(view, "iics"), card_of(view, "b")
    assert good["traffic"]["last_hour"] == 3 and good["traffic"]["errors"] == {}
    assert good["logins"]["day"] == {"ok": 1}
    assert bad["traffic"]["errors"] == {"login_rejected": 2}
    assert bad["traffic"]["error_rate"] == 100.0
    assert bad["logins"]["hour"] == {"rejected": 1}
    [attempt] = bad["attempts"]
    assert attempt["result"] == "rejected" and attempt["code"] == "login_rejected"
    assert set(attempt) == {"at", "result", "seconds", "code"}
    assert bad["retry_at"] > view["now"]
    assert DEMO["password"] not in str(view)


# --------------------------------------------------------------------------- bounded memory


def test_minute_counts_stay_bounded_over_days() -> None:
    counts = MinuteCounts(DAY_MINUTES)
    start = 1_800_000_000.0
    for minute in range(3 * DAY_MINUTES):  # three days, one event a minute, two labels
        counts.add(start + minute * 60.0, "ok" if minute % 2 else "rejected")
    now = start + (3 * DAY_MINUTES - 1) * 60.0
    assert len(counts) == DAY_MINUTES
    assert counts.totals(now, 60) == {"ok": 30, "rejected": 30}
    assert sum(counts.totals(now, DAY_MINUTES).values()) == DAY_MINUTES
    assert counts.totals(now + 2 * DAY_MINUTES * 60.0, 60) == {}  # long quiet: nothing


def test_login_history_keeps_the_last_twenty_attempts() -> None:
    history = LoginHistory()
    now = time.time()
    for i in range(50):
        history.record(now + i, "failed", 0.5, f"code{i}")
    recent = history.recent()
    assert len(recent) == 20
    assert recent[0].code == "code49" and recent[-1].code == "code30"
    assert history.outcomes(now + 49, 60) == {"failed": 50}

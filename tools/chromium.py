"""Headless Chromium for the browser tests and the README's screenshot (README, "Status
page"): Debian's ``chromium`` driven through its own ``chromedriver`` (``chromium-driver``),
so browser and driver are always the same version and nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

CHROMIUM = "chromium"
CHROMEDRIVER = "chromedriver"


def missing() -> str | None:
    """What is not installed, or None."""
    for program in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(program) is None:
            return f"{program} is not installed (apt-get install chromium chromium-driver)"
    return None


def open_chromium(width: int = 1280, height: int = 900) -> webdriver.Chrome:
    """A headless Chromium of that window size, keeping the page's console messages."""
    options = Options()
    options.binary_location = shutil.which(CHROMIUM) or CHROMIUM
    options.add_argument("--headless=new")
    options.add_argument(f"--window-size={width},{height}")
    options.add_argument("--no-proxy-server")  # the proxy under test is on loopback
    options.add_argument("--disable-dev-shm-usage")
    options.add_argument("--disable-gpu")
    options.add_argument("--hide-scrollbars")
    if os.geteuid() == 0:  # containers and CI run as root, where the sandbox cannot start
        options.add_argument("--no-sandbox")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=shutil.which(CHROMEDRIVER) or CHROMEDRIVER)
    return webdriver.Chrome(options=options, service=service)

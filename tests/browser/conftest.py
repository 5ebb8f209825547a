"""The portal in a real browser (issue 16): Debian's Chromium driven by Selenium through Debian's
chromedriver (no browser download), against the five processes on the real stack.

One browser for the whole session and one deployment per module keep the added time small.
Every page a journey opens is screenshotted into ``.ci/artifacts/screenshots/`` (CI output,
git-ignored) and checked with axe-core (injected from tools/axe/node_modules, no CDN): no
serious or critical violation.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.journeys import SERVICES, Journey
from tests.support import (
    REPO,
    Backing,
    Deployment,
    MailCatcher,
    ServiceProcess,
    deployment,
    wait_for,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
AXE = REPO / "tools" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = REPO / ".ci" / "artifacts" / "screenshots"


@pytest.fixture(scope="session")
def browser() -> Iterator[WebDriver]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Debian's chromium and chromium-driver are missing (scripts/bootstrap)")
    if not AXE.exists():
        pytest.skip("axe-core is missing (scripts/bootstrap: npm install in tools/axe)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,900")
    options.add_argument("--lang=en-GB")
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)  # this run's pages only
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
async def portal_platform(
    backing: Backing, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Deployment]:
    logs = tmp_path_factory.mktemp("portal-logs")
    async with deployment(backing, (*SERVICES, "portal")) as dep:
        dep.extra_env["PLATFORM_TEST_CLOCKS_ENABLED"] = "true"
        dep.extra_env["PLATFORM_TIMER_POLL_SECONDS"] = "0.2"
        processes = [ServiceProcess(dep, s, logs) for s in (*SERVICES, "portal")]
        for process in processes:
            process.start()
        try:
            for process in processes:
                await process.wait_ready()
            yield dep
        finally:
            for process in processes:
                process.stop()
            shutil.copytree(logs, SCREENSHOTS.parent / "portal-logs", dirs_exist_ok=True)


class Pages:
    """The browser on the portal: open a page, check it (axe) and keep a screenshot of it."""

    def __init__(self, driver: WebDriver, dep: Deployment, mail: MailCatcher, test: str) -> None:
        self.driver = driver
        self.base = dep.url("portal")
        self.mail = mail
        self.test = test
        self.shots = 0
        driver.delete_all_cookies()
        driver.get(self.base + "/health")  # cookies belong to the portal's origin
        driver.delete_all_cookies()

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def text(self) -> str:
        """The main element's text, read in one script (a page being replaced meanwhile gives
        its old or new text, never a node reference that is gone by the time it is read)."""
        text = self.driver.execute_script(
            "const main = document.querySelector('main'); return main ? main.innerText : '';"
        )
        return str(text or "")

    def heading(self) -> str:
        """The page's h1 ("" while a page is still being replaced)."""
        try:
            return str(self.driver.find_element(By.TAG_NAME, "h1").text)
        except WebDriverException:
            return ""

    def fill(self, field_id: str, value: str) -> None:
        element = self.driver.find_element(By.ID, field_id)
        element.clear()
        element.send_keys(value)

    def press(self, css: str) -> None:
        self.driver.find_element(By.CSS_SELECTOR, css).click()

    def keys(self, text: str) -> None:
        ActionChains(self.driver).send_keys(text).perform()

    def focused(self) -> str:
        return str(self.driver.execute_script("return document.activeElement.id"))

    def tab_to(self, element_id: str, most: int = 30) -> None:
        """Move the focus with Tab until it reaches the element (the focus order reaches it)."""
        for _ in range(most):
            if self.focused() == element_id:
                return
            self.keys(Keys.TAB)
        raise AssertionError(f"Tab never reached #{element_id} (at #{self.focused()})")

    def fits_a_phone(self, name: str) -> None:
        """At 390 CSS pixels wide nothing scrolls sideways (tables scroll in their own box)."""
        self.driver.set_window_size(390, 844)
        try:
            self.driver.refresh()
            wide = self.driver.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            culprits = self.driver.execute_script(
                "const w = document.documentElement.clientWidth;"
                "return [...document.querySelectorAll('body *')]"
                ".filter(e => e.getBoundingClientRect().right > w + 1 && !e.closest('.table-wrap'))"
                ".map(e => e.tagName + '.' + e.className).slice(0, 8);"
            )
            assert wide <= 0, f"{name}: {wide} px wider than a phone: {culprits}"
            self.checked(f"{name}-phone")
        finally:
            self.driver.set_window_size(1280, 900)

    def until(self, what: str, condition: Any, timeout: float = 30) -> Any:
        # A condition read while the next page replaces this one meets stale elements: read again.
        ignored = (NoSuchElementException, StaleElementReferenceException)
        wait = WebDriverWait(self.driver, timeout, poll_frequency=0.1, ignored_exceptions=ignored)
        return wait.until(condition, what)

    def checked(self, name: str) -> dict[str, Any]:
        """Screenshot the page and run axe-core on it: no serious or critical violations."""
        self.shots += 1
        self.driver.save_screenshot(str(SCREENSHOTS / f"{self.test}-{self.shots:02d}-{name}.png"))
        self.driver.execute_script(AXE.read_text())
        result: dict[str, Any] = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']})"
            ".then(r => done(r), e => done({error: String(e)}));"
        )
        assert "error" not in result, result
        serious = [
            {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]]}
            for v in result["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        assert serious == [], f"{name}: {json.dumps(serious, indent=1)}"
        return result

    def links(self, mail: dict[str, Any]) -> list[str]:
        return [w for w in str(mail["text"]).split() if w.startswith(self.base + "/sign-in/")]

    async def sign_in(
        self, email: str, start: str = "/sign-in", lands_on: str = "/subscriptions"
    ) -> str:
        """Ask for a link, read it from the mail catcher, use it; returns the link. ``start``:
        the page opened first (a signed-out page sends the browser to sign-in); ``lands_on``:
        where using the link leads."""
        seen = {link for mail in await self.mail.to(email) for link in self.links(mail)}
        self.open(start)  # by keyboard only: the address field has the focus
        self.until("the sign-in page", lambda d: "/sign-in" in d.current_url)
        self.keys(email + Keys.ENTER)
        self.until("the link-sent page", lambda d: self.heading() == "Check your mail")

        async def mailed() -> str | None:
            new = [k for m in await self.mail.to(email) for k in self.links(m) if k not in seen]
            return new[-1] if new else None

        link = await wait_for(mailed, timeout=60, what=f"a sign-in link mailed to {email}")
        self.driver.get(link)
        self.tab_to("use-link")
        self.keys(Keys.ENTER)
        self.until(f"the page {lands_on}", lambda d: d.current_url == self.base + lands_on)
        return link


@pytest.fixture
async def pages(
    browser: WebDriver,
    portal_platform: Deployment,
    backing: Backing,
    request: pytest.FixtureRequest,
) -> Pages:
    return Pages(browser, portal_platform, MailCatcher(backing), request.node.name)


@pytest.fixture
async def journey(portal_platform: Deployment, backing: Backing) -> AsyncIterator[Journey]:
    async with httpx.AsyncClient(timeout=15) as client:
        started = time.monotonic()
        yield Journey(portal_platform, backing, client)
        print(f"  journey took {time.monotonic() - started:.1f} s")

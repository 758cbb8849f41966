"""A real headless Chromium under Selenium, for the tests that look at the status page as a person's browser does.

    with chromium() as driver:                    # headless, a 1280x900 window, the console log kept
        driver.get(url)
        WebDriverWait(driver, WAIT).until(...)    # never time.sleep
        assert not csp_violations(console(driver))
        save_screenshot(driver, "status-page")    # the window, a PNG in the artifacts directory
        save_full_page(driver, path)              # the whole page, 1280 wide

A test module makes its fixture from it (one browser for the module is quick: each test's server has its own port,
so its own origin and sessionStorage):

    @pytest.fixture(scope="module")
    def driver() -> Iterator[Driver]:
        with chromium() as d:
            yield d

Chromium and chromedriver are Debian's (`apt-get install chromium chromium-driver`; .ci/run installs them). When
either is missing the test is skipped, except under CI (`CI` set), where it fails, as tests/conftest.py does for
the registry and PostgreSQL. Selenium is only ever given those two paths, so Selenium Manager never downloads one.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parent.parent.parent
ARTIFACTS_ENV = "RECONCILER_TEST_ARTIFACTS"
DEFAULT_ARTIFACTS = ROOT / "test-artifacts"
WIDTH, HEIGHT = 1280, 900
WAIT = 10.0  # seconds a WebDriverWait waits for what should happen at once: generous for a loaded CI machine
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER_NAMES = ("chromedriver",)
Driver = webdriver.Chrome  # what chromium() gives: a WebDriver with Chromium's extras (get_log, execute_cdp_cmd)
ARGUMENTS = (
    "--headless=new",
    "--no-sandbox",  # as root (CI runs as root) Chromium refuses to start sandboxed
    "--disable-dev-shm-usage",  # a container's /dev/shm is small
    "--disable-gpu",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--lang=en-GB",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
)


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def _found(names: tuple[str, ...]) -> str | None:
    return next((path for path in map(shutil.which, names) if path), None)


def binaries() -> tuple[str, str]:
    """(chromium, chromedriver) as found on PATH; skips (fails under CI) when either is missing."""
    browser, driver = _found(CHROMIUM_NAMES), _found(CHROMEDRIVER_NAMES)
    if browser is None or driver is None:
        missing = " and ".join(name for name, path in (("chromium", browser), ("chromedriver", driver)) if not path)
        _unavailable(f"{missing} not found on PATH: apt-get install -y chromium chromium-driver")
    return browser, driver


def options(browser: str, *, width: int = WIDTH, height: int = HEIGHT) -> webdriver.ChromeOptions:
    chosen = webdriver.ChromeOptions()
    chosen.binary_location = browser
    for argument in (*ARGUMENTS, f"--window-size={width},{height}"):
        chosen.add_argument(argument)
    chosen.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console messages, CSP violations among them
    return chosen


@contextlib.contextmanager
def chromium(*, width: int = WIDTH, height: int = HEIGHT) -> Iterator[Driver]:
    """A headless Chromium driven by chromedriver, quit on leaving."""
    browser, driver_path = binaries()
    try:
        driver = webdriver.Chrome(options=options(browser, width=width, height=height), service=Service(driver_path))
    except WebDriverException as exc:
        _unavailable(f"Chromium ({browser}) did not start under {driver_path}: {exc.msg}")
    try:
        driver.set_window_size(width, height)
        yield driver
    finally:
        driver.quit()


# --- what the browser said ----------------------------------------------------------------------------------------


def console(driver: Driver) -> list[dict[str, Any]]:
    """The console messages logged since the last call (each is read once): {"level", "message", "source", …}."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return entries


def csp_violations(entries: list[dict[str, Any]]) -> list[str]:
    """The messages among `entries` that say the Content-Security-Policy blocked something."""
    return [str(e["message"]) for e in entries if "content security policy" in str(e.get("message", "")).lower()]


def errors(entries: list[dict[str, Any]], *, ignore: tuple[str, ...] = ("favicon.ico",)) -> list[str]:
    """The SEVERE messages among `entries` (a script error, a refused load, …), but for those naming `ignore`."""
    return [
        str(e["message"])
        for e in entries
        if e.get("level") == "SEVERE" and not any(word in str(e.get("message", "")) for word in ignore)
    ]


# --- pictures -------------------------------------------------------------------------------------------------------


def artifacts() -> Path:
    """The directory a test's pictures go to: $RECONCILER_TEST_ARTIFACTS, else <repo>/test-artifacts/ (made)."""
    directory = Path(os.environ.get(ARTIFACTS_ENV) or DEFAULT_ARTIFACTS)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def save_screenshot(driver: Driver, name: str) -> Path:
    """The window as it is now, as <artifacts>/<name>.png; returns that path."""
    path = artifacts() / f"{Path(name).name.removesuffix('.png')}.png"
    path.write_bytes(driver.get_screenshot_as_png())
    return path


def save_full_page(driver: Driver, path: Path, *, width: int = WIDTH) -> Path:
    """The whole page, `width` CSS pixels wide and as tall as its content (not just the window), as a PNG at `path`.

    Chromium's DevTools protocol lays the page out at that size for the one capture, then puts the window back."""
    height = int(driver.execute_script("return Math.ceil(document.documentElement.scrollHeight)"))
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        height = int(driver.execute_script("return Math.ceil(document.documentElement.scrollHeight)"))
        clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True}
        )
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path

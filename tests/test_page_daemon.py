"""The status page of a running daemon (`reconciler run`, a real process), in a real headless Chromium: the states it
shows are those of `status --json`; a person clicks Approve, gives the API token, and the daemon launches the action
(once); the page says who approved it. A screenshot of each step is saved as a test artifact.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.fakes.awx import FakeAwx
from tests.support import browser
from tests.support.browser import Driver
from tests.support.daemon import API_TOKEN, AWX_TOKEN, Daemon, configure, repo_of, wait_until
from tests.support.registry import LocalRegistry, push_schema2


@pytest.fixture
def awx() -> Iterator[FakeAwx]:
    with FakeAwx(token=AWX_TOKEN) as fake:
        fake.add_template("Staging Fragalysis Stack")
        yield fake


@pytest.fixture
def driver() -> Iterator[Driver]:
    with browser.chromium() as d:
        yield d


def _status_json(d: Daemon) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "--config", str(d.config), "status", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return {w["name"]: w for w in json.loads(done.stdout)["watches"]}


def _shown_states(driver: Driver) -> dict[str, str]:
    rows = driver.find_elements(By.CSS_SELECTOR, "tr.watch")
    return {str(r.get_attribute("data-watch")): r.find_element(By.CSS_SELECTOR, "td.state").text for r in rows}


def _open(driver: Driver, d: Daemon) -> None:
    driver.get(f"http://127.0.0.1:{d.port}/")
    WebDriverWait(driver, browser.WAIT).until(
        lambda dr: dr.execute_script("return document.documentElement.dataset.script") == "ready"
    )


def test_a_person_approves_from_the_page_of_a_running_daemon(
    tmp_path: Path, registry: LocalRegistry, awx: FakeAwx, driver: Driver
) -> None:
    d = configure(tmp_path, registry, awx)
    d.config.write_text(d.config.read_text().replace('name = "staging"\n', 'name = "staging"\napprove = true\n', 1))
    first = push_schema2(registry.base, repo_of(d), "latest", label="one")
    push_schema2(registry.base, f"{repo_of(d)}-frontend", "latest", label="front")
    d.start()
    try:
        wait_until("the baseline", lambda: (d.status().get("deployed") or {}).get("digest") == first)
        second = push_schema2(registry.base, repo_of(d), "latest", label="two")
        wait_until("the approval to be asked", lambda: d.status().get("state") == "awaiting_approval")

        _open(driver, d)
        known = _status_json(d)
        shown = _shown_states(driver)
        assert set(shown) == set(known) == {"staging", "frontend"}
        for name, watch in known.items():  # the word shown is the state `status --json` gives
            assert shown[name].replace(" ", "_") == watch["state"], (name, shown[name], watch["state"])
        assert known["staging"]["state"] == "awaiting_approval"
        [waiting] = driver.find_elements(By.CSS_SELECTOR, "li.approval")
        assert waiting.get_attribute("data-digest") == second
        assert browser.csp_violations(browser.console(driver)) == []
        browser.save_screenshot(driver, "daemon-page-awaiting-approval")
        assert awx.launches == []

        approve = driver.find_element(By.CSS_SELECTOR, 'button[data-action="approve"][data-watch="staging"]')
        approve.click()
        for answer in (API_TOKEN, "alice"):  # the token, then the name recorded with the approval
            prompt = WebDriverWait(driver, browser.WAIT).until(ec.alert_is_present())
            prompt.send_keys(answer)
            prompt.accept()
        wait_until("the launch", lambda: len(awx.launches) == 1, timeout=15)
        wait_until("the roll-out", lambda: (d.status().get("deployed") or {}).get("digest") == second)
        WebDriverWait(driver, browser.WAIT).until(ec.staleness_of(approve))  # the page reloads after the approval

        _open(driver, d)  # as a person coming back to it
        shown = _shown_states(driver)
        assert shown["staging"] == "in sync" and _status_json(d)["staging"]["state"] == "in_sync"
        row = driver.find_element(By.CSS_SELECTOR, 'tr.watch[data-watch="staging"]')
        assert "approved by alice" in row.text
        assert driver.find_elements(By.CSS_SELECTOR, "li.approval") == []
        assert "Nothing waits for approval." in driver.find_element(By.TAG_NAME, "body").text
        browser.save_screenshot(driver, "daemon-page-approved")
        assert browser.errors(browser.console(driver)) == []
        [(_, extra)] = awx.launches
        assert extra["stack_image_tag"] == "latest"
        driver.get("about:blank")  # let go of the daemon's connections before it stops
    finally:
        if d.proc and d.proc.poll() is None:
            d.stop(signal.SIGKILL)

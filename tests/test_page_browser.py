"""The status page in a real headless Chromium (tests/support/browser.py), served as the daemon serves it.

`PageServer` is a stand-in for the daemon's listener, in-process (wsgiref) on 127.0.0.1: `GET /` is
`page.render(document)` under the `page.CSP` header, `GET /static/<name>` is `page.asset(name)`, and `POST /approve`
and `POST /reject` are recorded (method, query, Authorization header) and answered as the test scripts (200
`{"ok": true}` unless told otherwise). Each test has its own server, so its own origin: the browser's
sessionStorage (where page.js keeps the token) starts empty in every test.

The whole-page picture goes to the test artifacts; it replaces docs/status-page.png only with
RECONCILER_WRITE_SCREENSHOT=1, so the suite never rewrites docs/:
    RECONCILER_WRITE_SCREENSHOT=1 .venv/bin/python -m pytest tests/test_page_browser.py -k docs
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from selenium.webdriver.common.alert import Alert
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.wait import WebDriverWait

from reconciler import page
from tests.support import browser
from tests.support.browser import WAIT, Driver, chromium

ROOT = Path(__file__).resolve().parent.parent
DOCS_SCREENSHOT = ROOT / "docs" / "status-page.png"
NOW = "2026-11-27T09:00:00Z"
TOKEN = "s3cret-token"
PNG = b"\x89PNG\r\n\x1a\n"


def digest(seed: str) -> str:
    """A real-looking sha256 digest, the same for the same seed."""
    import hashlib

    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


# --- the daemon's listener, played in-process -------------------------------------------------------------------


@dataclass(frozen=True)
class Posted:
    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None


@dataclass
class PageServer:
    """`GET /`, `GET /static/…`, `POST /approve`, `POST /reject` on 127.0.0.1, a port of its own; see the module
    docstring. `answers` is consumed one per POST; an empty list answers 200 `{"ok": true}`."""

    document: dict[str, Any]
    answers: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    posts: list[Posted] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self._changed = threading.Condition()
        self._server = make_server("127.0.0.1", 0, self, server_class=_Server, handler_class=_Quiet)
        serve = self._server.serve_forever
        self._thread = threading.Thread(target=serve, args=(0.05,), name="page-server", daemon=True)

    def __enter__(self) -> PageServer:
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_port}/"
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=WAIT)

    def __call__(self, environ: Mapping[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        status, headers, body = self._answer(environ)
        start_response(status, [*headers, ("Content-Length", str(len(body))), ("Cache-Control", "no-store")])
        return [body]

    def _answer(self, environ: Mapping[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        if method == "GET" and path == "/":
            html = [("Content-Type", "text/html; charset=utf-8"), ("Content-Security-Policy", page.CSP)]
            return "200 OK", html, page.render(self.document)
        if method == "GET" and path.startswith("/static/"):
            found = page.asset(path.removeprefix("/static/"))
            if found is not None:
                return "200 OK", [("Content-Type", found[0])], found[1]
        if method == "POST" and path in ("/approve", "/reject"):
            return self._decide(environ, method, path)
        return "404 Not Found", [("Content-Type", "text/plain")], b"not found"

    def _decide(self, environ: Mapping[str, Any], method: str, path: str) -> tuple[str, list[tuple[str, str]], bytes]:
        got = Posted(method, path, parse_qs(environ.get("QUERY_STRING", "")), environ.get("HTTP_AUTHORIZATION"))
        with self._changed:
            self.posts.append(got)
            status, body = self.answers.pop(0) if self.answers else (200, {"ok": True})
            self._changed.notify_all()
        reason = {200: "OK", 401: "Unauthorized", 403: "Forbidden", 409: "Conflict"}.get(status, "Error")
        return f"{status} {reason}", [("Content-Type", "application/json")], json.dumps(body).encode()

    def posted(self, count: int) -> bool:
        with self._changed:
            return len(self.posts) >= count


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    """HTTP/1.0, one request a connection (wsgiref's way): nothing is left open when the server stops."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


# --- documents --------------------------------------------------------------------------------------------------


def realistic_document(*, can_approve: bool = True, standby: bool = False) -> dict[str, Any]:
    """The Fragalysis deployment on an ordinary morning: staging in sync, production waiting for approval, the
    frontend's build running on GitHub, the backend's registry answering 503, a media loader failing on AWX."""
    awx = "https://awx.example.org/#/jobs/playbook"
    gh = "https://github.com/xchem/fragalysis-stack/actions/runs"
    stack, frontend, backend = (
        "docker.io/xchem/fragalysis-stack",
        "xchem/fragalysis-frontend",
        "xchem/fragalysis-backend",
    )
    d = {name: digest(name) for name in ("2026.08.3", "2026.08.4", "latest-1", "latest-2", "fe-1", "fe-2", "be-1")}

    def action(id_: int, kind: str, status: str, tag: str, at: str, ref: str | None, **more: Any) -> dict[str, Any]:
        return {
            "id": id_, "kind": kind, "status": status, "tag": tag, "digest": d.get(tag) or d["latest-2"],
            "attempt": more.pop("attempt", 1), "started_at": at, "finished_at": more.pop("finished_at", at), "ref": ref,
            "detail": None, "failure": None, "next_attempt_at": None, "approval": None, **more,
        }  # fmt: skip

    waiting = action(14, "awx", "awaiting_approval", "2026.08.4", "2026-11-27T08:50:00Z", None, finished_at=None)
    waiting["approval"] = {"state": "waiting", "by": None, "at": None}
    staging_done = action(13, "awx", "succeeded", "latest", "2026-11-27T08:20:00Z", f"{awx}/4242")
    staging_done["digest"] = d["latest-2"]
    build = action(15, "github", "launched", "latest", "2026-11-27T08:57:40Z", f"{gh}/9876543210", finished_at=None)
    build["digest"] = d["fe-2"]
    loader_failed = action(
        11, "awx", "failed", "2026.08.1", "2026-11-27T07:40:00Z", f"{awx}/4237", attempt=2,
        detail="job 4237 failed: the playbook exited 2 (task 'load media' on mediaserver-01)", failure="job_failed",
        next_attempt_at="2026-11-27T09:10:00Z",
    )  # fmt: skip

    watches = [
        _watch("stack-staging", stack, "tag:latest", "in_sync", ("latest", d["latest-2"], "2026-11-27T08:05:00Z"),
               ("latest", d["latest-2"], "2026-11-27T08:24:10Z"), staging_done,
               "awx production: Staging Fragalysis Stack"),
        _watch("stack-production", stack, "tags:release", "awaiting_approval",
               ("2026.08.4", d["2026.08.4"], "2026-11-27T08:40:00Z"),
               ("2026.08.3", d["2026.08.3"], "2026-11-12T14:02:00Z"), waiting,
               "awx production: Production Fragalysis Stack"),
        _watch("frontend", frontend, "tag:latest", "deploying", ("latest", d["fe-2"], "2026-11-27T08:51:00Z"),
               ("latest", d["fe-1"], "2026-11-26T16:30:00Z"), build,
               "github default: xchem/fragalysis-stack workflow 'build main' on master"),
        _watch("backend", backend, "tag:latest", "error", ("latest", d["be-1"], "2026-11-25T10:00:00Z"),
               ("latest", d["be-1"], "2026-11-25T10:12:00Z"), None,
               "github default: xchem/fragalysis-stack workflow 'build main' on master",
               last_error="registry docker.io answered 503 Service Unavailable for xchem/fragalysis-backend:latest "
                          "(3 tries in 40s); will ask again at the next pass"),
        _watch("media-loader", "docker.io/xchem/fragalysis-loader", "tags:release", "failed",
               ("2026.08.1", digest("loader-2"), "2026-11-27T07:30:00Z"), ("2026.07.9", digest("loader-1"),
               "2026-10-30T11:00:00Z"), loader_failed, "awx production: Load Fragalysis Media"),
    ]  # fmt: skip
    events = [
        {"at": "2026-11-27T08:57:40Z", "watch": "frontend", "type": "action", "action": build, "tag": "latest",
         "digest": d["fe-2"]},
        _observation("2026-11-27T08:56:00Z", "frontend", "drift", "latest", d["fe-2"], "observed a new digest"),
        _observation("2026-11-27T08:55:10Z", "backend", "error", "latest", None, None,
                     error="registry docker.io answered 503 Service Unavailable"),
        {"at": "2026-11-27T08:50:00Z", "watch": "stack-production", "type": "action", "action": waiting,
         "tag": "2026.08.4", "digest": d["2026.08.4"]},
        _observation("2026-11-27T08:50:00Z", "stack-production", "awaiting_approval", "2026.08.4", d["2026.08.4"],
                     "2026.08.4 is newer than the deployed 2026.08.3; production waits for a person"),
        _observation("2026-11-27T08:40:00Z", "stack-production", "settling", "2026.08.4", d["2026.08.4"],
                     "new, seen unchanged for 0s of 10m"),
        {"at": "2026-11-27T08:24:10Z", "watch": "stack-staging", "type": "action", "action": staging_done,
         "tag": "latest", "digest": d["latest-2"]},
        _observation("2026-11-27T08:20:00Z", "stack-staging", "drift", "latest", d["latest-2"],
                     "observed a new digest behind latest"),
        {"at": "2026-11-27T07:48:00Z", "watch": "media-loader", "type": "action", "action": loader_failed,
         "tag": "2026.08.1", "digest": digest("loader-2")},
        _observation("2026-11-27T07:30:00Z", "media-loader", "drift", "2026.08.1", digest("loader-2"),
                     "2026.08.1 is newer than the deployed 2026.07.9"),
    ]  # fmt: skip
    approvals = [
        {"watch": "stack-production", "action_id": 14, "tag": "2026.08.4", "digest": d["2026.08.4"],
         "since": "2026-11-27T08:50:00Z", "deploys_via": "awx production: Production Fragalysis Stack",
         "environment": "PRODUCTION"},
    ]  # fmt: skip
    return {
        "status": {"generated_at": NOW, "watches": watches, "notifications": {}},
        "history": {"events": events},
        "approvals": approvals,
        "standby": standby,
        "can_approve": can_approve,
    }


def _watch(
    name: str,
    image: str,
    selector: str,
    state: str,
    observed: tuple[str, str, str],
    deployed: tuple[str, str, str],
    last_action: dict[str, Any] | None,
    deploys_via: str,
    last_error: str | None = None,
) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "selector": selector,
        "state": state,
        "observed": {
            "tag": observed[0],
            "digest": observed[1],
            "since": observed[2],
            "checked_at": "2026-11-27T08:58:30Z",
        },
        "deployed": {"tag": deployed[0], "digest": deployed[1], "at": deployed[2]},
        "checked_at": "2026-11-27T08:58:30Z",
        "last_error": last_error,
        "last_action": last_action,
        "approval": (last_action or {}).get("approval"),
        "deploys_via": deploys_via,
        "cannot_act": None,
        "running": None,
    }


def _observation(
    at: str, watch: str, verdict: str, tag: str, digest_: str | None, reason: str | None, error: str | None = None
) -> dict[str, Any]:
    return {
        "at": at,
        "watch": watch,
        "type": "observation",
        "verdict": verdict,
        "tag": tag,
        "digest": digest_,
        "error": error,
        "reason": reason,
    }


def one_approval(name: str = "stack-production", *, can_approve: bool = True) -> dict[str, Any]:
    doc = realistic_document(can_approve=can_approve)
    doc["approvals"][0]["watch"] = name
    return doc


# --- the browser ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def driver() -> Iterator[Driver]:
    with chromium() as d:
        yield d


def wait(driver: Driver) -> WebDriverWait[Driver]:
    return WebDriverWait(driver, WAIT, poll_frequency=0.05)


def open_page(driver: Driver, server: PageServer) -> None:
    driver.get(server.url)
    wait(driver).until(lambda d: d.execute_script("return document.documentElement.dataset.script") == "ready")
    browser.console(driver)  # what an earlier test's page logged is not this page's


def answer_prompt(driver: Driver, text: str) -> str:
    """Types `text` into the open window.prompt and accepts it; returns the prompt's question."""
    alert: Alert = wait(driver).until(ec.alert_is_present())
    question = alert.text
    alert.send_keys(text)
    alert.accept()
    return question


def notice(driver: Driver) -> WebElement:
    return driver.find_element(By.ID, "notice")


def button(driver: Driver, action: str, watch: str) -> WebElement:
    [found] = [
        b
        for b in driver.find_elements(By.CSS_SELECTOR, f'button[data-action="{action}"]')
        if b.get_attribute("data-watch") == watch
    ]
    return found


def alert_open(driver: Driver) -> bool:
    return bool(ec.alert_is_present()(driver))


def no_console_errors(driver: Driver) -> None:
    entries = browser.console(driver)
    assert browser.csp_violations(entries) == []
    assert browser.errors(entries) == []


# --- what the page shows ----------------------------------------------------------------------------------------


def test_the_page_shows_each_watchs_state_as_word_and_colour(driver: Driver) -> None:
    doc = realistic_document()
    with PageServer(doc) as server:
        open_page(driver, server)
        assert driver.title == "reconciler"
        rows = driver.find_elements(By.CSS_SELECTOR, "tr.watch")
        shown = {r.get_attribute("data-watch"): r.find_element(By.CSS_SELECTOR, ".state .badge").text for r in rows}
        assert shown == {
            "stack-staging": "in sync",
            "stack-production": "awaiting approval",
            "frontend": "deploying",
            "backend": "error",
            "media-loader": "failed",
        }
        # the stylesheet was let in by the CSP and applied: each state has its colour
        colours = {
            r.get_attribute("data-watch"): r.find_element(By.CSS_SELECTOR, ".state .badge").value_of_css_property(
                "background-color"
            )
            for r in rows
        }
        assert colours["stack-staging"] == "rgba(218, 251, 225, 1)"  # green
        assert colours["stack-production"] == "rgba(255, 241, 194, 1)"  # amber
        assert colours["frontend"] == "rgba(221, 244, 255, 1)"  # blue
        assert colours["backend"] == colours["media-loader"] == "rgba(255, 235, 233, 1)"  # red
        production = driver.find_element(By.CSS_SELECTOR, 'tr.watch[data-watch="stack-production"]')
        observed = production.find_element(By.CSS_SELECTOR, ".observed").text.split()
        assert observed == ["2026.08.4", doc["approvals"][0]["digest"][:19], "20m", "ago"]
        link = driver.find_element(By.CSS_SELECTOR, 'tr.watch[data-watch="stack-staging"] a.ref')
        assert link.get_attribute("href") == "https://awx.example.org/#/jobs/playbook/4242" and link.text == "AWX job"
        assert "registry docker.io answered 503" in driver.find_element(By.CSS_SELECTOR, "tr.problem").text
        assert len(driver.find_elements(By.CSS_SELECTOR, "tr.event")) == 10
        assert driver.find_element(By.CSS_SELECTOR, "li.approval .command").is_displayed()
        assert not driver.find_elements(By.CSS_SELECTOR, ".standby")
        no_console_errors(driver)
        shot = browser.save_screenshot(driver, "status-page")
        assert shot.read_bytes().startswith(PNG) and shot.parent == browser.artifacts()


def test_standby_shows_its_banner(driver: Driver) -> None:
    with PageServer(realistic_document(standby=True)) as server:
        open_page(driver, server)
        banner = driver.find_element(By.CSS_SELECTOR, ".banner.standby")
        assert banner.is_displayed() and banner.text.startswith("Standby. Another instance holds the lease")


@pytest.mark.parametrize(
    "payload", ["<script>window.__xss = 1</script>", '"><img src=x onerror="window.__xss = 2">']
)  # fmt: skip
def test_markup_from_outside_is_shown_as_text(driver: Driver, payload: str) -> None:
    doc = realistic_document()
    doc["status"]["watches"][0]["image"] = payload
    doc["status"]["watches"][0]["last_error"] = payload
    doc["approvals"][0]["tag"] = payload
    with PageServer(doc) as server:
        open_page(driver, server)
        row = driver.find_element(By.CSS_SELECTOR, 'tr.watch[data-watch="stack-staging"]')
        assert payload in row.find_element(By.CSS_SELECTOR, ".image").text
        assert payload in driver.find_element(By.CSS_SELECTOR, "tr.problem .error").text
        assert payload in driver.find_element(By.CSS_SELECTOR, "li.approval .tag").text
        assert driver.execute_script("return window.__xss") is None
        assert not alert_open(driver)
        assert driver.find_elements(By.TAG_NAME, "img") == []
        assert [s.get_attribute("src") for s in driver.find_elements(By.TAG_NAME, "script")] == [
            server.url + "static/page.js"
        ]
        no_console_errors(driver)


def test_the_csp_is_in_force_and_the_page_needs_nothing_it_forbids(driver: Driver) -> None:
    with PageServer(realistic_document()) as server:
        open_page(driver, server)
        no_console_errors(driver)  # the page as served: nothing blocked
        # and the policy is really enforced: an inline script added to the page is refused, and the refusal logged
        driver.execute_script(
            "const s = document.createElement('script'); s.textContent = 'window.__inline = 1';"
            "document.body.appendChild(s);"
        )
        assert driver.execute_script("return window.__inline") is None
        assert browser.csp_violations(browser.console(driver))


# --- the buttons ------------------------------------------------------------------------------------------------


def test_approve_asks_for_the_token_once_and_posts_it_as_a_bearer(driver: Driver) -> None:
    doc = realistic_document()
    waiting = doc["approvals"][0]
    with PageServer(doc) as server:
        open_page(driver, server)
        button(driver, "approve", "stack-production").click()
        assert "API token" in answer_prompt(driver, TOKEN)
        assert "name" in answer_prompt(driver, "alice")
        wait(driver).until(lambda d: server.posted(1))
        [got] = server.posts
        assert (got.method, got.path) == ("POST", "/approve")
        assert got.query == {
            "watch": ["stack-production"],
            "digest": [waiting["digest"]],
            "by": ["alice"],
            "action": ["14"],  # the action shown: the daemon refuses it if another now waits in its place
        }
        assert got.authorization == f"Bearer {TOKEN}"
        shown = notice(driver)
        wait(driver).until(ec.text_to_be_present_in_element((By.ID, "notice"), "Approved stack-production"))
        assert shown.get_attribute("data-tone") == "ok"
        wait(driver).until(ec.staleness_of(shown))  # then it reloads the page
        wait(driver).until(lambda d: d.execute_script("return document.documentElement.dataset.script") == "ready")
        assert driver.execute_script("return sessionStorage.getItem('reconciler-token')") == TOKEN

        # the next click reuses the token and the name: no prompt
        button(driver, "reject", "stack-production").click()
        wait(driver).until(lambda d: server.posted(2) or alert_open(d))
        assert not alert_open(driver), "asked for the token a second time"
        second = server.posts[1]
        assert second.path == "/reject" and second.authorization == f"Bearer {TOKEN}"
        assert second.query == {
            "watch": ["stack-production"],
            "digest": [waiting["digest"]],
            "by": ["alice"],
            "action": ["14"],
        }
        wait(driver).until(ec.text_to_be_present_in_element((By.ID, "notice"), "Rejected stack-production"))
        no_console_errors(driver)


def test_the_query_is_encoded_and_an_empty_name_is_left_out(driver: Driver) -> None:
    odd = "stack prod&by=mallory#x"
    with PageServer(one_approval(odd)) as server:
        open_page(driver, server)
        button(driver, "approve", odd).click()
        answer_prompt(driver, TOKEN)
        answer_prompt(driver, "")
        wait(driver).until(lambda d: server.posted(1))
        waiting = server.document["approvals"][0]
        assert server.posts[0].query == {"watch": [odd], "digest": [waiting["digest"]], "action": ["14"]}
        assert driver.execute_script("return sessionStorage.getItem('reconciler-by')") == ""


def test_a_conflict_shows_the_daemons_words(driver: Driver) -> None:
    why = "stack-production: sha256:93b1d2e4c5f6 no longer waits (superseded by sha256:0a1b2c3d4e5f)"
    with PageServer(realistic_document(), answers=[(409, {"error": why})]) as server:
        open_page(driver, server)
        button(driver, "approve", "stack-production").click()
        answer_prompt(driver, TOKEN)
        answer_prompt(driver, "bob")
        wait(driver).until(ec.text_to_be_present_in_element((By.ID, "notice"), why))
        assert notice(driver).text == f"Not approved: {why}"
        assert notice(driver).get_attribute("data-tone") == "error"
        assert button(driver, "approve", "stack-production").is_enabled()  # it can be tried again
        browser.save_screenshot(driver, "status-page-conflict")
        assert driver.execute_script("return sessionStorage.getItem('reconciler-token')") == TOKEN


def test_a_refused_token_is_forgotten_and_asked_for_again(driver: Driver) -> None:
    with PageServer(realistic_document(), answers=[(401, {"error": "unauthorized"})]) as server:
        open_page(driver, server)
        button(driver, "approve", "stack-production").click()
        answer_prompt(driver, "wrong")
        answer_prompt(driver, "carol")
        wait(driver).until(ec.text_to_be_present_in_element((By.ID, "notice"), "refused the API token"))
        assert server.posts[0].authorization == "Bearer wrong"
        assert driver.execute_script("return sessionStorage.getItem('reconciler-token')") is None
        button(driver, "approve", "stack-production").click()
        answer_prompt(driver, TOKEN)  # asked again; the name is kept
        wait(driver).until(lambda d: server.posted(2))
        assert server.posts[1].authorization == f"Bearer {TOKEN}"
        assert server.posts[1].query["by"] == ["carol"]


def test_without_a_token_on_the_daemon_the_buttons_are_off(driver: Driver) -> None:
    with PageServer(realistic_document(can_approve=False)) as server:
        open_page(driver, server)
        buttons = driver.find_elements(By.CSS_SELECTOR, "button[data-action]")
        assert len(buttons) == 2 and not any(b.is_enabled() for b in buttons)
        note = driver.find_element(By.CSS_SELECTOR, ".cannot-approve")
        assert note.is_displayed() and "[server].token_env" in note.text
        buttons[0].click()  # a disabled button does nothing: no prompt (it would be open by now), nothing sent
        assert not alert_open(driver)
        assert server.posts == []
        no_console_errors(driver)


# --- the picture for the docs -----------------------------------------------------------------------------------


def write_docs_screenshot(driver: Driver, path: Path = DOCS_SCREENSHOT) -> Path:
    """docs/status-page.png: the realistic page, 1280 CSS pixels wide, all of it."""
    with PageServer(realistic_document()) as server:
        open_page(driver, server)
        return browser.save_full_page(driver, path)


def test_the_whole_page_is_captured_for_the_docs(driver: Driver) -> None:
    """Into the test artifacts; with RECONCILER_WRITE_SCREENSHOT=1, over docs/status-page.png (never skipped)."""
    chosen = DOCS_SCREENSHOT if os.environ.get("RECONCILER_WRITE_SCREENSHOT") == "1" else None
    path = write_docs_screenshot(driver, chosen or browser.artifacts() / "status-page-full.png")
    picture = path.read_bytes()
    assert picture.startswith(PNG)
    width, height = int.from_bytes(picture[16:20], "big"), int.from_bytes(picture[20:24], "big")
    assert width == browser.WIDTH and height > browser.HEIGHT  # the whole page, taller than the window

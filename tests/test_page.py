"""The status page as HTML (reconciler/page.py, templates/page.html), without a browser: what it shows of each part
of the document, that everything from outside is escaped, that nothing in it needs an inline script or style (the
daemon's Content-Security-Policy forbids them), and that `asset` hands out its two files and nothing else.
tests/test_page_browser.py looks at the same page in a real headless Chromium."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest

from reconciler import page

NOW = "2026-11-27T09:00:00Z"
DIGEST_A = "sha256:" + "0123456789ab" + "c" * 52
DIGEST_B = "sha256:" + "fedcba987654" + "d" * 52
XSS = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')


# --- documents made by hand ---------------------------------------------------------------------------------------


def watch(name: str, state: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": name,
        "image": "docker.io/xchem/fragalysis-stack",
        "selector": "tags:release",
        "state": state,
        "observed": {"tag": "2026.08.4", "digest": DIGEST_A, "since": "2026-11-27T08:57:00Z", "checked_at": NOW},
        "deployed": {"tag": "2026.08.3", "digest": DIGEST_B, "at": "2026-11-25T09:00:00Z"},
        "checked_at": "2026-11-27T08:59:30Z",
        "last_error": None,
        "last_action": None,
        "approval": None,
        "deploys_via": "AWX job template 'deploy stack' on production",
        "cannot_act": None,
        "running": None,
    }
    return base | fields


def action(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 12,
        "kind": "awx",
        "status": "succeeded",
        "tag": "2026.08.3",
        "digest": DIGEST_B,
        "attempt": 1,
        "started_at": "2026-11-27T07:00:00Z",
        "finished_at": "2026-11-27T07:05:00Z",
        "ref": "https://awx.example.org/#/jobs/playbook/4242",
        "detail": None,
        "failure": None,
        "next_attempt_at": None,
        "approval": None,
    }
    return base | fields


def approval(name: str = "stack-production", digest: str | None = DIGEST_A, **fields: Any) -> dict[str, Any]:
    base = {
        "watch": name,
        "action_id": 14,
        "tag": "2026.08.4",
        "digest": digest,
        "since": "2026-11-27T08:50:00Z",
        "deploys_via": "AWX job template 'deploy stack' on production",
        "environment": "PRODUCTION",
    }
    return base | fields


def document(
    *watches: dict[str, Any],
    events: list[dict[str, Any]] | None = None,
    approvals: list[dict[str, Any]] | None = None,
    standby: bool = False,
    can_approve: bool = True,
) -> dict[str, Any]:
    return {
        "status": {"generated_at": NOW, "watches": list(watches), "notifications": {}},
        "history": {"events": events or []},
        "approvals": approvals or [],
        "standby": standby,
        "can_approve": can_approve,
    }


def observation(at: str, name: str = "stack-staging", **fields: Any) -> dict[str, Any]:
    base = {
        "at": at,
        "watch": name,
        "type": "observation",
        "verdict": "drift",
        "tag": "2026.08.4",
        "digest": DIGEST_A,
        "error": None,
        "reason": "observed 2026.08.4, deployed 2026.08.3",
    }
    return base | fields


def html_of(doc: Any) -> str:
    out = page.render(doc)
    assert isinstance(out, bytes)
    return out.decode("utf-8")


# --- a small reading of the HTML -----------------------------------------------------------------------------------


class Element:
    def __init__(self, tag: str, attrs: dict[str, str | None]) -> None:
        self.tag, self.attrs, self.text = tag, attrs, ""

    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())


class Reader(HTMLParser):
    """Every element with its attributes (unescaped) and the text inside it, in document order."""

    VOID = frozenset({"meta", "link", "br", "img", "input", "hr", "source", "area", "base", "col", "wbr"})

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self._open: list[Element] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs))
        self.elements.append(element)
        if tag == "br":
            self.handle_data(" ")
        if tag not in self.VOID:
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop().tag == tag:
                break

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element.text += data

    def all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list[Element]:
        return [
            e
            for e in self.elements
            if (tag is None or e.tag == tag)
            and (cls is None or cls in e.classes())
            and all(e.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def one(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> Element:
        found = self.all(tag, cls, **attrs)
        assert len(found) == 1, f"{len(found)} <{tag} class={cls} {attrs}> elements"
        return found[0]


def text_of(e: Element) -> str:
    return " ".join(e.text.split())


def row(html: str, name: str) -> Element:
    return Reader(html).one("tr", "watch", data_watch=name)


def cell(html: str, name: str, cls: str) -> str:
    """The text of one cell of a watch's row."""
    reader = Reader(html)
    start = reader.elements.index(reader.one("tr", "watch", data_watch=name))
    for e in reader.elements[start + 1 :]:
        if e.tag == "tr":
            break
        if e.tag in ("td", "th") and cls in e.classes():
            return text_of(e)
    raise AssertionError(f"no {cls} cell in {name}'s row")


# --- the watches ---------------------------------------------------------------------------------------------------

STATES = {
    "unknown": "grey",
    "in_sync": "green",
    "settling": "blue",
    "drifted": "orange",
    "deploying": "blue",
    "failed": "red",
    "error": "red",
    "awaiting_approval": "amber",
}


def test_every_state_is_shown_as_a_word_and_a_colour() -> None:
    html = html_of(document(*(watch(f"w-{state}", state) for state in STATES)))
    reader = Reader(html)
    for state, colour in STATES.items():
        [badge] = [e for e in reader.all("span", "badge") if e.attrs.get("data-value") == state]
        assert badge.classes() == {"badge", f"tone-{colour}"}
        assert text_of(badge) == state.replace("_", " ")
        assert reader.one("tr", "watch", data_watch=f"w-{state}").attrs["data-state"] == state


def test_a_state_the_page_does_not_know_is_shown_grey_with_its_word() -> None:
    reader = Reader(html_of(document(watch("odd", "paused_by_moon"))))
    badge = reader.one("span", "badge")
    assert badge.classes() == {"badge", "tone-grey"} and text_of(badge) == "paused by moon"


def test_a_watch_shows_its_name_image_selector_and_how_it_deploys() -> None:
    html = html_of(document(watch("stack-production", "in_sync")))
    text = text_of(row(html, "stack-production"))
    assert "stack-production" in text
    assert "docker.io/xchem/fragalysis-stack" in text
    assert "tags:release" in text
    assert "deploys via AWX job template 'deploy stack' on production" in text


def test_observed_and_deployed_show_tag_short_digest_and_age() -> None:
    html = html_of(document(watch("stack-production", "drifted")))
    assert cell(html, "stack-production", "observed") == "2026.08.4 sha256:0123456789ab 3m ago"
    assert cell(html, "stack-production", "deployed") == "2026.08.3 sha256:fedcba987654 2d ago"
    assert cell(html, "stack-production", "checked") == "30s ago"
    digest = Reader(html).all("code", "digest")[0]
    assert digest.attrs["title"] == DIGEST_A  # the whole digest, on hover


def test_ages_are_counted_from_the_documents_generated_at() -> None:
    doc = document(watch("w", "drifted"))
    doc["status"]["generated_at"] = "2026-11-27T10:57:00Z"  # two hours later than NOW
    assert cell(html_of(doc), "w", "observed").endswith("2h ago")


def test_a_watch_with_nothing_observed_deployed_or_done_yet() -> None:
    html = html_of(document(watch("new", "unknown", observed=None, deployed=None, checked_at=None)))
    assert cell(html, "new", "observed") == "none yet"
    assert cell(html, "new", "deployed") == "none yet"
    assert cell(html, "new", "action") == "none"
    assert cell(html, "new", "checked") == "never"


def test_an_http_ref_is_a_link_named_for_what_it_opens() -> None:
    html = html_of(document(watch("w", "in_sync", last_action=action())))
    link = Reader(html).one("a", "ref")
    assert link.attrs["href"] == "https://awx.example.org/#/jobs/playbook/4242"
    assert text_of(link) == "AWX job"
    assert cell(html, "w", "action") == "#12 AWX succeeded 1h ago AWX job"


def test_a_github_run_is_linked_too() -> None:
    ref = "https://github.com/xchem/fragalysis-frontend/actions/runs/123456"
    launched = action(kind="github", status="launched", ref=ref)
    html = html_of(document(watch("frontend", "deploying", last_action=launched)))
    link = Reader(html).one("a", "ref")
    assert link.attrs["href"] == ref and text_of(link) == "GitHub run"
    assert cell(html, "frontend", "action").startswith("#12 GitHub launched")


@pytest.mark.parametrize(
    "ref", ["4242", "javascript:alert(1)", "JAVASCRIPT:alert(1)", "data:text/html,<b>x</b>", "//evil.example/x"]
)
def test_a_ref_that_is_not_an_http_address_is_text_never_a_link(ref: str) -> None:
    html = html_of(document(watch("w", "failed", last_action=action(status="failed", ref=ref))))
    assert Reader(html).all("a") == []
    assert f"ref {ref}" in cell(html, "w", "action")


def test_a_failed_action_shows_its_detail_attempt_and_next_attempt() -> None:
    failed = action(
        status="failed",
        attempt=2,
        detail="job 4242 failed: playbook exited 2",
        failure="job_failed",
        next_attempt_at="2026-11-27T09:05:00Z",
    )
    text = cell(html_of(document(watch("w", "failed", last_action=failed))), "w", "action")
    assert "#12 AWX failed attempt 2" in text
    assert "job 4242 failed: playbook exited 2" in text
    assert "next attempt in 5m" in text


def test_a_failure_without_detail_is_named() -> None:
    failed = action(status="failed", detail=None, failure="not_launched")
    assert "failure: not launched" in cell(html_of(document(watch("w", "failed", last_action=failed))), "w", "action")


def test_an_approved_action_says_who_approved_it_and_when() -> None:
    approved = action(approval={"state": "approved", "by": "alice", "at": "2026-11-27T08:55:00Z"})
    html = html_of(document(watch("w", "deploying", last_action=approved)))
    assert "approved by alice 5m ago" in cell(html, "w", "action")


def test_the_error_is_shown_under_its_watch() -> None:
    html = html_of(document(watch("w", "error", last_error="registry answered 503 Service Unavailable")))
    problem = Reader(html).one("tr", "problem", data_watch="w")
    assert text_of(problem) == "Error: registry answered 503 Service Unavailable"
    assert Reader(html_of(document(watch("w", "in_sync")))).all("tr", "problem") == []


def test_a_watch_that_cannot_act_says_why() -> None:
    html = html_of(document(watch("w", "drifted", cannot_act="AWX_TOKEN is not set")))
    assert text_of(Reader(html).one("tr", "problem")) == "Cannot act: AWX_TOKEN is not set"


def test_no_watches() -> None:
    assert "No watches." in html_of(document())


# --- approvals -----------------------------------------------------------------------------------------------------


def test_a_waiting_approval_has_buttons_carrying_what_they_decide() -> None:
    html = html_of(document(watch("stack-production", "awaiting_approval"), approvals=[approval()]))
    reader = Reader(html)
    approve = reader.one("button", data_action="approve")
    reject = reader.one("button", data_action="reject")
    for button, verb in ((approve, "Approve"), (reject, "Reject")):
        assert button.attrs["type"] == "button"
        assert button.attrs["data-watch"] == "stack-production"
        assert button.attrs["data-digest"] == DIGEST_A
        assert button.attrs["aria-label"] == f"{verb} stack-production sha256:0123456789ab"
        assert text_of(button) == verb
        assert "disabled" not in button.attrs
    item = text_of(reader.one("li", "approval"))
    assert "stack-production PRODUCTION 2026.08.4 sha256:0123456789ab waiting since 10m ago action #14" in item
    assert "deploys via AWX job template 'deploy stack' on production" in item
    command = text_of(reader.one("p", "command"))
    assert command == f"From a shell: reconciler approve stack-production --digest {DIGEST_A}"
    assert "Nothing waits for approval." not in html
    assert reader.all("p", "cannot-approve") == []


def test_the_buttons_need_javascript_and_the_page_says_so() -> None:
    html = html_of(document(approvals=[approval()]))
    assert re.search(r"<noscript><p class=\"note\">The Approve and Reject buttons need JavaScript", html)


def test_the_command_is_quoted_for_a_shell() -> None:
    html = html_of(document(approvals=[approval(name="odd name; rm -rf ~")]))
    assert f"reconciler approve 'odd name; rm -rf ~' --digest {DIGEST_A}" in text_of(Reader(html).one("p", "command"))


def test_without_a_token_the_buttons_are_off_and_the_page_says_why() -> None:
    html = html_of(document(approvals=[approval(), approval("frontend", DIGEST_B)], can_approve=False))
    reader = Reader(html)
    buttons = reader.all("button")
    assert len(buttons) == 4 and all("disabled" in b.attrs for b in buttons)
    note = text_of(reader.one("p", "cannot-approve"))
    assert "needs the daemon's API token ([server].token_env)" in note
    assert "reconciler approve WATCH --digest … works from a shell" in note


def test_nothing_waits_for_approval() -> None:
    html = html_of(document(watch("w", "in_sync")))
    assert "Nothing waits for approval." in html
    assert Reader(html).all("button") == []


def test_an_approval_without_watch_or_digest_is_left_out() -> None:
    html = html_of(document(approvals=[approval(digest=None), {"digest": DIGEST_A}, approval("kept")]))
    assert [b.attrs["data-watch"] for b in Reader(html).all("button", data_action="approve")] == ["kept"]


# --- the standby banner, notifications, history ------------------------------------------------------------------


def test_standby_shows_a_banner() -> None:
    banner = Reader(html_of(document(standby=True))).one("p", "standby")
    assert text_of(banner).startswith("Standby. Another instance holds the lease")
    assert Reader(html_of(document(standby=False))).all("p", "standby") == []


def test_a_notification_target_that_cannot_send_or_is_behind_is_named() -> None:
    doc = document()
    doc["status"]["notifications"] = {
        "slack": {"cannot_send": "SLACK_URL is not set", "undelivered": 0},
        "teams": {"cannot_send": None, "undelivered": 3, "oldest_at": "2026-11-27T08:00:00Z", "last_error": "HTTP 502"},
        "mail": {"cannot_send": None, "undelivered": 0, "oldest_at": None, "last_error": None, "dropped": 0},
    }
    lines = [text_of(e) for e in Reader(html_of(doc)).all("p", "warning")]
    assert lines == [
        "Notifications to slack cannot be sent: SLACK_URL is not set",
        "Notifications to teams: 3 not delivered yet (oldest 1h ago): HTTP 502",
    ]


def test_history_shows_observations_and_actions_newest_first() -> None:
    events = [
        {"at": "2026-11-27T08:58:00Z", "watch": "stack-production", "type": "action", "tag": "2026.08.4",
         "digest": DIGEST_A, "action": action(id=14, status="awaiting_approval", ref=None, finished_at=None)},
        observation("2026-11-27T08:50:00Z", "stack-production"),
        observation("2026-11-27T08:40:00Z", "backend", verdict="error", error="registry answered 503", tag=None,
                    digest=None),
    ]  # fmt: skip
    reader = Reader(html_of(document(events=events)))
    texts = [text_of(r) for r in reader.all("tr", "event")]
    assert len(texts) == 3
    assert texts[0] == "2m ago stack-production action #14 AWX awaiting approval 2026.08.4 sha256:0123456789ab"
    assert texts[1] == (
        "10m ago stack-production observation drift 2026.08.4 sha256:0123456789ab "
        "observed 2026.08.4, deployed 2026.08.3"
    )
    assert texts[2] == "20m ago backend observation error registry answered 503"
    assert "error" in reader.all("td", "detail")[2].classes()


def test_history_links_an_actions_job() -> None:
    events = [{"at": NOW, "watch": "w", "type": "action", "tag": "t", "digest": DIGEST_A, "action": action()}]
    link = Reader(html_of(document(events=events))).one("a", "ref")
    assert link.attrs["href"] == "https://awx.example.org/#/jobs/playbook/4242"


def test_history_shows_at_most_50_entries() -> None:
    events = [observation(f"2026-11-27T08:{59 - i % 60:02d}:00Z", f"w{i}") for i in range(80)]
    reader = Reader(html_of(document(events=events)))
    shown = [text_of(r).split()[2] for r in reader.all("tr", "event")]
    assert shown == [f"w{i}" for i in range(page.HISTORY_LIMIT)]
    assert page.HISTORY_LIMIT == 50


def test_no_history_yet() -> None:
    assert "No history yet." in html_of(document())


# --- a document with parts missing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"status": None, "history": None, "approvals": None, "standby": None, "can_approve": None},
        {"status": {}, "history": {}},
        {"status": {"watches": [{}]}, "history": {"events": [{}]}, "approvals": [{}]},
        {"status": {"generated_at": "not a time", "watches": [{"name": "w", "observed": {"since": "yesterday"}}]}},
        {"status": {"watches": [{"name": "w", "last_action": {}, "approval": {"state": "approved"}}]}},
        {"status": {"watches": "nonsense", "notifications": ["x"]}, "history": {"events": 3}, "approvals": "x"},
        {"history": {"events": [{"type": "action", "action": None}, {"type": "action", "action": {"status": 3}}]}},
    ],
)
def test_a_document_with_parts_missing_still_renders(doc: dict[str, Any]) -> None:
    html = html_of(doc)
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    assert "<h1>reconciler</h1>" in html


def test_a_time_that_cannot_be_read_is_shown_as_it_is() -> None:
    html = html_of(document(watch("w", "drifted", observed={"tag": "t", "digest": "d", "since": "yesterday"})))
    assert cell(html, "w", "observed") == "t d yesterday"


# --- safety --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", XSS)
def test_everything_from_outside_is_escaped(payload: str) -> None:
    doc = document(
        watch(
            payload,
            "failed",
            image=payload,
            selector=payload,
            observed={"tag": payload, "digest": payload, "since": payload},
            last_error=payload,
            deploys_via=payload,
            cannot_act=payload,
            last_action=action(ref=payload, detail=payload, approval={"state": "approved", "by": payload}),
        ),
        events=[observation(NOW, payload, reason=payload, tag=payload)],
        approvals=[approval(payload, payload, tag=payload, environment=payload, deploys_via=payload)],
    )
    html = html_of(doc)
    assert payload not in html
    assert "<img" not in html and "<script>" not in html
    reader = Reader(html)
    assert [e.attrs["src"] for e in reader.all("script")] == ["/static/page.js"]
    # shown as text: the escaped text, read back, is the payload itself
    assert payload in text_of(reader.one("p", "error"))
    assert reader.one("button", data_action="approve").attrs["data-watch"] == payload


def test_no_inline_script_style_or_event_handler() -> None:
    """The daemon's Content-Security-Policy blocks them: the page must not need any."""
    doc = document(
        watch("a", "in_sync", last_action=action()),
        watch("b", "error", last_error="boom"),
        events=[observation(NOW)],
        approvals=[approval()],
        standby=True,
    )
    for html in (html_of(doc), html_of(doc | {"can_approve": False})):
        reader = Reader(html)
        scripts = reader.all("script")
        assert scripts and all(s.attrs.get("src") and not s.text.strip() for s in scripts)
        assert reader.all("style") == []
        for element in reader.elements:
            assert "style" not in element.attrs, element.tag
            assert not [name for name in element.attrs if name.startswith("on")], element.tag
            assert not (element.attrs.get("href") or "").lower().startswith("javascript:")
        assert not re.search(r"\son\w+\s*=", html)
        assert "style=" not in html


def test_the_page_refreshes_itself_and_loads_its_files_from_the_daemon() -> None:
    reader = Reader(html_of(document()))
    assert reader.one("meta", http_equiv="refresh").attrs["content"] == "30"
    assert reader.one("link", rel="stylesheet").attrs["href"] == "/static/page.css"
    script = reader.one("script")
    assert script.attrs["src"] == "/static/page.js" and "defer" in script.attrs
    assert reader.one("p", id="notice").attrs["role"] == "status"
    assert [text_of(h) for h in reader.all("h2")] == ["Watches", "Awaiting approval", "History"]
    assert text_of(reader.one("h1")) == "reconciler"
    assert text_of(reader.one("p", "generated")) == "Generated 2026-11-27 09:00:00 UTC; refreshes every 30 seconds."
    assert reader.one("time", datetime="2026-11-27T09:00:00Z")


def test_the_csp_allows_only_the_daemons_own_files() -> None:
    directives = dict(d.strip().split(" ", 1) for d in page.CSP.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'" and directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in page.CSP


# --- the static files -----------------------------------------------------------------------------------------------


def test_assets_are_the_pages_script_and_stylesheet() -> None:
    script = page.asset("page.js")
    style = page.asset("page.css")
    assert script is not None and style is not None
    assert script[0] == "text/javascript; charset=utf-8"
    assert b'"reconciler-token"' in script[1] and b"sessionStorage" in script[1]
    assert style[0] == "text/css; charset=utf-8"
    assert b".tone-green" in style[1]


@pytest.mark.parametrize(
    "name", ["../page.py", "x", "", "page.html", "../templates/page.html", "/etc/passwd", "static/page.js", "PAGE.JS"]
)
def test_no_other_file_is_an_asset(name: str) -> None:
    assert page.asset(name) is None


def test_the_script_writes_text_only_and_sends_the_token_as_a_bearer() -> None:
    script = page.asset("page.js")
    assert script is not None
    source = script[1].decode()
    assert "innerHTML" not in source and "eval(" not in source and "document.write" not in source
    assert "textContent" in source
    assert 'method: "POST"' in source and "Bearer ${bearer}" in source
    assert "URLSearchParams" in source


def test_the_page_does_not_import_jinja_until_it_renders() -> None:
    import subprocess
    import sys

    code = "import sys, reconciler.page; print('jinja2' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"

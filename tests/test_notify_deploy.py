"""Notifications end to end: a deployment through the fake AWX tells a signed webhook and an Apprise json:// target
(real Apprise) what happens, filtered by event and watch; a receiver that is down leaves them waiting, shown by
`status`; a process killed after the state change delivers nothing and the next process delivers it all; secrets
never reach the output, the log or the database.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import signal
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, inspect, text

from reconciler import app, config, model
from tests.support.awx_scenario import TOKEN, Scenario
from tests.support.daemon import wait_until
from tests.support.receiver import Received, Receiver
from tests.support.registry import free_port

SECRET = "webhook-hmac-secret-51d0"
APPRISE_TOKEN = "T0KEN-apprise-9e3b"

NOTIFY = """
[[notify]]
name = "audit"
kind = "webhook"
url_env = "TEST_AUDIT_URL"
secret_env = "TEST_AUDIT_SECRET"
events = ["drift", "started", "succeeded", "failed", "gave_up"]
timeout = "2s"

[[notify]]
name = "chat"
url_env = "TEST_CHAT_URL"
watches = ["staging"]
timeout = "2s"

[[notify]]
name = "elsewhere"
kind = "webhook"
url_env = "TEST_AUDIT_URL"
secret_env = "TEST_AUDIT_SECRET"
watches = ["another-watch"]
"""

OTHER_WATCH = """
[[watch]]
name = "another-watch"
image = "not/checked"
tag = "latest"
"""


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def chat() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def env(hook: Receiver, chat: Receiver) -> dict[str, str]:
    return {
        "TEST_AWX_TOKEN": TOKEN,
        "TEST_AUDIT_URL": f"{hook.url}/reconciler",
        "TEST_AUDIT_SECRET": SECRET,
        "TEST_CHAT_URL": f"json://127.0.0.1:{chat.port}/{APPRISE_TOKEN}",
    }


def with_notify(s: Scenario) -> None:
    s.path.write_text(s.path.read_text() + NOTIFY + OTHER_WATCH)


def reconcile(s: Scenario, variables: dict[str, str], *names: str) -> model.RunReport:
    application = app.App(config.load(s.path, env=variables))
    try:
        return application.reconcile(list(names), dry_run=False, clock=s.time, sleep=s.time.sleep)
    finally:
        application.close()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return str(answer.read().decode())


def signed(got: Received) -> bool:
    expected = "sha256=" + hmac.new(SECRET.encode(), got.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, got.headers["X-Reconciler-Signature-256"])


def everything_stored(database: str) -> str:
    engine = create_engine(database)
    try:
        with engine.connect() as conn:
            return "\n".join(
                repr(row) for t in inspect(engine).get_table_names() for row in conn.execute(text(f"SELECT * FROM {t}"))
            )
    finally:
        engine.dispose()


def test_a_deployment_tells_each_target_what_it_asked_for_signed_and_in_order(
    scenario: Scenario, hook: Receiver, chat: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    s = scenario
    with_notify(s)
    variables = env(hook, chat)
    first = s.push("one")
    reconcile(s, variables, "staging")  # the baseline tells nothing
    second = s.push("two")
    with caplog.at_level(logging.DEBUG):
        reconcile(s, variables, "staging")

    got = hook.wait_for(3)
    assert [r.headers["X-Reconciler-Event"] for r in got] == ["drift", "started", "succeeded"]
    assert all(signed(r) and r.headers["X-Reconciler-Delivery"] == r.json()["id"] for r in got)
    assert all(r.headers["Content-Type"] == "application/json" for r in got)
    drift, started, succeeded = (r.json() for r in got)
    assert (drift["digest"], drift["previous"]["digest"]) == (second, first)
    [action] = s.actions()
    link = action["link"]
    assert link and started["action"] == {
        "id": action["id"],
        "kind": "awx",
        "status": "launched",
        "attempt": 1,
        "link": link,
    }
    assert started["message"] == (
        f'A new STAGING deployment has begun: staging, image tag "latest" ({second[:19]}). Job: {link}'
    )
    assert succeeded["message"].startswith(
        f'A new STAGING deployment is ready: staging, image tag "latest" ({second[:19]})'
    )

    apprise = [r.json() for r in chat.wait_for(2)]  # all but drift, by default
    assert [(m["title"], m["type"]) for m in apprise] == [
        ("started: staging", "info"),
        ("succeeded: staging", "success"),
    ]
    assert apprise[0]["message"] == started["message"]
    assert len(hook.received) == 3 and len(chat.received) == 2  # "elsewhere" wants another watch only

    stored = everything_stored(s.database)
    logged = caplog.text
    for secret in (SECRET, APPRISE_TOKEN, TOKEN):
        assert secret not in stored and secret not in logged
    assert hook.url not in stored  # the row names its target, never its URL


def test_a_failed_last_attempt_tells_failed_then_gave_up(scenario: Scenario, hook: Receiver, chat: Receiver) -> None:
    s = scenario
    with_notify(s)
    s.path.write_text(s.path.read_text().replace("max_attempts = 3", "max_attempts = 1"))
    variables = env(hook, chat)
    s.push("one")
    reconcile(s, variables, "staging")
    s.push("two")
    s.awx.script("failed", polls=1)
    reconcile(s, variables, "staging")
    events = [r.headers["X-Reconciler-Event"] for r in hook.wait_for(4)]
    assert events == ["drift", "started", "failed", "gave_up"]
    failed, gave_up = (r.json() for r in hook.received[2:])
    assert failed["message"].startswith('The STAGING deployment FAILED: staging, image tag "latest"')
    assert "reconciler retry staging" in gave_up["message"]
    titles = [r.json()["title"] for r in chat.wait_for(3)]
    assert titles == ["started: staging", "failed: staging", "gave_up: staging"]


def test_a_receiver_that_is_down_leaves_its_notices_waiting_and_status_says_so(
    scenario: Scenario, hook: Receiver, chat: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    s = scenario
    with_notify(s)
    variables = env(hook, chat)
    s.push("one")
    reconcile(s, variables, "staging")
    hook.down()
    s.push("two")
    reconcile(s, variables, "staging")
    application = app.App(config.load(s.path, env=variables))
    try:
        document = application.status([], now=s.time())
    finally:
        application.close()
    waiting = document["notifications"]["audit"]
    assert waiting["undelivered"] == 3 and waiting["dropped"] == 0
    assert waiting["last_error"] == "cannot connect to $TEST_AUDIT_URL"
    assert document["notifications"]["chat"]["undelivered"] == 0
    assert document["notifications"]["elsewhere"]["undelivered"] == 0
    assert SECRET not in json.dumps(document) and hook.url not in json.dumps(document)

    hook.up()
    s.time.advance(60)  # past the back-off
    reconcile(s, variables, "staging")  # the next run delivers what was left, in order
    assert [r.headers["X-Reconciler-Event"] for r in hook.wait_for(3)] == ["drift", "started", "succeeded"]


def test_a_process_killed_between_the_state_change_and_the_send_leaves_it_to_the_next(
    scenario: Scenario, hook: Receiver, chat: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The webhook holds the drift notice unanswered, so the launch's `started`, recorded with the launch, waits
    behind it; SIGKILL then. The daemon started next finishes the action and, once the dead process's claim has
    expired, sends the drift again (same id), then started and succeeded: in order, nothing lost."""
    s = scenario
    with_notify(s)
    port = free_port()
    s.path.write_text(
        s.path.read_text().replace('poll = "5s"', 'poll = "20ms"') + f'\n[server]\nlisten = "127.0.0.1:{port}"\n'
    )
    for name, value in env(hook, chat).items():
        monkeypatch.setenv(name, value)
    s.push("one")
    assert s.cli("reconcile", "--watch", "staging").returncode == 0
    s.push("two")
    s.awx.clock = lambda: datetime.now(UTC)  # the subprocesses run on the real clock; so must AWX
    s.awx.hang_next("job")  # the launch is answered and recorded; its first status check hangs
    hook.hang()
    proc = s.spawn("reconcile", "--watch", "staging")
    try:
        [held] = hook.wait_for(1, timeout=30)
        assert s.awx.wait_hanging(timeout=30), "the launch was never recorded"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert [a["status"] for a in s.actions()] == ["launched"]
    hook.release()
    s.awx.release()

    daemon = s.spawn("run")
    try:
        got = hook.wait_for(4, timeout=40)
        delivered = 'reconciler_notifications_total{event="succeeded",result="delivered",target="audit"} 1.0'
        metrics = wait_until("the delivery to be counted", lambda: delivered in scrape(port) and scrape(port))
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=15)
    assert [r.headers["X-Reconciler-Event"] for r in got] == ["drift", "drift", "started", "succeeded"]
    assert got[0].json()["id"] == got[1].json()["id"] == held.json()["id"]  # a repeat carries the same id
    assert len({r.json()["id"] for r in got}) == 3
    assert [r.json()["title"] for r in chat.received][-1] == "succeeded: staging"
    assert 'reconciler_notifications_total{event="drift",result="delivered",target="audit"} 1.0' in metrics


def test_a_hanging_receiver_delays_neither_the_deployment_nor_the_run_past_its_timeout(
    scenario: Scenario, hook: Receiver, chat: Receiver
) -> None:
    s = scenario
    with_notify(s)
    variables = env(hook, chat)
    s.push("one")
    reconcile(s, variables, "staging")
    hook.hang()  # holds the drift notice unanswered: everything behind it waits, the deployment does not
    s.push("two")
    started = time.monotonic()
    report = reconcile(s, variables, "staging")
    took = time.monotonic() - started
    assert report.outcomes[0].action is not None
    assert report.outcomes[0].action.status is model.ActionStatus.SUCCEEDED
    assert took < 2.0 + 1.5, f"the run took {took:.1f}s with a 2s timeout"  # the timeout, plus the pass itself
    assert [r.json()["title"] for r in chat.wait_for(2)] == ["started: staging", "succeeded: staging"]
    hook.release()

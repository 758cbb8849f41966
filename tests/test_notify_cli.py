"""`reconciler notify test` (one line per target: delivered, or why not), `status` naming the notifications that
wait, and `config check`: secrets never shown, Apprise loaded only by what sends."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from reconciler import cli, model
from reconciler.store import notices, schema
from tests.support.receiver import Receiver

SECRET = "cli-hmac-secret-0b7e"
TOKEN_PATH = "T0KEN-cli-4a2f"

CONFIG = """
[reconciler]
database = "sqlite:///{database}"

[[watch]]
name = "stack-staging"
image = "xchem/fragalysis-stack"
tag = "latest"

[[notify]]
name = "audit"
kind = "webhook"
url_env = "TEST_AUDIT_URL"
secret_env = "TEST_AUDIT_SECRET"
timeout = "2s"

[[notify]]
name = "chat"
url_env = "TEST_CHAT_URL"
timeout = "2s"
"""


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def chat() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(database=tmp_path / "reconciler.db"))
    return path


def variables(hook: Receiver, chat: Receiver) -> dict[str, str]:
    return {
        "TEST_AUDIT_URL": f"{hook.url}/{TOKEN_PATH}",
        "TEST_AUDIT_SECRET": SECRET,
        "TEST_CHAT_URL": f"json://127.0.0.1:{chat.port}/{TOKEN_PATH}",
    }


def run(config: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The CLI in this process, with exactly `env` added to a scrubbed environment."""
    argv = ["--config", str(config), *args]
    saved = dict(os.environ)
    out, err = io.StringIO(), io.StringIO()
    for name in ("TEST_AUDIT_URL", "TEST_AUDIT_SECRET", "TEST_CHAT_URL"):
        os.environ.pop(name, None)
    os.environ.update(env)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main(argv)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        logging.getLogger().handlers.clear()
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def no_secret_in(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text and TOKEN_PATH not in text


def test_notify_test_sends_a_test_notice_to_every_target_and_says_so(
    config: Path, hook: Receiver, chat: Receiver
) -> None:
    done = run(config, "notify", "test", env=variables(hook, chat))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["audit: delivered", "chat: delivered"]
    [signed] = hook.wait_for(1)
    assert signed.headers["X-Reconciler-Event"] == "test" and signed.json()["event"] == "test"
    expected = "sha256=" + hmac.new(SECRET.encode(), signed.body, hashlib.sha256).hexdigest()
    assert signed.headers["X-Reconciler-Signature-256"] == expected
    [message] = chat.wait_for(1)
    assert message.json()["title"] == "test: reconciler" and "chat" in message.json()["message"]
    no_secret_in(done.stdout, done.stderr)


def test_notify_test_to_one_target_sends_to_it_alone(config: Path, hook: Receiver, chat: Receiver) -> None:
    done = run(config, "notify", "test", "--to", "chat", env=variables(hook, chat))
    assert (done.returncode, done.stdout) == (0, "chat: delivered\n")
    assert len(chat.wait_for(1)) == 1 and hook.received == []


def test_a_target_that_fails_says_why_and_exits_1(config: Path, hook: Receiver, chat: Receiver) -> None:
    hook.down()
    chat.status = 500
    done = run(config, "notify", "test", env=variables(hook, chat))
    assert done.returncode == 1
    audit, chat_line = done.stdout.splitlines()
    assert audit == "audit: not delivered: cannot connect to $TEST_AUDIT_URL"
    assert chat_line.startswith("chat: not delivered: ") and "500" in chat_line
    no_secret_in(done.stdout, done.stderr)


def test_a_target_whose_secret_is_not_set_is_named_with_the_variable(
    config: Path, hook: Receiver, chat: Receiver
) -> None:
    env = variables(hook, chat)
    del env["TEST_AUDIT_SECRET"]
    done = run(config, "notify", "test", "--json", env=env)
    assert done.returncode == 1
    assert json.loads(done.stdout) == {
        "targets": [
            {
                "target": "audit",
                "delivered": False,
                "error": "TEST_AUDIT_SECRET is not set (notify[0].secret_env)",
            },
            {"target": "chat", "delivered": True, "error": None},
        ]
    }
    status = run(config, "status", env=env)
    assert "notifications to audit cannot be sent: TEST_AUDIT_SECRET is not set (notify[0].secret_env)" in status.stdout
    cannot = json.loads(run(config, "status", "--json", env=env).stdout)["notifications"]["audit"]["cannot_send"]
    assert cannot == "TEST_AUDIT_SECRET is not set (notify[0].secret_env)"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--to", "nobody"], "no notify target named 'nobody'"),
        ([], "no [[notify]] targets to test"),
    ],
)
def test_an_unknown_target_or_none_at_all_exits_2(
    tmp_path: Path, config: Path, hook: Receiver, chat: Receiver, args: list[str], says: str
) -> None:
    if not args:
        config.write_text(config.read_text().split("[[notify]]")[0])
    done = run(config, "notify", "test", *args, env=variables(hook, chat))
    assert done.returncode == 2 and says in done.stderr and len(done.stderr.splitlines()) == 1


def test_an_apprise_url_apprise_cannot_use_disables_that_target_alone_without_echoing_it(
    config: Path, hook: Receiver, chat: Receiver
) -> None:
    env = {**variables(hook, chat), "TEST_CHAT_URL": f"slakc://{TOKEN_PATH}/abc"}
    why = "the URL in $TEST_CHAT_URL: not an Apprise URL that Apprise knows (scheme 'slakc')"
    tested = run(config, "notify", "test", env=env)
    assert tested.returncode == 1
    assert tested.stdout.splitlines() == ["audit: delivered", f"chat: not delivered: {why}"]
    assert tested.stderr == ""  # said once, on its line
    checked = run(config, "config", "check", env=env)
    assert checked.returncode == 0
    assert f"warning: notify target chat: {why}; notifications to chat will be kept" in checked.stderr
    for done in (tested, checked):
        no_secret_in(done.stdout, done.stderr)


def test_status_names_the_notifications_that_wait_and_why(config: Path, hook: Receiver, chat: Receiver) -> None:
    database = config.read_text().split('database = "')[1].split('"')[0]
    engine = create_engine(database)
    schema.upgrade(engine)
    box = notices.NoticeBox(engine, [model.Route(target="audit")])
    now = datetime.now(UTC)
    with engine.begin() as conn:
        box.record(conn, [model.Notice(event=model.Event.STARTED, at=now, message="m", watch="stack-staging")], now)
    [item] = box.claim(now, targets=["audit"], hold=lambda _: timedelta(0))
    box.retry(item, "HTTP 503 from $TEST_AUDIT_URL", now)
    engine.dispose()
    done = run(config, "status", env=variables(hook, chat))
    assert done.returncode == 0, done.stderr
    assert "notifications to audit: 1 not delivered yet (oldest " in done.stdout
    assert "HTTP 503 from $TEST_AUDIT_URL" in done.stdout and "chat" not in done.stdout
    document = json.loads(run(config, "status", "--json", env=variables(hook, chat)).stdout)
    assert document["notifications"]["audit"]["undelivered"] == 1
    assert document["notifications"]["chat"] == {
        "cannot_send": None,
        "undelivered": 0,
        "oldest_at": None,
        "next_attempt_at": None,
        "last_error": None,
        "dropped": 0,
    }


def test_config_check_redacts_the_notification_secrets(config: Path, hook: Receiver, chat: Receiver) -> None:
    done = run(config, "config", "check", env=variables(hook, chat))
    assert done.returncode == 0, done.stderr
    no_secret_in(done.stdout, done.stderr)
    assert hook.url not in done.stdout
    shown = {t["name"]: t for t in json.loads(done.stdout)["notify"]}
    assert shown["audit"]["url"] == "<redacted, from $TEST_AUDIT_URL>"


def test_commands_that_send_nothing_never_load_apprise(config: Path, hook: Receiver, chat: Receiver) -> None:
    script = (
        "import sys\nfrom reconciler import cli\n"
        f"cli.main(['--config', {str(config)!r}, 'status'])\n"
        "print('apprise loaded' if 'apprise' in sys.modules else 'apprise not loaded')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, **variables(hook, chat)},
        timeout=60,
    )
    assert done.stdout.strip().endswith("apprise not loaded"), done.stderr

"""A long wait says how it goes: on a terminal a live line rewritten in place ("waiting for AWX job 4242 (running,
2m10s) — Ctrl-C leaves it to be resumed"), otherwise a log line a minute. In-process on the fake clock for the
minutes, and through the real CLI (a pseudo-terminal for the live line) for the wiring."""

from __future__ import annotations

import io
import itertools
import logging
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler import app
from reconciler.progress import HINT, Progress, elapsed
from tests.fakes.awx import FakeAwx
from tests.support.awx_scenario import TOKEN, Scenario, baseline, make_scenario
from tests.support.registry import LocalRegistry


def _seconds(text: str) -> int:
    match = re.search(r", (?:(\d+)m)?(\d+)s\)", text)
    assert match, text
    return int(match.group(1) or 0) * 60 + int(match.group(2))


def _pass(s: Scenario, progress: Progress) -> None:
    application = app.App(s.settings(), progress=progress)
    try:
        report = application.reconcile([], dry_run=False, clock=s.time, sleep=s.time.sleep)
    finally:
        application.close()
    assert report.outcomes[0].action is not None and report.outcomes[0].action.status.value == "succeeded"


def test_elapsed_is_compact() -> None:
    from datetime import timedelta

    assert [elapsed(timedelta(seconds=n)) for n in (0, 45, 130, 3600 + 5 * 60 + 9)] == ["0s", "45s", "2m10s", "1h05m"]


def test_without_a_terminal_a_long_wait_is_logged_once_a_minute(
    scenario: Scenario, caplog: pytest.LogCaptureFixture
) -> None:
    s = scenario
    baseline(s)
    s.push("two")
    s.awx.script("successful", polls=40)  # polled every 5s, growing to 15s: several minutes on the fake clock
    started = s.time.now
    with caplog.at_level(logging.INFO, logger="reconciler.progress"):
        _pass(s, Progress(s.time))
    lines = [r.getMessage() for r in caplog.records if r.name == "reconciler.progress"]
    waited = (s.time.now - started).total_seconds()
    assert waited > 4 * 60, waited
    assert all(re.fullmatch(r"waiting for AWX job \d+ \(\w+, [0-9ms]+\)", line) for line in lines), lines
    assert lines[0].endswith("(running, 0s)") or _seconds(lines[0]) < 60
    times = [_seconds(line) for line in lines]
    assert all(b - a >= 60 for a, b in itertools.pairwise(times)), times  # never more than one a minute
    assert len(lines) >= int(waited // 60) - 1, (lines, waited)  # and one every minute it lasts


def test_on_a_terminal_one_line_is_rewritten_in_place_without_escape_codes(scenario: Scenario) -> None:
    s = scenario
    baseline(s)
    s.push("two")
    s.awx.script("successful", polls=6)
    stream = io.StringIO()
    progress = Progress(s.time, stream=stream, live=True)
    _pass(s, progress)
    progress.done()
    shown = stream.getvalue()
    assert "\x1b" not in shown and "\n" not in shown
    frames = [f.rstrip() for f in shown.split("\r") if f.strip()]
    assert len(frames) >= 5, frames
    assert all(f.startswith("waiting for AWX job ") and f.endswith(HINT) for f in frames), frames
    assert _seconds(frames[-1]) > _seconds(frames[0])  # the time waited moves on
    assert shown.endswith("\r") and shown.split("\r")[-2].strip() == ""  # blanked at the end


@pytest.fixture
def quick(tmp_path: Path, registry: LocalRegistry, awx: FakeAwx) -> Scenario:
    return make_scenario(tmp_path, registry, awx, f"sqlite:///{tmp_path}/reconciler.db", poll="20ms")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILER_", "NO_COLOR"))}
    return {**env, "TEST_AWX_TOKEN": TOKEN}


def test_the_cli_shows_a_live_line_on_a_terminal(quick: Scenario) -> None:
    s = quick
    baseline(s)
    s.push("two")
    s.awx.script("successful", polls=4)
    leader, follower = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "reconciler.cli", "--config", str(s.path), "reconcile"],
            stdout=subprocess.PIPE,
            stderr=follower,
            env=_env(),
            timeout=60,
        )
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end is closed and everything was read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    assert result.returncode == 0, shown
    text = shown.decode()
    assert re.search(r"\rwaiting for AWX job \d+ \(\w+, \d+s\) — Ctrl-C leaves it to be resumed", text), text
    assert "\x1b" not in text


def test_the_cli_without_a_terminal_logs_the_wait_once_in_its_first_minute(quick: Scenario) -> None:
    s = quick
    baseline(s)
    s.push("two")
    s.awx.script("successful", polls=4)
    result = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "--config", str(s.path), "reconcile"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    waits = [line for line in result.stderr.splitlines() if "waiting for AWX job" in line]
    assert len(waits) == 1, result.stderr
    assert "\r" not in result.stderr and "Ctrl-C" not in result.stderr

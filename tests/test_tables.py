"""The `status`, `reconcile` and `history` tables as a person reads them (reconciler/render.py): at 80 columns every
row is one line and no line is longer or ends in a space, digests show 12 hex digits, times are ages, long names and
notes end in "…" instead of wrapping, an AWX link is printed whole, and no escape code reaches a pipe or a NO_COLOR
terminal. Documents come from `reconciler.report`, the same functions the CLI uses; the end-to-end tests run the CLI
on a SQLite database filled through the store. Nothing sleeps.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler import cli, clients, decide, model, render, report
from reconciler.store import outbox, queries, schema

T0 = datetime(2026, 8, 3, 12, 0, 0, tzinfo=UTC)
IMAGE = model.ImageRef.parse("xchem/fragalysis-stack")
AWX = model.AwxAction(server="production", template="Staging Fragalysis Stack")
ONE = "sha256:" + "0123456789abcdef" * 4  # 71 characters; the tables show 0123456789ab
TWO = "sha256:" + "fedcba9876543210" * 4
LINK = "https://awx.example.org/#/jobs/playbook/4242"
LONG_NAME = "a-watch-whose-name-is-far-too-long-for-any-column-of-a-table"
LONG_ERROR = "registry.example.org answered 500 Internal Server Error: " + "x" * 243
KUBE_PATH = "/apis/apps/v1/namespaces/fragalysis-production/statefulsets/database?fieldManager=reconciler"
PATCH = "application/strategic-merge-patch+json"
REQUEST = "stack-staging would send: POST https://awx.example.org/api/v2/job_templates/7/launch/"
ESCAPES = re.compile(r"\x1b\[[0-9;]*m|\x1b\]8;[^\x1b]*\x1b\\")
Draw = Callable[..., None]

assert len(ONE) == 71 and len(LONG_NAME) == 60 and len(LONG_ERROR) == 300 and len(LINK) == 44


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def columns_80(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "80")


def ago(seconds: float, now: datetime = T0) -> datetime:
    return now - timedelta(seconds=seconds)


def watch(name: str, *, action: model.Action | None = AWX, selector: model.Selector | None = None) -> model.Watch:
    return model.Watch(name=name, image=IMAGE, selector=selector or model.TagSelector("latest"), action=action)


def failed_action(now: datetime = T0, *, watch_name: str = "stack-staging") -> model.ActionRecord:
    return model.ActionRecord(
        id=7,
        watch=watch_name,
        kind=model.ActionKind.AWX,
        status=model.ActionStatus.FAILED,
        tag="latest",
        digest=TWO,
        attempt=1,
        created_at=ago(600, now),
        launched_at=ago(540, now),
        finished_at=ago(120, now),
        external_ref="4242",
        link=LINK,
        detail="AWX job 4242 failed",
        next_attempt_at=now + timedelta(minutes=5),
        failure=model.Failure.DEPLOYMENT,
    )


def status_document() -> dict[str, Any]:
    seen = model.Seen(tag="latest", digest=ONE, since=ago(3600))
    watches = [
        watch("stack-staging"),
        watch(LONG_NAME),
        watch("frontend", action=None),
        watch("release", selector=model.ReleaseSelector()),
        watch("fresh"),
    ]
    states = {
        "stack-staging": model.WatchState(
            watch="stack-staging",
            observed=model.Seen(tag="latest", digest=TWO, since=ago(600)),
            checked_at=ago(180),
            deployed=model.Deployed(tag="latest", digest=ONE, at=ago(86400)),
        ),
        LONG_NAME: model.WatchState(watch=LONG_NAME, observed=seen, checked_at=ago(12), last_error=LONG_ERROR),
        "frontend": model.WatchState(
            watch="frontend", observed=seen, checked_at=ago(7200), deployed=model.Deployed("latest", ONE, ago(7200))
        ),
        "release": model.WatchState(
            watch="release",
            observed=model.Seen(tag="2026.8.3", digest=ONE, since=ago(4 * 86400)),
            checked_at=ago(4 * 86400),
            deployed=model.Deployed(tag="2026.8.3", digest=ONE, at=ago(4 * 86400)),
        ),
    }
    return report.status_document(watches, states, now=T0, last_actions={"stack-staging": failed_action()})


def history_document(now: datetime = T0) -> dict[str, Any]:
    entries = [
        queries.HistoryEntry(ago(190, now), "stack-staging", "drift", "latest", TWO, None, "drift reason"),
        queries.HistoryEntry(ago(4 * 86400, now), LONG_NAME, "error", None, None, LONG_ERROR, LONG_ERROR),
    ]
    return report.history_document(entries, [failed_action(now)], limit=50)


def reconcile_document(*, dry_run: bool) -> dict[str, Any]:
    stateful = model.StatefulSetAction(namespace="fragalysis-production", name="database", container="db")
    state = model.WatchState(
        watch="x",
        observed=model.Seen(tag="latest", digest=TWO, since=ago(60)),
        checked_at=T0,
        deployed=model.Deployed(tag="latest", digest=ONE, at=ago(86400)),
    )
    previews: list[tuple[model.Watch, dict[str, object]]] = [
        (
            watch("stack-staging"),
            {
                "method": "POST",
                "url": "https://awx.example.org/api/v2/job_templates/7/launch/",
                "body": {"extra_vars": {"stack_image_tag": "latest"}},
            },
        ),
        (
            watch("database", action=stateful),
            {
                "method": "PATCH",
                "path": KUBE_PATH,
                "content_type": PATCH,
                "body": {},
            },
        ),
        (
            watch(LONG_NAME),
            {"error": "cannot reach AWX at https://awx.example.org/api/v2/: " + "connection refused; " * 10},
        ),
    ]
    outcomes = []
    for w, preview in previews:
        observation = model.Observation(tag="latest", digest=TWO, checked_at=T0)
        decision = model.Decision(model.Verdict.DRIFT, "latest@0123456789ab deployed, latest@fedcba987654 observed")
        if dry_run:
            outcomes.append(model.WatchOutcome(w, observation, decision, state, True, preview=preview))
        else:
            done = failed_action(watch_name=w.name)
            outcomes.append(model.WatchOutcome(w, observation, decision, state, True, action=done, acted=True))
    run = model.RunReport(started_at=ago(2), finished_at=T0, dry_run=dry_run, outcomes=tuple(outcomes))
    return report.reconcile_document(run)


def draw(function: Draw, document: dict[str, Any], stream: io.StringIO | None = None, **kwargs: Any) -> str:
    out = io.StringIO() if stream is None else stream
    function(render.console(out), document, **kwargs)
    return out.getvalue()


def assert_readable(text: str, width: int = 80) -> list[str]:
    """Plain, no line longer than `width` (a link or the request of a dry run excepted), none ending in a space."""
    whole = (LINK, REQUEST, f"database would send: PATCH {KUBE_PATH} ({PATCH})")
    assert "\x1b" not in text, text
    lines = text.splitlines()
    for line in lines:
        assert line == line.rstrip(), f"trailing whitespace: {line!r}"
        assert len(line) <= width or line.strip() in whole, f"{len(line)} > {width}: {line!r}"
    return lines


def row_of(lines: list[str], start: str) -> str:
    (row,) = [line for line in lines if line.startswith(start)]
    return row


# --- the console ----------------------------------------------------------------------------------------------------


def test_a_console_on_a_pipe_prints_no_escape_codes_and_is_columns_wide(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    console = render.console(out)
    assert console.width == 80
    console.print("[bold red]red[/] [link=https://example.org]link[/] [reverse]x[/]")
    assert out.getvalue() == "red link x\n"
    for columns in (None, "wide", "0"):  # no width to go by: wide enough not to cut (module docstring)
        if columns is None:
            monkeypatch.delenv("COLUMNS")
        else:
            monkeypatch.setenv("COLUMNS", columns)
        assert render.console(io.StringIO()).width == render.PIPE_WIDTH == 160


@pytest.mark.parametrize(
    ("stream", "env"),
    [
        pytest.param(Terminal, {"NO_COLOR": "1"}, id="terminal-NO_COLOR"),
        pytest.param(io.StringIO, {"NO_COLOR": "1", "FORCE_COLOR": "1"}, id="forced-terminal-NO_COLOR"),
        pytest.param(Terminal, {"NO_COLOR": "yes", "FORCE_COLOR": "1"}, id="terminal-forced-NO_COLOR"),
        pytest.param(io.StringIO, {}, id="pipe"),
    ],
)
def test_no_escape_codes_with_no_color_or_in_a_pipe(
    stream: type[io.StringIO], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for function, document, kwargs in (
        (render.status, status_document(), {}),
        (render.history, history_document(), {"now": T0}),
        (render.reconcile, reconcile_document(dry_run=True), {}),
    ):
        assert_readable(draw(function, document, stream(), **kwargs))


def test_a_terminal_keeps_its_colour_and_its_lines_still_end_without_spaces() -> None:
    text = draw(render.status, status_document(), Terminal())
    assert "\x1b[" in text  # colour and bold stay on a terminal
    plain = ESCAPES.sub("", text)
    assert "\x1b" not in plain
    lines = assert_readable(plain)
    assert row_of(lines, "stack-stag").split()[1] == "failed"


# --- status ---------------------------------------------------------------------------------------------------------


def test_status_at_80_columns_is_one_line_per_watch_and_cuts_instead_of_wrapping() -> None:
    lines = assert_readable(draw(render.status, status_document()))
    assert lines[0].split() == ["WATCH", "STATE", "OBSERVED", "DEPLOYED", "CHECKED", "NOTE"]
    assert len(lines) == 1 + 5 + 1  # the header, one line per watch, and the failed action's link
    staging = row_of(lines, "stack-stag")  # 13 characters: cut too, as the long name and the tags need room
    assert staging.split()[1:6] == ["failed", "fedcba987654", "0123456789ab", "3m", "ago"]
    assert "0123456789abc" not in "\n".join(lines) and "sha256" not in "\n".join(lines)
    assert row_of(lines, "release").split()[2:4] == ["…6.8.3@0123456789ab"] * 2  # the digest stays whole
    assert row_of(lines, "frontend").split()[4:6] == ["2h", "ago"]
    assert row_of(lines, "fresh").split()[1:5] == ["unknown", "-", "-", "never"]
    assert "4d ago" in row_of(lines, "release")

    long = row_of(lines, LONG_NAME[:8])
    name = long.split()[0]
    assert name.endswith("…") and LONG_NAME.startswith(name[:-1]) and len(name) <= 24
    assert "12s ago" in long and long.endswith("…")
    note = long.split("ago", 1)[1].strip()
    assert LONG_ERROR.startswith(note[:-1]) and len(note) > 4
    assert [line for line in lines if "regi" in line or "xxx" in line] == [long]  # cut, not wrapped


def test_status_puts_the_link_of_a_failed_action_whole_under_its_row() -> None:
    lines = assert_readable(draw(render.status, status_document()))
    after = lines[lines.index(row_of(lines, "stack-stag")) + 1]
    assert after.strip() == LINK and after.startswith(" ")


def test_status_says_when_the_next_attempt_is_and_shows_notes_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    document = status_document()
    document["watches"][2]["last_error"] = "unexpected [/] in [bold]reply[/bold] :smile:"
    lines = assert_readable(draw(render.status, document), width=160)
    assert row_of(lines, "stack-staging").endswith("action #7 failed: AWX job 4242 failed; next attempt in 5m")
    assert row_of(lines, "frontend").endswith("unexpected [/] in [bold]reply[/bold] :smile:")


@pytest.mark.parametrize("width", [20, 40, 60, 80, 100, 120, 160, 200])
def test_every_row_is_one_line_at_any_width(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", str(width))
    lines = assert_readable(draw(render.status, status_document()), width)
    assert len(lines) == 1 + 5 + 1
    lines = assert_readable(draw(render.history, history_document(), now=T0), width)
    assert len(lines) == 1 + 3 + 1


# --- history --------------------------------------------------------------------------------------------------------


def test_history_at_80_columns_shows_ages_short_digests_and_the_awx_link_whole() -> None:
    lines = assert_readable(draw(render.history, history_document(), now=T0))
    assert lines[0].split() == ["AT", "WATCH", "EVENT", "OBSERVED", "DETAIL"]
    assert len(lines) == 1 + 3 + 1
    action = lines[1]
    assert action.startswith("2m ago") and "action #7 failed" in action and "latest@fedcba987654" in action
    assert lines[2].strip() == LINK and lines[2].startswith(" ")
    assert lines[3].split()[:4] == ["3m", "ago", "stack-staging", "drift"]
    old = lines[4]
    assert old.startswith("4d ago") and old.endswith("…") and "xxx" not in old.split("…")[-1]
    assert "fedcba9876543" not in "\n".join(lines)


def test_history_ages_are_from_now_which_defaults_to_the_clock() -> None:
    now = datetime.now(UTC)
    lines = assert_readable(draw(render.history, history_document(now)))
    assert lines[1].startswith("2m ago") and lines[3].startswith("3m ago") and lines[4].startswith("4d ago")
    later = assert_readable(draw(render.history, history_document(now), now=now + timedelta(hours=2)))
    assert later[1].startswith("2h ago")
    assert draw(render.history, {"events": []}) == "no history yet: run `reconciler reconcile` first\n"


# --- reconcile ------------------------------------------------------------------------------------------------------


def test_a_dry_run_fits_its_table_and_prints_the_exact_request_whole() -> None:
    lines = assert_readable(draw(render.reconcile, reconcile_document(dry_run=True)))
    assert lines[0].split() == ["WATCH", "DECISION", "OBSERVED", "DEPLOYED", "REASON"]
    assert [line.split()[1:4] for line in lines[1:4]] == [["drift", "fedcba987654", "0123456789ab"]] * 3
    assert all(line.endswith("…") for line in lines[1:4])  # the reason and what it would do, cut
    rest = lines[4:]
    assert rest[0] == "stack-staging would act: awx production: Staging Fragalysis Stack"
    assert rest[1] == REQUEST  # the request as it would be sent: longer than 80, never cut nor wrapped
    assert rest[2:7] == ["{", '  "extra_vars": {', '    "stack_image_tag": "latest"', "  }", "}"]
    assert rest[7] == "database would act: statefulset fragalysis-production/database (restart)"
    assert rest[8:10] == [f"database would send: PATCH {KUBE_PATH} ({PATCH})", "{}"]
    assert rest[10:12] == [f"{LONG_NAME} would act: awx", "  production: Staging Fragalysis Stack"]
    assert rest[12].startswith(f"{LONG_NAME}: cannot tell") and rest[13].startswith("  ")
    assert "https://awx.example.org/api/v2/:" in " ".join(rest[12:-1]).split()  # wrapped at spaces only
    assert rest[-1] == "dry run, nothing written: checked 3 watches in 2.00s: drift=3"


def test_a_pass_that_acted_links_each_action_whole() -> None:
    lines = assert_readable(draw(render.reconcile, reconcile_document(dry_run=False)))
    assert [line.strip() for line in lines[2:7:2]] == [LINK] * 3
    assert lines[-1].startswith("checked 3 watches in 2.00s: drift=3; actions: failed=3")


# --- through the command line ---------------------------------------------------------------------------------------

CONFIG = """
[reconciler]
database = "{database}"

[awx.production]
url = "https://awx.example.org"
token_env = "TEST_AWX_TOKEN"

[[watch]]
name = "stack-staging"
image = "xchem/fragalysis-stack"
tag = "latest"
[watch.action]
kind = "awx"
awx = "production"
template = "Staging Fragalysis Stack"

[[watch]]
name = "{long_name}"
image = "xchem/fragalysis-stack"
tag = "latest"
"""


def _pass(now: datetime, *results: tuple[model.Watch, model.CheckResult, model.WatchState | None]) -> model.RunReport:
    outcomes = []
    for w, result, previous in results:
        decision = decide.decide(watch=w, result=result, state=previous, now=now)
        state = decide.advance(state=previous, result=result, decision=decision, watch=w.name, now=now)
        outcomes.append(model.WatchOutcome(w, result, decision, state, decide.changed(previous, state)))
    return model.RunReport(started_at=now, finished_at=now, dry_run=False, outcomes=tuple(outcomes))


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    """A configuration and its SQLite database: a baseline 20 minutes ago; 3 minutes ago a new digest for
    stack-staging, whose AWX job then failed, and a 300-character error for the long-named watch."""
    database = f"sqlite:///{tmp_path / 'reconciler.db'}"
    now = datetime.now(UTC)
    staging, long = watch("stack-staging"), watch(LONG_NAME, action=None)
    engine = clients.database_engine(database)
    try:
        schema.upgrade(engine)
        store = queries.Store(engine)
        first = _pass(
            ago(1200, now), *((w, model.Observation("latest", ONE, ago(1200, now)), None) for w in (staging, long))
        )
        store.record_pass(first)
        states = {o.watch.name: o.state for o in first.outcomes}
        store.record_pass(
            _pass(
                ago(200, now),
                (staging, model.Observation("latest", TWO, ago(200, now)), states["stack-staging"]),
                (long, model.CheckFailure(LONG_ERROR, ago(200, now)), states[LONG_NAME]),
            )
        )
        box = outbox.Outbox(engine)
        target = model.Target(watch="stack-staging", image=IMAGE, tag="latest", digest=TWO)
        planned = box.plan(target=target, kind=model.ActionKind.AWX, attempt=1, request=lambda _: {}, now=ago(190, now))
        assert planned is not None
        box.launched(planned.id, model.Launch(ref="4242", link=LINK), ago(185, now))
        box.failed(planned.id, "AWX job 4242 failed", ago(130, now), retry_at=now + timedelta(minutes=5))
    finally:
        engine.dispose()
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(database=database, long_name=LONG_NAME), encoding="utf-8")
    return path


def _cli(config: Path, *args: str) -> str:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RECONCILER_", "AWX_", "NO_COLOR", "FORCE_COLOR", "TTY_"))
    }
    env.update(COLUMNS="80", TEST_AWX_TOKEN="t")
    done = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=config.parent,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _check_cli_tables(status: str, history: str, width: int) -> None:
    lines = assert_readable(status, width)
    assert len(lines) == 1 + 2 + 1
    staging = row_of(lines, "stack-staging")
    assert staging.split()[1:6] == ["failed", "fedcba987654", "0123456789ab", "3m", "ago"]
    assert lines[lines.index(staging) + 1].strip() == LINK
    long = row_of(lines, LONG_NAME[:8])
    assert long.split()[0].endswith("…") and "error" in long and long.endswith("…")
    lines = assert_readable(history, width)
    assert lines[1].startswith("2m ago") and "action #1 failed" in lines[1] and lines[2].strip() == LINK
    assert len(lines) == 1 + 5 + 1 and all(line.split()[1] == "ago" for line in lines[3:])


def test_status_and_history_through_the_cli_are_plain_one_line_rows(filled: Path) -> None:
    _check_cli_tables(_cli(filled, "status"), _cli(filled, "history"), width=200)


def test_through_the_cli_no_line_is_wider_than_columns(filled: Path) -> None:
    """The CLI prints with `render.console()`, so $COLUMNS holds in a pipe too (its old console was 200 wide)."""
    _check_cli_tables(_cli(filled, "status"), _cli(filled, "history"), width=80)


def test_the_cli_with_render_console_fits_80_columns(
    filled: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same in-process: `render.console()` finds the standard output at the time it prints."""
    root, level = logging.getLogger(), logging.getLogger().level
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # cli.main sets its own handler up: undone after
    monkeypatch.setenv("TEST_AWX_TOKEN", "t")
    monkeypatch.chdir(filled.parent)
    try:
        assert cli.main(["--config", str(filled), "status"]) == 0
        status = capsys.readouterr().out
        assert cli.main(["--config", str(filled), "history"]) == 0
        history = capsys.readouterr().out
    finally:
        root.setLevel(level)
    _check_cli_tables(status, history, width=80)

"""The `status`, `reconcile` and `history` tables as a person reads them (reconciler/render.py): no line is longer than
the width or ends in a space, digests show 12 hex digits, times are ages, long names and notes end in "…" instead of
wrapping, an AWX link is printed whole, and no escape code reaches a pipe or a NO_COLOR terminal. Each row is its main
line (found by its first cell), then, when the note column (NOTE, REASON, DETAIL) would cut a note short (narrower
than the longest note and than columns.NOTE_ROOM, as at 80 columns), its note under the second column, wrapped at spaces
onto one line or two and cut with "…" at the width if it needs more, then its link, if any. Documents come from
`reconciler.report`, the same functions the CLI uses; the end-to-end tests run the CLI on a SQLite database filled
through the store, or on a fresh one. Nothing sleeps.
"""

from __future__ import annotations

import io
import logging
import os
import random
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import EllipsisType
from typing import Any, NamedTuple

import pytest
from rich.cells import cell_len
from rich.style import Style
from rich.text import Text

from reconciler import cli, columns, database, decide, model, render, report
from reconciler.store import outbox, queries, schema
from reconciler.store.rows import HistoryEntry

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
NOTES = ("NOTE", "REASON", "DETAIL")  # the last column's header, when the notes are in their column
STAGING = "action #7 failed: AWX job 4242 failed; next attempt in 5m"  # the failed action's status note
DEPLOYS = "awx production: Staging Fragalysis Stack"
DRIFT = "latest@0123456789ab deployed, latest@fedcba987654 observed"
NOT_FOUND = (  # 114 characters, as the registry client says it: two lines under its row at 80 columns, whole
    "docker.io/xchem/fragalysis-backend: repository not found or private (registry docker.io answered 404 NAME_UNKNOWN)"
)
# an AWX watch's note while its token is not set: 59 characters
CANNOT_ACT = "cannot act: AWX_TOKEN is not set (awx.production.token_env)"
NOTE_LINES = 2  # columns.NOTE_LINES: a note under its row takes one line, or two, never more
Draw = Callable[..., None]
Note = str | tuple[str, ...] | EllipsisType | None  # the note, one of these, any note (not checked), or none shown
Spec = tuple[str, Note, str | None]  # a row: its first cell, its note, its link
STATUS_ROWS: tuple[Spec, ...] = (
    ("stack-staging", STAGING, LINK),
    (LONG_NAME, LONG_ERROR, None),
    ("frontend", "observed only", None),
    ("release", DEPLOYS, None),
    ("fresh", DEPLOYS, None),
)
HISTORY_ROWS: tuple[Spec, ...] = (
    ("2m ago", "AWX job 4242 failed", LINK),
    ("3m ago", "drift reason", None),
    ("4d ago", LONG_ERROR, None),
)

assert len(ONE) == 71 and len(LONG_NAME) == 60 and len(LONG_ERROR) == 300 and len(LINK) == 44
assert len(NOT_FOUND) == 114 and len(CANNOT_ACT) == 59


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


def history_document(now: datetime = T0, *, error: str = LONG_ERROR) -> dict[str, Any]:
    entries = [
        HistoryEntry(ago(190, now), "stack-staging", "drift", "latest", TWO, None, "drift reason"),
        HistoryEntry(ago(4 * 86400, now), LONG_NAME, "error", None, None, error, error),
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
    """Plain, no line wider than `width` terminal cells (a link or the request of a dry run excepted), none ending in
    a space."""
    whole = (LINK, REQUEST, f"database would send: PATCH {KUBE_PATH} ({PATCH})")
    assert "\x1b" not in text, text
    lines = text.splitlines()
    for line in lines:
        assert line == line.rstrip(), f"trailing whitespace: {line!r}"
        assert cell_len(line) <= width or line.strip() in whole, f"{cell_len(line)} > {width}: {line!r}"
    return lines


def row_of(lines: list[str], start: str) -> str:
    (row,) = [line for line in lines if line.startswith(start)]
    return row


def shows(shown: str, text: str, room: int) -> bool:
    """`shown` is `text` whole, or its start cut with "…" to fill `room` cells."""
    return shown == text or (
        shown.endswith("…") and cell_len(shown) == room and len(shown) > 1 and text.startswith(shown[:-1])
    )


def starts_with_cell(line: str, cell: str) -> bool:
    """`line` starts with `cell`, whole or cut with "…" (columns are two spaces apart)."""
    head = line.split("  ", 1)[0]
    return head == cell or (head.endswith("…") and len(head) > 1 and cell.startswith(head[:-1]))


def says(parts: Sequence[str], text: str, room: int) -> bool:
    """`parts`, the lines of a note under its row without their indent, say `text` by the rule of `columns._under`: one
    line or two (never more), none empty, none starting or ending with a space, none wider than `room` terminal cells,
    and two only when the text does not fit on one; joined with spaces, they are the text with its whitespace
    normalised, whole, or a prefix of it ending in "…" whose last line fills `room` exactly (a wide character that would
    straddle the edge gives way to a space, as rich cuts); the first line ends where the text has a space, never inside
    a word, and a note cut on one line is a first word longer than `room`."""
    words = " ".join(text.split())
    said = " ".join(parts)
    if not 1 <= len(parts) <= NOTE_LINES or any(not p or p != p.strip() or cell_len(p) > room for p in parts):
        return False
    if len(parts) > 1 and not words.startswith(parts[0] + " "):  # a line break only where the text has a space
        return False
    if said == words:  # whole: a short note takes one line
        return len(parts) == 1 or cell_len(words) > room
    kept = said[:-1]
    if kept.endswith(" ") and words[len(kept) - 1 : len(kept)] != " " and cell_len(words[len(kept) - 1 :][:1]) == 2:
        kept = kept[:-1]  # rich fills the cell a wide character would straddle with a space
    return (
        said.endswith("…")
        and cell_len(parts[-1]) == room
        and words.startswith(kept)
        and len(kept) < len(words)
        and (len(parts) == NOTE_LINES or cell_len(words.split()[0]) > room)
    )


class Row(NamedTuple):
    main: str  # the row's line
    note: tuple[str, ...]  # the lines of its note under it, as printed (indent included); () if in its column or none
    link: str | None  # the line of its link, as printed, if any

    @property
    def said(self) -> str | None:
        """The note under the row, its lines joined with spaces; None if it is not under the row."""
        return " ".join(line.strip() for line in self.note) if self.note else None


def rows_of(
    lines: list[str], specs: tuple[Spec, ...], width: int, *, firsts: bool = True
) -> tuple[list[Row], list[str]]:
    """The table at the top of `lines`, row by row, checked against the rule of `columns.table`: the header, then for
    each row its main line, exactly one, which starts with the row's first cell (whole or cut with "…"); then, when the
    note column was dropped (its header is missing), the row's note (unless none is shown) on one line or two, all
    indented to the second column, which say the note by the rule of `says` (any note for `...`: one line or two);
    then the row's link, if any, whole on one line. A note still in its column ends the main line, whole or cut at the
    width. Returns the rows and the lines after the table. `firsts=False` for a width too narrow for the fixed columns,
    where rich squeezes the first column away: the rows are then told apart by their order only, the notes by their
    common indent (deeper than the main lines')."""
    header = lines[0]
    under = header.split()[-1] not in NOTES
    column = None if under else header.rindex(header.split()[-1])
    second = re.match(r"\S+ +", header)
    indent = second.end() if firsts and second else None  # the second column starts where its header does
    rows: list[Row] = []
    at = 1
    for first, note, link in specs:
        assert at < len(lines), f"row {first!r} missing: {lines}"
        main, note_lines, link_line = lines[at], (), None
        at += 1
        assert main.strip(), lines
        if firsts:
            assert starts_with_cell(main, first), f"{main!r} is not the row of {first!r}"
        notes = (note,) if isinstance(note, str) else note if isinstance(note, tuple) else ()
        if column is not None and notes:
            assert any(shows(main[column:], text, width - column) for text in notes), f"note of {first!r}: {main!r}"
        if under and note is not None:
            assert at < len(lines), f"note of {first!r} missing: {lines}"
            if indent is None:
                indent = len(lines[at]) - len(lines[at].lstrip())
                assert indent > len(main) - len(main.lstrip()), f"note of {first!r} missing: {lines[at]!r}"
            taken = []
            while at < len(lines) and lines[at].startswith(" " * indent) and lines[at][indent : indent + 1].strip():
                if link is not None and lines[at].strip() == link:
                    break  # the row's link, at the same indent
                taken.append(lines[at])
                at += 1
            note_lines = tuple(taken)
            assert note_lines, f"note of {first!r} missing or not at {indent}: {lines[at : at + 1]}"
            assert len(note_lines) <= NOTE_LINES, f"note of {first!r} on more than {NOTE_LINES} lines: {note_lines}"
            parts = [line[indent:] for line in note_lines]
            assert notes == () or any(says(parts, text, width - indent) for text in notes), note_lines
        if link is not None:
            assert at < len(lines), f"link of {first!r} missing: {lines}"
            link_line = lines[at]
            at += 1
            assert link_line.lstrip() == link, f"link of {first!r}: {link_line!r}"
            if indent is not None:
                assert link_line == " " * max(0, min(indent, width - len(link))) + link, link_line
        rows.append(Row(main, note_lines, link_line))
    return rows, lines[at:]


# --- the console ----------------------------------------------------------------------------------------------------


def test_a_console_on_a_pipe_prints_no_escape_codes_and_is_columns_wide(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    console = render.console(out)
    assert console.width == 80
    console.print("[bold red]red[/] [link=https://example.org]link[/] [reverse]x[/]")
    assert out.getvalue() == "red link x\n"
    for given in (None, "wide", "0"):  # no width to go by: wide enough not to cut (module docstring)
        if given is None:
            monkeypatch.delenv("COLUMNS")
        else:
            monkeypatch.setenv("COLUMNS", given)
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
    assert rows_of(lines, STATUS_ROWS, 80)[1] == []


# --- status ---------------------------------------------------------------------------------------------------------


def test_status_at_80_columns_puts_each_note_under_its_row_and_cuts_what_two_lines_cannot_hold() -> None:
    lines = assert_readable(draw(render.status, status_document()))
    assert lines[0].split() == ["WATCH", "STATE", "OBSERVED", "DEPLOYED", "CHECKED"]  # NOTE: too narrow at 80
    rows, rest = rows_of(lines, STATUS_ROWS, 80)
    # the header, each watch and its note (the long error's on two lines), the failed action's link
    assert rest == [] and [len(row.note) for row in rows] == [1, 2, 1, 1, 1] and len(lines) == 1 + 5 + 6 + 1
    staging = row_of(lines, "stack-staging")
    assert staging.split()[1:6] == ["failed", "fedcba987654", "0123456789ab", "3m", "ago"]
    assert "0123456789abc" not in "\n".join(lines) and "sha256" not in "\n".join(lines)
    assert row_of(lines, "release").split()[2:4] == ["2026.8.3@0123456789ab"] * 2  # the digest stays whole
    assert row_of(lines, "frontend").split()[4:6] == ["2h", "ago"]
    assert row_of(lines, "fresh").split()[1:5] == ["unknown", "-", "-", "never"]
    assert row_of(lines, "release").endswith("4d ago")

    long = row_of(lines, LONG_NAME[:8])
    name = long.split()[0]
    assert name.endswith("…") and LONG_NAME.startswith(name[:-1]) and len(name) <= 24
    assert long.endswith("12s ago") and rows[1].main == long
    first, second = rows[1].note
    assert first == " " * 18 + "registry.example.org answered 500 Internal Server Error:"  # wrapped at a space
    assert second == " " * 18 + "x" * 61 + "…" and len(second) == 80  # the rest, cut at the width
    assert [line for line in lines if "regi" in line or "xxx" in line] == [first, second]  # never a third line
    assert lines[lines.index(long) + 3] == row_of(lines, "frontend")


def test_status_puts_the_link_of_a_failed_action_whole_under_its_row(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = assert_readable(draw(render.status, status_document()))
    at = lines.index(row_of(lines, "stack-staging"))
    assert lines[at + 1].strip() == STAGING and lines[at + 2].strip() == LINK and lines[at + 2].startswith(" ")
    monkeypatch.setenv("COLUMNS", "160")  # the note in its column: the link right under the row
    lines = assert_readable(draw(render.status, status_document()), 160)
    after = lines[lines.index(row_of(lines, "stack-staging")) + 1]
    assert after.strip() == LINK and after.startswith(" ")


def test_the_failed_action_note_does_not_repeat_the_link_printed_under_its_row(monkeypatch: pytest.MonkeyPatch) -> None:
    document = status_document()
    document["watches"][0]["last_action"]["detail"] = f"job 4242 failed in 42s ({LINK})"  # as the AWX actuator says
    lines = assert_readable(draw(render.status, document))
    assert "NOTE" not in lines[0].split()
    watch_column = len(row_of(lines, LONG_NAME[:8]).split()[0])  # as wide as the long name, cut
    assert 6 <= watch_column < 24 and lines[0].index("STATE") == watch_column + 2
    at = lines.index(row_of(lines, "stack-staging"))
    assert lines[at + 1 : at + 3] == [
        " " * (watch_column + 2) + "action #7 failed: job 4242 failed in 42s; next attempt in 5m",
        " " * (watch_column + 2) + LINK,
    ]
    assert "\n".join(lines).count("awx.example.org") == 1  # the note does not repeat the link printed under it
    monkeypatch.setenv("COLUMNS", "160")  # the note in its column: nor does it there
    lines = assert_readable(draw(render.status, document), 160)
    assert lines[0].split()[-1] == "NOTE"
    at = lines.index(row_of(lines, "stack-staging"))
    assert lines[at].endswith("  action #7 failed: job 4242 failed in 42s; next attempt in 5m")
    assert lines[at + 1] == " " * lines[0].index("STATE") + LINK
    assert "\n".join(lines).count("awx.example.org") == 1


def test_the_notes_stay_in_their_column_at_160_columns_and_go_under_their_rows_at_80(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    lines = assert_readable(draw(render.status, status_document()), 160)
    assert lines[0].split() == ["WATCH", "STATE", "OBSERVED", "DEPLOYED", "CHECKED", "NOTE"]
    rows, rest = rows_of(lines, STATUS_ROWS, 160)
    assert rest == [] and len(lines) == 1 + 5 + 1 and all(row.note == () for row in rows)
    column = lines[0].index("NOTE")
    notes = [row.main[column:] for row in rows]
    assert notes[0] == STAGING and notes[2:] == ["observed only", DEPLOYS, DEPLOYS]
    assert notes[1].endswith("…") and LONG_ERROR.startswith(notes[1][:-1]) and len(rows[1].main) == 160
    assert rows[0].link == " " * lines[0].index("STATE") + LINK

    monkeypatch.setenv("COLUMNS", "80")  # the same notes, each under its row
    narrow = assert_readable(draw(render.status, status_document()))
    assert "NOTE" not in narrow[0].split()
    rows = rows_of(narrow, STATUS_ROWS, 80)[0]
    under = [row.said or "" for row in rows]
    assert under[:1] + under[2:] == notes[:1] + notes[2:]  # whole, as they were in the column, on one line each
    assert [len(row.note) for row in rows] == [1, 2, 1, 1, 1]
    assert under[1].endswith("…") and LONG_ERROR.startswith(under[1][:-1]) and len(under[1]) > len(notes[1])


def test_at_80_columns_the_300_character_error_is_two_note_lines_the_second_cut_at_the_width() -> None:
    for function, document, kwargs, first, after, indent in (
        (render.status, status_document(), {}, LONG_NAME[:8], "frontend", 18),
        (render.history, history_document(), {"now": T0}, "4d ago", None, 8),
    ):
        lines = assert_readable(draw(function, document, **kwargs))
        at = lines.index(row_of(lines, first))
        note = lines[at + 1 : at + 3]
        assert note[:1] == [" " * indent + "registry.example.org answered 500 Internal Server Error:"], note
        assert len(note) == 2 and note[1] == " " * indent + "x" * (79 - indent) + "…", note  # the rest, cut at 80
        assert says([line[indent:] for line in note], LONG_ERROR, 80 - indent)
        assert [line for line in lines if "xxx" in line] == note[1:]  # no third line: the rest is cut, not wrapped
        assert lines[at + 3 : at + 4] == ([row_of(lines, after)] if after else [])  # then the next row, or the end


def test_at_80_columns_the_not_found_note_is_whole_on_two_lines_under_its_row() -> None:
    """The registry client's note for a repository it cannot see (114 characters): too long for one line at 80
    columns, short enough for two, in `status` (under the second column, 18) and in `history` (8)."""
    document = status_document()
    document["watches"][2]["last_error"] = NOT_FOUND
    lines = assert_readable(draw(render.status, document))
    specs = tuple((first, NOT_FOUND if first == "frontend" else note, link) for first, note, link in STATUS_ROWS)
    rows, rest = rows_of(lines, specs, 80)
    assert rest == [] and rows[2].note == (
        " " * 18 + "docker.io/xchem/fragalysis-backend: repository not found or",
        " " * 18 + "private (registry docker.io answered 404 NAME_UNKNOWN)",
    )
    assert lines[lines.index(rows[2].main) + 3] == row_of(lines, "release")

    lines = assert_readable(draw(render.history, history_document(error=NOT_FOUND), now=T0))
    rows, rest = rows_of(lines, (*HISTORY_ROWS[:2], ("4d ago", NOT_FOUND, None)), 80)
    assert rest == [] and rows[2].said == NOT_FOUND and lines[-2:] == list(rows[2].note)
    assert rows[2].note == (
        " " * 8 + "docker.io/xchem/fragalysis-backend: repository not found or private",
        " " * 8 + "(registry docker.io answered 404 NAME_UNKNOWN)",
    )


def test_a_note_of_wide_characters_is_cut_at_the_width_in_terminal_cells() -> None:
    document = status_document()
    document["watches"][2]["last_error"] = "レジストリが応答しません" * 6  # 72 characters, 144 cells
    lines = assert_readable(draw(render.status, document))
    note = lines[lines.index(row_of(lines, "frontend")) + 1]
    assert note.strip().startswith("レジストリが") and note.endswith("…") and cell_len(note) == 80
    indent = lines[0].index("STATE")  # one word, longer than the room: one line, cut, never broken
    assert note[:indent] == " " * indent and says([note[indent:]], "レジストリが応答しません" * 6, 80 - indent)
    assert lines[lines.index(note) + 1] == row_of(lines, "release")


def test_status_says_when_the_next_attempt_is_and_shows_notes_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    document = status_document()
    document["watches"][2]["last_error"] = "unexpected [/] in [bold]reply[/bold] :smile:"
    lines = assert_readable(draw(render.status, document), width=160)
    assert row_of(lines, "stack-staging").endswith("action #7 failed: AWX job 4242 failed; next attempt in 5m")
    assert row_of(lines, "frontend").endswith("unexpected [/] in [bold]reply[/bold] :smile:")


@pytest.mark.parametrize("width", [20, 40, 60, 72, 80, 100, 120, 160, 200])
def test_every_row_is_its_line_its_note_and_its_link_at_any_width(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Below 60 columns the fixed columns alone do not fit and rich squeezes the first one away: the rows are then
    checked by their order."""
    monkeypatch.setenv("COLUMNS", str(width))
    lines = assert_readable(draw(render.status, status_document()), width)
    rows, rest = rows_of(lines, STATUS_ROWS, width, firsts=width >= 60)
    assert rest == [] and len(lines) == 1 + 5 + sum(len(row.note) for row in rows) + 1
    if width >= 60:  # a ref keeps its 12 hex digits whole and gives up the start of its tag first
        tag, _, digest = row_of(lines, "release").split()[2].rpartition("@")
        assert digest == "0123456789ab" and (tag in ("", "2026.8.3") or "2026.8.3".endswith(tag.removeprefix("…")))
        assert width != 72 or tag == "…6.8.3"
    lines = assert_readable(draw(render.history, history_document(), now=T0), width)
    rows, rest = rows_of(lines, HISTORY_ROWS, width, firsts=width >= 60)
    assert rest == [] and len(lines) == 1 + 3 + sum(len(row.note) for row in rows) + 1


# --- history --------------------------------------------------------------------------------------------------------


def test_history_at_80_columns_shows_ages_short_digests_and_the_awx_link_whole() -> None:
    lines = assert_readable(draw(render.history, history_document(), now=T0))
    assert lines[0].split() == ["AT", "WATCH", "EVENT", "OBSERVED"]  # DETAIL: too narrow at 80, under each row
    rows, rest = rows_of(lines, HISTORY_ROWS, 80)
    assert rest == [] and len(lines) == 1 + 3 + 4 + 1  # the long error's note on two lines
    action = rows[0].main
    assert action.startswith("2m ago") and "action #7 failed" in action and "latest@fedcba987654" in action
    assert rows[0].note == (" " * 8 + "AWX job 4242 failed",) and rows[0].link == " " * 8 + LINK
    assert lines[1:4] == [action, *rows[0].note, rows[0].link]
    assert rows[1].main.split()[:4] == ["3m", "ago", "stack-staging", "drift"]
    assert rows[1].note == (" " * 8 + "drift reason",)
    old = rows[2]
    assert old.main.startswith("4d ago") and old.main.split()[2].endswith("…") and old.main.endswith("-")
    assert len(old.note) == 2 and old.note[-1].endswith("…") and "xxx" in old.note[-1] and lines[-2:] == list(old.note)
    assert "fedcba9876543" not in "\n".join(lines)


def test_history_ages_are_from_now_which_defaults_to_the_clock() -> None:
    now = datetime.now(UTC)
    lines = assert_readable(draw(render.history, history_document(now)))
    rows, _ = rows_of(lines, HISTORY_ROWS, 80)  # "2m ago", "3m ago", "4d ago"
    assert [row.main.split()[:2] for row in rows] == [["2m", "ago"], ["3m", "ago"], ["4d", "ago"]]
    later = assert_readable(draw(render.history, history_document(now), now=now + timedelta(hours=2)))
    two_hours = tuple(("2h ago" if first != "4d ago" else first, note, link) for first, note, link in HISTORY_ROWS)
    assert rows_of(later, two_hours, 80)[1] == []
    assert draw(render.history, {"events": []}) == "no history yet: run `reconciler reconcile` first\n"


# --- reconcile ------------------------------------------------------------------------------------------------------


def test_a_dry_run_fits_its_table_and_prints_the_exact_request_whole() -> None:
    lines = assert_readable(draw(render.reconcile, reconcile_document(dry_run=True)))
    assert lines[0].split() == ["WATCH", "DECISION", "OBSERVED", "DEPLOYED"]  # REASON: too narrow, under each row
    rows, rest = rows_of(lines, tuple((name, DRIFT, None) for name in ("stack-staging", "database", LONG_NAME)), 80)
    assert [row.main.split()[1:4] for row in rows] == [["drift", "fedcba987654", "0123456789ab"]] * 3
    # the reason, whole on two lines (the long name takes room); what it would do follows
    assert [row.said for row in rows] == [DRIFT] * 3 and all(len(row.note) == 2 for row in rows)
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
    reason = f"{DRIFT}; {STAGING}"
    specs = tuple((name, reason, LINK) for name in ("stack-staging", "database", LONG_NAME))
    rows, rest = rows_of(lines, specs, 80)
    assert [row.link for row in rows] == [" " * lines[0].index("DECISION") + LINK] * 3
    assert all(len(row.note) == 2 and row.note[-1].endswith("…") for row in rows)  # the reason and the action, cut
    assert len(lines) == 1 + 3 * 4 + 1 and rest == [lines[-1]]
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
    url = f"sqlite:///{tmp_path / 'reconciler.db'}"
    now = datetime.now(UTC)
    staging, long = watch("stack-staging"), watch(LONG_NAME, action=None)
    engine = database.database_engine(url)
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
    path.write_text(CONFIG.format(database=url, long_name=LONG_NAME), encoding="utf-8")
    return path


def _cli(config: Path, *args: str, columns: int = 80) -> str:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RECONCILER_", "AWX_", "NO_COLOR", "FORCE_COLOR", "TTY_"))
    }
    env.update(COLUMNS=str(columns), TEST_AWX_TOKEN="t")
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
    # the retry is due 5 minutes after the fixture ran: "in 5m", or "in 4m" once a second has passed
    retry = tuple(f"action #1 failed: AWX job 4242 failed; next attempt in {minutes}m" for minutes in (5, 4))
    lines = assert_readable(status, width)
    rows, rest = rows_of(lines, (("stack-staging", retry, LINK), (LONG_NAME, LONG_ERROR, None)), width)
    assert rest == [] and len(lines) == 1 + 2 + sum(len(row.note) for row in rows) + 1
    assert rows[0].main.split()[1:6] == ["failed", "fedcba987654", "0123456789ab", "3m", "ago"]
    long = rows[1].main
    assert long.split()[0].endswith("…") and long.split()[1] == "error" and (rows[1].note or (long,))[-1].endswith("…")
    lines = assert_readable(history, width)
    others: tuple[Spec, ...] = tuple((age, ..., None) for age in ("3m ago", "3m ago", "20m ago", "20m ago"))
    rows, rest = rows_of(lines, (("2m ago", "AWX job 4242 failed", LINK), *others), width)
    assert rest == [] and "action #1 failed" in rows[0].main
    (error,) = [line for line in lines if "xxx" in line]  # the 300-character error: cut, at most two lines
    assert error.endswith("…") and error in [(row.note or (row.main,))[-1] for row in rows]


def test_status_and_history_through_the_cli_keep_their_notes_in_their_column_at_200(filled: Path) -> None:
    status, history = _cli(filled, "status", columns=200), _cli(filled, "history", columns=200)
    assert status.splitlines()[0].split()[-1] == "NOTE" and history.splitlines()[0].split()[-1] == "DETAIL"
    _check_cli_tables(status, history, width=200)


def test_through_the_cli_no_line_is_wider_than_columns(filled: Path) -> None:
    """The CLI prints with `render.console()`, so $COLUMNS holds in a pipe too (its old console was 200 wide)."""
    status, history = _cli(filled, "status"), _cli(filled, "history")
    assert "NOTE" not in status.splitlines()[0] and "DETAIL" not in history.splitlines()[0]  # under their rows
    _check_cli_tables(status, history, width=80)


@pytest.fixture
def main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., str]]:
    """`cli.main` in-process, so that a monkeypatch of `render` holds: its standard output, with the environment of
    `_cli` (no RECONCILER_ or AWX_ variable, TEST_AWX_TOKEN set)."""
    root, level = logging.getLogger(), logging.getLogger().level
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # cli.main sets its own handler up: undone after
    for name in [k for k in os.environ if k.startswith(("RECONCILER_", "AWX_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TEST_AWX_TOKEN", "t")

    def run(config: Path, *args: str) -> str:
        monkeypatch.chdir(config.parent)
        assert cli.main(["--config", str(config), *args]) == 0
        return capsys.readouterr().out

    yield run
    root.setLevel(level)


def test_the_cli_with_render_console_fits_80_columns(filled: Path, main: Callable[..., str]) -> None:
    """The same in-process: `render.console()` finds the standard output at the time it prints."""
    _check_cli_tables(main(filled, "status"), main(filled, "history"), width=80)


FRESH = """
[reconciler]
database = "{database}"

[awx.production]
url = "https://awx.example.org"
token_env = "AWX_TOKEN"

[[watch]]
name = "{staging}"
image = "xchem/fragalysis-stack"
tag = "latest"
[watch.action]
kind = "awx"
awx = "production"
template = "Staging Fragalysis Stack"

[[watch]]
name = "stack-production"
image = "xchem/fragalysis-stack"
tags = "release"
[watch.action]
kind = "awx"
awx = "production"
template = "Production Fragalysis Stack"

[[watch]]
name = "frontend"
image = "xchem/fragalysis-frontend"
tag = "latest"
"""


def test_at_80_columns_a_fresh_status_shows_why_a_watch_cannot_act_whole_under_its_row(
    tmp_path: Path, main: Callable[..., str]
) -> None:
    """The first `status`, before any check, AWX_TOKEN not set: every watch `unknown`, the notes say why the AWX
    watches cannot act. The note column would cut them (it has 24 cells at 80 columns, the note 59 characters):
    they go under their rows, whole on one line; when a long watch name takes room, whole on two."""
    for staging, lines_of_note in (("stack-staging", 1), (LONG_NAME, 2)):
        config = tmp_path / f"{lines_of_note}.toml"
        database = f"sqlite:///{tmp_path / f'fresh-{lines_of_note}.db'}"
        config.write_text(FRESH.format(database=database, staging=staging), encoding="utf-8")
        lines = assert_readable(main(config, "status"))
        assert lines[0].split() == ["WATCH", "STATE", "OBSERVED", "DEPLOYED", "CHECKED"]  # NOTE: it would cut them
        specs = (
            (staging, CANNOT_ACT, None),
            ("stack-production", CANNOT_ACT, None),
            ("frontend", "observed only", None),
        )
        rows, rest = rows_of(lines, specs, 80)
        assert rest == [] and [row.main.split()[-4:] for row in rows] == [["unknown", "-", "-", "never"]] * 3
        assert [row.said for row in rows] == [CANNOT_ACT, CANNOT_ACT, "observed only"]
        assert [len(row.note) for row in rows] == [lines_of_note, lines_of_note, 1]
        assert len(lines) == 1 + 3 + 2 * lines_of_note + 1


@pytest.mark.parametrize(
    ("moment", "shown"),
    [
        (datetime(2026, 11, 28, 9, 5, 7, 999999, tzinfo=UTC), "2026-11-28T09:05:07Z"),  # seconds, not rounded
        (datetime(2026, 11, 28, 1, 2, 3, tzinfo=timezone(timedelta(hours=13, minutes=45))), "2026-11-27T11:17:03Z"),
        (datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC), "0999-01-02T03:04:05Z"),
        (None, None),
    ],
)
def test_a_time_in_a_document_is_utc_to_the_second_with_a_z(moment: datetime | None, shown: str | None) -> None:
    assert report.iso(moment) == shown
    if moment is not None:  # what the documents always said: isoformat's, in UTC, without "+00:00"
        assert shown == moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- the layout by hand, against rich's ---------------------------------------------------------------------------


def _styled(lines: Sequence[columns.Line]) -> list[list[tuple[str, str]]]:
    """Each line as (character, style) pairs. A space's style only where it shows on a space (a background, reverse,
    a line through or under it, a link): bold or coloured, a space is a space."""

    def seen(char: str, style: Style | None) -> str:
        if style is None or (char == " " and not _shows_on_a_space(style)):
            return ""
        return str(style)

    return [[(char, seen(char, segment.style)) for segment in line for char in segment.text] for line in lines]


def _shows_on_a_space(style: Style) -> bool:
    return bool(style.bgcolor or style.reverse or style.underline or style.strike or style.overline or style.link)


def _random_rows(seed: int) -> list[list[columns.Cell]]:
    pick = random.Random(seed)
    words = ["staging", "production", "a" * 40, "漢字の名前", "🙂 ok", "[bold]not markup[/]", "x", "tab\there", ""]
    styles = ["green", "red", "", "reverse", "on red", "underline", "dim", Style(link="https://awx.example.org/#/1")]
    rows: list[list[columns.Cell]] = []
    for _ in range(12):
        state = Text(pick.choice(["in_sync", "failed", "awaiting_approval", "a\tb", "two\nlines"]))
        state.style = pick.choice(styles)
        if pick.random() < 0.3:
            state.stylize(pick.choice(styles) or "bold", 0, 2)
        if pick.random() < 0.2:
            state.justify = "right"
        ref = (pick.choice(["latest", "2026.08.3", "a-very-long-tag-name-" * 2, ""]), "0123456789ab")
        note = " ".join(pick.choice(words) for _ in range(pick.randint(0, 12)))
        rows.append([pick.choice(words) or "w", state, ref, pick.choice([ref, "-"]), "5m ago", note])
    return rows


@pytest.mark.parametrize("width", [60, 72, 80, 100, 120, 160, 200])
def test_the_table_laid_out_by_hand_is_the_one_rich_lays_out(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """`columns` lays a table out itself when its columns fit the width (rich's Table took 2.7 s over 10,000 rows):
    the same characters in the same styles as rich's, for the tables of every document and for random cells of
    wide characters, emoji, markup-like text, styled spans and cut refs, on a terminal and on a pipe."""
    monkeypatch.setenv("COLUMNS", str(width))
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(render, "table", lambda *args: calls.append(args) or columns.table(*args))
    for function, document, kwargs in (
        (render.status, status_document(), {}),
        (render.history, history_document(), {"now": T0}),
        (render.reconcile, reconcile_document(dry_run=True), {}),
        (render.reconcile, reconcile_document(dry_run=False), {}),
    ):
        draw(function, document, **kwargs)
    headers = ("WATCH", "STATE", "OBSERVED", "DEPLOYED", "CHECKED", "NOTE")
    tables = [(headers, _random_rows(seed)) for seed in range(20)] + [(c[1], c[2]) for c in calls]
    assert len(calls) == 4
    compared = 0
    for stream in (Terminal(), io.StringIO()):
        console = render.console(stream)
        for headers, rows in tables:
            widths = columns._widths(console.width, headers, rows)
            if sum(widths) + columns.GAP * (len(widths) - 1) > console.width:
                continue  # rich squeezes what does not fit: it lays those out
            by_hand = columns._by_hand(console, headers, rows, widths)
            assert _styled(by_hand) == _styled(columns._by_rich(console, headers, rows, widths)), (width, headers)
            compared += 1
    assert compared >= 2 * 20  # the random tables, at least, fit from 60 columns

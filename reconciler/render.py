"""Readable tables for the terminal, rendered with `rich` from the same documents `--json` prints, so the two
never disagree. Only presentation: no decisions, no I/O beyond the console.

`console()` is the one console the CLI prints tables to:

- On a terminal (rich's detection, which also honours FORCE_COLOR and TTY_COMPATIBLE): rich's width (`$COLUMNS`
  when it is a number, else the terminal's) and colour.
- With `NO_COLOR` set to anything but "" (no-color.org), or when the output is not a terminal: no escape codes at
  all, no colour, bold or hyperlinks.
- Not a terminal: `$COLUMNS` when it is a number, else PIPE_WIDTH (160). A fixed width, not whatever terminal
  happens to be near, so a file, a CI log or `grep` always gets the same lines; 160 keeps names, refs, ages and
  most notes whole. `COLUMNS=80 reconciler status | less` fits a narrow pager; `--json` has everything.

Every row is one line, with at most two under it: digests show 12 hex digits (the tag only when it says something
the watch does not: a `tag:latest` watch always sees `latest`), times are ages from the document's `generated_at`
("3m ago", "in 5m"), and names and notes that do not fit are cut with "…", never wrapped. A note column too
narrow for its notes (under NOTE_ROOM) gives way to each note under its row, wrapped at spaces onto at most
NOTE_LINES lines, cut with "…". A link is printed whole on a line of its own under its row, and the exact request
of a dry run whole as it would be sent (these may be longer than the width: the terminal wraps them, nothing is
cut or inserted). No line ends with a space.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import IO, Any

from rich.cells import cell_len
from rich.console import Console
from rich.segment import Segment, Segments
from rich.style import Style
from rich.table import Table
from rich.text import Text

PIPE_WIDTH = 160
KINDS = {"WATCH": "name", "OBSERVED": "ref", "DEPLOYED": "ref", "NOTE": "note", "REASON": "note", "DETAIL": "note"}
NOTE_ROOM = 60  # a note column narrower than this (and than its longest note) cuts notes short: they go under
NOTE_LINES = 2  # at most this many lines of a note under its row
WIDEST = {"name": 24, "ref": 32}  # a longer watch name ends in "…"; so does the start of a longer tag
# A line too long: notes give way first, then names, then refs lose their tag's start ("fixed" columns never do).
SHRINK = (("note", 12), ("name", 12), ("note", 6), ("ref", 12), ("name", 6), ("note", 1), ("name", 1))
STATE_STYLE = {
    "in_sync": "green",
    "settling": "yellow",
    "drifted": "yellow",
    "deploying": "cyan",
    "awaiting_approval": "magenta",
    "failed": "red",
    "error": "red",
    "unknown": "dim",
}
Line = list[Segment]
Cell = str | Text | tuple[str, str]  # a ref is (tag, 12 hex digits)


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """The reader of the output went away (`… | head -1`): raise, so that the CLI says so in one line and
        exits 141, where rich would exit 1 without a word."""
        self.quiet = True
        raise BrokenPipeError


def console(stream: IO[str] | None = None) -> Console:
    """The console for the tables on `stream` (default: standard output), by the rules of the module docstring."""
    columns = os.environ.get("COLUMNS", "")
    width = int(columns) if columns.isdigit() and int(columns) > 0 else None
    detected = Console(file=stream, highlight=False)
    if detected.is_terminal:
        width = width or (detected.width if detected.width > 0 else 80)
        if os.environ.get("NO_COLOR", "") == "":
            return _Console(file=stream, width=width, highlight=False)
    return _Console(file=stream, width=width or PIPE_WIDTH, no_color=True, color_system=None, highlight=False)


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).astimezone(UTC)


def _age(text: str | None, now: datetime) -> str:
    """'12s ago', '3m ago', '2h ago', '4d ago'; 'in 5m' for a time to come; 'never' for none."""
    moment = _moment(text)
    if moment is None:
        return "never"
    seconds = int((now - moment).total_seconds())
    span = abs(seconds)
    size, unit = next(((size, unit) for size, unit in ((86400, "d"), (3600, "h"), (60, "m")) if span >= size), (1, "s"))
    shown = f"{span // size}{unit}"
    return f"in {shown}" if seconds < 0 else f"{shown} ago"


def _implied_tag(selector: str | None) -> str | None:
    return selector.removeprefix("tag:") if selector and selector.startswith("tag:") else None


def _ref(part: dict[str, Any] | None, implied: str | None = None) -> Cell:
    """(tag, 12 hex digits) of an image; the tag is "" when the watch implies it (`tag:latest` always sees latest)."""
    if not part or not part.get("digest"):
        return "-"
    tag = part.get("tag") or ""
    return ("" if tag == implied else tag, str(part["digest"]).split(":", 1)[-1][:12])


def _link(ref: str | None) -> str | None:
    return ref if ref and "://" in ref else None


def _approval(action: dict[str, Any], now: datetime | None, watch: str) -> str:
    """`waiting: reconciler approve …`, or who approved or rejected it and when."""
    approval = action.get("approval")
    if not approval:
        return ""
    if approval["state"] == "waiting":
        if action["status"] != "awaiting_approval":
            return ""
        short = str(action["digest"]).split(":", 1)[-1][:12]
        return f"; approve: `reconciler approve {watch} --digest {short}` (or reject)"
    when = f" {_age(approval['at'], now)}" if now is not None and approval.get("at") else ""
    return f"; {approval['state']} by {approval['by']}{when}"


def _action(action: dict[str, Any], now: datetime | None = None, watch: str = "WATCH") -> str:
    text = f"action #{action['id']} {action['status']}{_approval(action, now, watch)}"
    if action.get("detail"):
        text += f": {action['detail']}"
    elif action.get("ref") and not _link(action["ref"]):
        text += f" (ref {action['ref']})"
    if now is not None and action.get("next_attempt_at"):
        text += f"; next attempt {_age(action['next_attempt_at'], now)}"
    return text


def _show(cell: Cell, width: int | None = None) -> Text:
    """A cell as one line of text: a ref keeps its 12 hex digits whole and gives up the start of its tag first
    (`…08.4@0123456789ab`, or no tag at all); anything else is cut at its end with "…" by rich."""
    if isinstance(cell, tuple):
        tag, digest = cell
        room = (width or len(tag) + len(digest) + 1) - len(digest) - 1
        if tag and len(tag) > room:
            tag = "…" + tag[1 - room :] if room >= 4 else ""
        cell = f"{tag}@{digest}" if tag else digest
    text = cell if isinstance(cell, Text) else Text(" ".join(cell.split()))
    text.no_wrap, text.overflow = True, "ellipsis"
    return text


def _widths(width: int, headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> list[int]:
    """Each column's width: what its longest cell needs, then, while the line is too long, narrowed in the order of
    SHRINK (the widest column of a kind first); the others keep their width."""
    kinds = [KINDS.get(header, "fixed") for header in headers]
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(w, _show(cell).cell_len) for w, cell in zip(widths, row, strict=True)]
    widths = [min(w, WIDEST.get(kind, w)) for w, kind in zip(widths, kinds, strict=True)]
    room = width - 2 * (len(headers) - 1)
    for kind, floor in SHRINK:
        while sum(widths) > room:
            narrower = [i for i, k in enumerate(kinds) if k == kind and widths[i] > floor]
            if not narrower:
                break
            widths[max(narrower, key=widths.__getitem__)] -= 1
    return widths


def _rstrip(line: Line) -> Line:
    kept = list(line)
    while kept and not kept[-1].control and not kept[-1].text.rstrip():
        kept.pop()
    if kept and not kept[-1].control:
        kept[-1] = Segment(kept[-1].text.rstrip(), kept[-1].style)
    return kept


def _under(text: str, indent: int, width: int) -> list[Line]:
    """A note under its row, from the second column: wrapped at spaces onto at most NOTE_LINES lines, the last cut
    with "…" at the width, where it stops (widths in terminal cells, as rich cuts the columns: a wide character
    takes two). A word wider than the room is cut, never broken onto the next line."""
    room = max(width - indent, 1)
    words, lines = text.split(), list[str]()
    while words and len(lines) < NOTE_LINES:
        line = words.pop(0)
        while words and cell_len(line) + 1 + cell_len(words[0]) <= room:
            line += " " + words.pop(0)
        if len(lines) == NOTE_LINES - 1 and words:  # the last line left: the rest of the note, cut
            line, words = " ".join([line, *words]), []
        lines.append(line)
        if cell_len(line) > room:
            break  # cut here: what follows would not continue it
    shown = []
    for line in lines or [""]:
        note = Text(line)
        note.truncate(room, overflow="ellipsis")
        shown.append([Segment(" " * indent + note.plain)])
    return shown


def _table(
    console: Console, headers: Sequence[str], rows: Sequence[Sequence[Cell]], links: Sequence[str | None]
) -> list[Line]:
    """The table's lines: each row's line, then its link (if any) whole, under the second column. When the last
    column (a note) would be too narrow to say anything, each note goes on a line under its row instead."""
    if KINDS.get(headers[-1]) == "note":  # the link follows whole: the note need not repeat it
        rows = [
            [*row[:-1], row[-1].replace(f" ({link})", "") if link and isinstance(row[-1], str) else row[-1]]
            for row, link in zip(rows, links, strict=True)
        ]
    widths = _widths(console.width, headers, rows)
    notes: list[str] = []
    wanted = max((_show(row[-1]).cell_len for row in rows), default=0)
    if KINDS.get(headers[-1]) == "note" and widths[-1] < min(wanted, NOTE_ROOM):  # a note would be cut short
        notes = [_show(row[-1]).plain for row in rows]
        headers, rows = headers[:-1], [row[:-1] for row in rows]
        widths = _widths(console.width, headers, rows)
    table = Table(box=None, header_style="bold", pad_edge=False, show_edge=False)
    for header, width in zip(headers, widths, strict=True):
        table.add_column(_show(header), width=width, no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(*(_show(cell, width) for cell, width in zip(row, widths, strict=True)))
    lines = [_rstrip(line) for line in console.render_lines(table, pad=False)]
    shown = lines[:1]
    for i, (line, link) in enumerate(zip(lines[1:], links, strict=True)):
        shown.append(line)
        if notes and notes[i] not in ("", "-"):
            shown += _under(notes[i], widths[0] + 2, console.width)
        if link:
            indent = max(0, min(widths[0] + 2, console.width - len(link)))
            shown.append([Segment(" " * indent), Segment(link, Style(link=link))])
    return shown


def _prose(console: Console, text: str, indent: str = "") -> list[Line]:
    """Words wrapped to the width; a longer word (a URL, a path) is never broken but printed whole."""
    wrapped = textwrap.wrap(
        text, console.width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )
    return [[Segment(line.rstrip())] for line in wrapped or [""]]


def _write(console: Console, lines: Iterable[Line]) -> None:
    segments = [segment for line in lines for segment in (*line, Segment.line())]
    console.print(Segments(segments), end="", soft_wrap=True)


def status(console: Console, document: dict[str, Any]) -> None:
    now = _moment(document["generated_at"]) or datetime.now(UTC)
    rows: list[list[Cell]] = []
    links: list[str | None] = []
    for w in document["watches"]:
        implied, action = _implied_tag(w.get("selector")), w["last_action"]
        note = w["last_error"] or (f"cannot act: {w['cannot_act']}" if w.get("cannot_act") else None)
        note = note or (_action(action, now, w["name"]) if action else None) or w["deploys_via"] or "observed only"
        state = Text(w["state"], style=STATE_STYLE.get(w["state"], ""))
        observed, deployed = _ref(w["observed"], implied), _ref(w["deployed"], implied)
        rows.append([w["name"], state, observed, deployed, _age(w["checked_at"], now), note])
        # the job to look at while it runs or after it failed; `history` links every action
        links.append(_link(action["ref"]) if action and action["status"] in ("planned", "launched", "failed") else None)
    headers = ("WATCH", "STATE", "OBSERVED", "DEPLOYED", "CHECKED", "NOTE")
    lines = _table(console, headers, rows, links)
    for target, waiting in document.get("notifications", {}).items():  # only a target that is behind is named
        if waiting.get("cannot_send"):
            lines += _prose(console, f"notifications to {target} cannot be sent: {waiting['cannot_send']}")
        if waiting["undelivered"]:
            retry = f", next try {_age(waiting['next_attempt_at'], now)}" if waiting["next_attempt_at"] else ""
            why = f": {waiting['last_error']}" if waiting["last_error"] else ""
            behind = f"{waiting['undelivered']} not delivered yet (oldest {_age(waiting['oldest_at'], now)})"
            lines += _prose(console, f"notifications to {target}: {behind}{retry}{why}")
        if waiting["dropped"]:
            lines += _prose(console, f"notifications to {target}: {waiting['dropped']} dropped after a day of retries")
    _write(console, lines)


def reconcile(console: Console, document: dict[str, Any]) -> None:
    now = _moment(document["generated_at"]) or datetime.now(UTC)
    rows: list[list[Cell]] = []
    links: list[str | None] = []
    for w in document["watches"]:
        reason, action, implied = w["decision"]["reason"], w["action"], _implied_tag(w.get("selector"))
        if action and action["status"] != "would_act":  # what it would do is printed below the table, whole
            reason += f"; {_action(action, now, w['name'])}"
        verdict = Text(w["decision"]["verdict"], style=STATE_STYLE.get(w["state"], ""))
        rows.append([w["name"], verdict, _ref(w["observed"], implied), _ref(w["deployed"], implied), reason])
        links.append(_link(action.get("ref")) if action else None)
    lines = _table(console, ("WATCH", "DECISION", "OBSERVED", "DEPLOYED", "REASON"), rows, links)
    for w in document["watches"]:
        action = w["action"]
        if not action or action["status"] != "would_act":
            continue
        gate = " once approved (it needs approval)" if "needs approval" in w["decision"]["reason"] else ""
        lines += _prose(console, f"{w['name']} would act{gate}: {action['target']}", "  ")
        if "error" in action:
            lines += _prose(console, f"{w['name']}: cannot tell the exact request: {action['error']}", "  ")
            continue
        request = action["request"]
        where = request.get("url") or request.get("path")
        kind = f" ({request['content_type']})" if request.get("content_type") else ""
        # the request exactly as it would be sent: never cut nor re-wrapped, however long a line
        lines.append([Segment(f"{w['name']} would send: {request['method']} {where}{kind}")])
        lines += [[Segment(line.rstrip())] for line in json.dumps(request["body"], indent=2).splitlines()]
    lines += _prose(console, ("dry run, nothing written: " if document["dry_run"] else "") + document["summary"])
    _write(console, lines)


def history(console: Console, document: dict[str, Any], *, now: datetime | None = None) -> None:
    """`history` has no `generated_at`: its ages are from `now` (default: the clock's)."""
    if not document["events"]:
        _write(console, _prose(console, "no history yet: run `reconciler reconcile` first"))
        return
    now = (now or datetime.now(UTC)).astimezone(UTC)  # a naive `now` is local time, as datetime.now() gives
    rows: list[list[Cell]] = []
    links: list[str | None] = []
    for e in document["events"]:
        action = e["action"] if e["type"] == "action" else None
        if action:
            event = f"action #{action['id']} {action['status']}"
            detail = action["detail"] or (f"ref {action['ref']}" if action["ref"] and not _link(action["ref"]) else "")
            detail = (detail + _approval(action, now, e["watch"])).removeprefix("; ") or "-"
        else:
            event, detail = e["verdict"], e["error"] or e["reason"] or "-"
        rows.append([_age(e["at"], now), e["watch"], event, _ref(e), detail])
        links.append(_link(action["ref"]) if action else None)
    _write(console, _table(console, ("AT", "WATCH", "EVENT", "OBSERVED", "DETAIL"), rows, links))

"""Text laid out in columns for the terminal with `rich`: the tables, and the words around them, that
`reconciler/render.py` makes from the documents (it decides what each cell says; this module only where it goes).

Every row is one line, with at most two under it: a column is as wide as its longest cell, up to WIDEST for its
kind; a line too long narrows the columns in the order of SHRINK; names and notes that do not fit are cut with "…",
never wrapped, and a ref gives up the start of its tag before any of its 12 hex digits. A note column too narrow for
its notes (under NOTE_ROOM) gives way to each note under its row, wrapped at spaces onto at most NOTE_LINES lines,
cut with "…". A link is printed whole on a line of its own under its row (it may be longer than the width: the
terminal wraps it, nothing is cut or inserted), and prose is wrapped at spaces, a longer word never broken. No line
ends with a space. The columns are laid out here, cell by cell, as rich's Table lays them out (a test holds the two
together); rich's Table itself only when even the narrowest columns do not fit the width, and it squeezes them.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence

from rich.cells import cell_len
from rich.console import Console
from rich.segment import Segment, Segments
from rich.style import Style
from rich.text import Text

KINDS = {"WATCH": "name", "OBSERVED": "ref", "DEPLOYED": "ref", "NOTE": "note", "REASON": "note", "DETAIL": "note"}
NOTE_ROOM = 60  # a note column narrower than this (and than its longest note) cuts notes short: they go under
NOTE_LINES = 2  # at most this many lines of a note under its row
WIDEST = {"name": 24, "ref": 32}  # a longer watch name ends in "…"; so does the start of a longer tag
# A line too long: notes give way first, then names, then refs lose their tag's start ("fixed" columns never do).
SHRINK = (("note", 12), ("name", 12), ("note", 6), ("ref", 12), ("name", 6), ("note", 1), ("name", 1))
GAP = 2  # spaces between two columns
Line = list[Segment]
Cell = str | Text | tuple[str, str]  # a ref is (tag, 12 hex digits)


def _show(cell: Cell, width: int | None = None) -> Text:
    """A cell as one line of text: a ref keeps its 12 hex digits whole and gives up the start of its tag first
    (`…08.4@0123456789ab`, or no tag at all); anything else is cut at its end with "…" by rich."""
    if isinstance(cell, tuple):
        tag, digest = cell
        room = (width or len(tag) + len(digest) + 1) - len(digest) - 1
        if tag and len(tag) > room:
            tag = "…" + tag[1 - room :] if room >= 4 else ""
        cell = f"{tag}@{digest}" if tag else digest
    if isinstance(cell, Text):
        text = cell
        if "\t" in text.plain or "\n" in text.plain:  # one line, as a string's; its spans keep their places
            text = text.copy()
            text.plain = text.plain.replace("\t", " ").replace("\n", " ")
    else:
        text = Text(" ".join(cell.split()))
    text.no_wrap, text.overflow, text.justify = True, "ellipsis", "left"
    return text


def _widths(width: int, headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> list[int]:
    """Each column's width: what its longest cell needs, then, while the line is too long, narrowed in the order of
    SHRINK (the widest column of a kind first); the others keep their width."""
    kinds = [KINDS.get(header, "fixed") for header in headers]
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(w, _show(cell).cell_len) for w, cell in zip(widths, row, strict=True)]
    widths = [min(w, WIDEST.get(kind, w)) for w, kind in zip(widths, kinds, strict=True)]
    room = width - GAP * (len(headers) - 1)
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


def table(
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
    laid = _by_hand if sum(widths) + GAP * (len(widths) - 1) <= console.width else _by_rich
    lines = laid(console, headers, rows, widths)
    shown = lines[:1]
    for i, (line, link) in enumerate(zip(lines[1:], links, strict=True)):
        shown.append(line)
        if notes and notes[i] not in ("", "-"):
            shown += _under(notes[i], widths[0] + 2, console.width)
        if link:
            indent = max(0, min(widths[0] + 2, console.width - len(link)))
            shown.append([Segment(" " * indent), Segment(link, Style(link=link))])
    return shown


def _by_hand(console: Console, headers: Sequence[str], rows: Sequence[Sequence[Cell]], widths: list[int]) -> list[Line]:
    """The lines `_by_rich` lays out, when the columns fit the width: each cell cut to its column with "…" and
    padded, GAP spaces between columns; the header bold. Ten times faster than rich's Table (which measures and
    pads each cell through several renderables): `status` over 10,000 watches took 2.7 s to lay out."""
    header = [Text(header, style="bold") for header in headers]
    return [_line(console, cells, widths) for cells in (header, *rows)]


def _line(console: Console, cells: Sequence[Cell], widths: Sequence[int]) -> Line:
    line: Line = []
    for i, (cell, width) in enumerate(zip(cells, widths, strict=True)):
        if i:
            line.append(Segment(" " * GAP))
        text = _show(cell, width)
        text = text.copy() if text is cell else text  # a cell given as Text is the caller's: not cut in place
        text.truncate(width, pad=True)  # padded in its own style, as rich pads a cell
        segments = text.render(console)  # its spans' styles; the style of the whole text, as rich adds it:
        style = console.get_style(text.style, default=Style.null()) if text.style else None
        line += Segment.apply_style(segments, style) if style else segments
    return _rstrip(line)


def _by_rich(console: Console, headers: Sequence[str], rows: Sequence[Sequence[Cell]], widths: list[int]) -> list[Line]:
    """The table laid out by rich: when even the narrowest columns do not fit the width, rich squeezes them."""
    from rich.table import Table  # noqa: PLC0415  (~3 ms to import: for a console of fewer than ~60 columns)

    table = Table(box=None, header_style="bold", pad_edge=False, show_edge=False)
    for header, width in zip(headers, widths, strict=True):
        table.add_column(_show(header), width=width, no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(*(_show(cell, width) for cell, width in zip(row, widths, strict=True)))
    return [_rstrip(line) for line in console.render_lines(table, pad=False)]


def prose(console: Console, text: str, indent: str = "") -> list[Line]:
    """Words wrapped to the width; a longer word (a URL, a path) is never broken but printed whole."""
    wrapped = textwrap.wrap(
        text, console.width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )
    return [[Segment(line.rstrip())] for line in wrapped or [""]]


def write(console: Console, lines: Iterable[Line]) -> None:
    segments = [segment for line in lines for segment in (*line, Segment.line())]
    console.print(Segments(segments), end="", soft_wrap=True)

"""Readable tables for the terminal, rendered with `rich` from the same documents `--json` prints, so the two
never disagree. Only presentation: no decisions, no I/O beyond the console. This module says what each cell of the
`status`, `reconcile` and `history` tables shows and what is printed around them; `reconciler/columns.py` lays them
out in columns (widths, cutting with "…", notes under their rows).

`console()` is the one console the CLI prints tables to:

- On a terminal (rich's detection, which also honours FORCE_COLOR and TTY_COMPATIBLE): rich's width (`$COLUMNS`
  when it is a number, else the terminal's) and colour.
- With `NO_COLOR` set to anything but "" (no-color.org), or when the output is not a terminal: no escape codes at
  all, no colour, bold or hyperlinks.
- Not a terminal: `$COLUMNS` when it is a number, else PIPE_WIDTH (160). A fixed width, not whatever terminal
  happens to be near, so a file, a CI log or `grep` always gets the same lines; 160 keeps names, refs, ages and
  most notes whole. `COLUMNS=80 reconciler status | less` fits a narrow pager; `--json` has everything.

Digests show 12 hex digits (the tag only when it says something the watch does not: a `tag:latest` watch always
sees `latest`), times are ages from the document's `generated_at` ("3m ago", "in 5m"), an action's link goes under
its row, and a dry run prints the exact request whole as it would be sent (it may be longer than the width: the
terminal wraps it, nothing is cut or inserted). No line ends with a space.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import IO, Any

from rich.console import Console
from rich.segment import Segment
from rich.text import Text

from reconciler.columns import Cell, prose, table, write

PIPE_WIDTH = 160
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
    lines = table(console, headers, rows, links)
    for target, waiting in document.get("notifications", {}).items():  # only a target that is behind is named
        if waiting.get("cannot_send"):
            lines += prose(console, f"notifications to {target} cannot be sent: {waiting['cannot_send']}")
        if waiting["undelivered"]:
            retry = f", next try {_age(waiting['next_attempt_at'], now)}" if waiting["next_attempt_at"] else ""
            why = f": {waiting['last_error']}" if waiting["last_error"] else ""
            behind = f"{waiting['undelivered']} not delivered yet (oldest {_age(waiting['oldest_at'], now)})"
            lines += prose(console, f"notifications to {target}: {behind}{retry}{why}")
        if waiting["dropped"]:
            lines += prose(console, f"notifications to {target}: {waiting['dropped']} dropped after a day of retries")
    write(console, lines)


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
    lines = table(console, ("WATCH", "DECISION", "OBSERVED", "DEPLOYED", "REASON"), rows, links)
    for w in document["watches"]:
        action = w["action"]
        if not action or action["status"] != "would_act":
            continue
        gate = " once approved (it needs approval)" if "needs approval" in w["decision"]["reason"] else ""
        lines += prose(console, f"{w['name']} would act{gate}: {action['target']}", "  ")
        if "error" in action:
            lines += prose(console, f"{w['name']}: cannot tell the exact request: {action['error']}", "  ")
            continue
        request = action["request"]
        where = request.get("url") or request.get("path")
        kind = f" ({request['content_type']})" if request.get("content_type") else ""
        # the request exactly as it would be sent: never cut nor re-wrapped, however long a line
        lines.append([Segment(f"{w['name']} would send: {request['method']} {where}{kind}")])
        lines += [[Segment(line.rstrip())] for line in json.dumps(request["body"], indent=2).splitlines()]
    lines += prose(console, ("dry run, nothing written: " if document["dry_run"] else "") + document["summary"])
    write(console, lines)


def history(console: Console, document: dict[str, Any], *, now: datetime | None = None) -> None:
    """`history` has no `generated_at`: its ages are from `now` (default: the clock's)."""
    if not document["events"]:
        write(console, prose(console, "no history yet: run `reconciler reconcile` first"))
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
    write(console, table(console, ("AT", "WATCH", "EVENT", "OBSERVED", "DETAIL"), rows, links))

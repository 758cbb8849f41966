"""Readable tables for the terminal, rendered with `rich` from the same documents `--json` prints, so the two
never disagree. Only presentation: no decisions, no I/O beyond the console handed in.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

STATE_STYLE = {
    "in_sync": "green",
    "settling": "yellow",
    "drifted": "yellow",
    "deploying": "cyan",
    "failed": "red",
    "error": "red",
    "unknown": "dim",
}


def _ref(part: dict[str, Any] | None) -> str:
    if not part:
        return "-"
    return f"{part['tag']}@{part['digest'].removeprefix('sha256:')[:12]}"


def _table(*columns: str) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def status(console: Console, document: dict[str, Any]) -> None:
    table = _table("WATCH", "STATE", "OBSERVED", "DEPLOYED", "CHECKED", "NOTE")
    for w in document["watches"]:
        observed = w["observed"]
        note = w["last_error"] or w["deploys_via"] or "observed only"
        style = STATE_STYLE.get(w["state"], "")
        table.add_row(
            w["name"],
            f"[{style}]{w['state']}[/]",
            _ref(observed),
            _ref(w["deployed"]),
            w["checked_at"] or "never",
            note,
        )
    console.print(table)


def reconcile(console: Console, document: dict[str, Any]) -> None:
    table = _table("WATCH", "DECISION", "OBSERVED", "DEPLOYED", "REASON")
    for w in document["watches"]:
        verdict = w["decision"]["verdict"]
        reason = w["decision"]["reason"]
        if w["action"]:
            reason += f"; would act: {w['action']['target']}"
        style = STATE_STYLE.get(w["state"], "")
        table.add_row(w["name"], f"[{style}]{verdict}[/]", _ref(w["observed"]), _ref(w["deployed"]), reason)
    console.print(table)
    console.print(("dry run, nothing written: " if document["dry_run"] else "") + document["summary"])


def history(console: Console, document: dict[str, Any]) -> None:
    table = _table("AT", "WATCH", "EVENT", "OBSERVED", "DETAIL")
    for e in document["events"]:
        observed = _ref(e) if e["tag"] and e["digest"] else "-"
        table.add_row(e["at"], e["watch"], e["verdict"], observed, e["error"] or e["reason"])
    if not document["events"]:
        console.print("no history yet: run `reconciler reconcile` first")
        return
    console.print(table)

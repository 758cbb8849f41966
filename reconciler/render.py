"""Readable tables for the terminal, rendered with `rich` from the same documents `--json` prints, so the two
never disagree. Only presentation: no decisions, no I/O beyond the console handed in.
"""

from __future__ import annotations

import json
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
        note = w["last_error"] or (_action(w["last_action"]) if w["last_action"] else None)
        note = note or w["deploys_via"] or "observed only"
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
        action = w["action"]
        if action and action["status"] == "would_act":
            reason += f"; would act: {action['target']}"
        elif action:
            reason += f"; {_action(action)}"
        style = STATE_STYLE.get(w["state"], "")
        table.add_row(w["name"], f"[{style}]{verdict}[/]", _ref(w["observed"]), _ref(w["deployed"]), reason)
    console.print(table)
    for w in document["watches"]:
        action = w["action"]
        if action and action["status"] == "would_act":
            if "error" in action:
                console.print(f"{w['name']}: cannot tell the exact request: {action['error']}", markup=False)
            else:
                request = action["request"]
                where = request.get("url") or request.get("path")
                kind = f" ({request['content_type']})" if request.get("content_type") else ""
                console.print(f"{w['name']} would send: {request['method']} {where}{kind}", markup=False)
                console.print(json.dumps(request["body"], indent=2), markup=False)
    console.print(("dry run, nothing written: " if document["dry_run"] else "") + document["summary"])


def _action(action: dict[str, Any]) -> str:
    text = f"action #{action['id']} {action['status']}"
    if action.get("detail"):
        text += f": {action['detail']}"
    elif action.get("ref"):
        text += f" ({action['ref']})"
    return text


def history(console: Console, document: dict[str, Any]) -> None:
    table = _table("AT", "WATCH", "EVENT", "OBSERVED", "DETAIL")
    for e in document["events"]:
        observed = _ref(e) if e["tag"] and e["digest"] else "-"
        if e["type"] == "action":
            action = e["action"]
            detail = " ".join(filter(None, [action["detail"], action["ref"] if not action["detail"] else None]))
            table.add_row(e["at"], e["watch"], f"action #{action['id']} {action['status']}", observed, detail or "-")
        else:
            table.add_row(e["at"], e["watch"], e["verdict"], observed, e["error"] or e["reason"])
    if not document["events"]:
        console.print("no history yet: run `reconciler reconcile` first")
        return
    console.print(table)

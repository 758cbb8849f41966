"""The documents `status --json`, `reconcile --json` and `history --json` print (field names are SPEC.md's
contract), built from model values. Pure: `now` is a parameter; the tables are rendered from these documents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from reconciler import decide, model
from reconciler.store import queries


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def watch_status(watch: model.Watch, state: model.WatchState | None, *, now: datetime) -> dict[str, Any]:
    observed = state.observed if state else None
    deployed = state.deployed if state else None
    return {
        "name": watch.name,
        "image": str(watch.image),
        "selector": watch.selector.describe(),
        "state": decide.state_of(watch=watch, state=state, now=now).value,
        "observed": None
        if observed is None
        else {
            "tag": observed.tag,
            "digest": observed.digest,
            "since": iso(observed.since),
            "checked_at": iso(state.checked_at if state else None),
        },
        "deployed": None
        if deployed is None
        else {"tag": deployed.tag, "digest": deployed.digest, "at": iso(deployed.at)},
        "checked_at": iso(state.checked_at if state else None),
        "last_error": state.last_error if state else None,
        "last_action": None,
        "deploys_via": None if watch.action is None else watch.action.describe(),
    }


def status_document(
    watches: Sequence[model.Watch], states: Mapping[str, model.WatchState], *, now: datetime
) -> dict[str, Any]:
    return {
        "generated_at": iso(now),
        "watches": [watch_status(w, states.get(w.name), now=now) for w in watches],
    }


def _pass_action(outcome: model.WatchOutcome) -> dict[str, Any] | None:
    """What this pass does about the watch's action: only drift calls for one."""
    action = outcome.watch.action
    result = outcome.result
    if action is None or outcome.decision.verdict is not model.Verdict.DRIFT:
        return None
    assert isinstance(result, model.Observation)
    return {
        "kind": action.kind.value,
        "status": "would_act",
        "target": action.describe(),
        "tag": result.tag,
        "digest": result.digest,
    }


def reconcile_document(report: model.RunReport) -> dict[str, Any]:
    watches = []
    for outcome in report.outcomes:
        entry = watch_status(outcome.watch, outcome.state, now=report.finished_at)
        entry["decision"] = {"verdict": outcome.decision.verdict.value, "reason": outcome.decision.reason}
        entry["action"] = _pass_action(outcome)
        watches.append(entry)
    return {
        "generated_at": iso(report.finished_at),
        "dry_run": report.dry_run,
        "summary": report.summary(),
        "watches": watches,
    }


def history_document(entries: Sequence[queries.HistoryEntry]) -> dict[str, Any]:
    return {
        "events": [
            {
                "at": iso(e.at),
                "watch": e.watch,
                "type": "observation",
                "verdict": e.verdict,
                "tag": e.tag,
                "digest": e.digest,
                "error": e.error,
                "reason": e.reason,
            }
            for e in entries
        ]
    }

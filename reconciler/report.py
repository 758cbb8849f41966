"""The documents `status --json`, `reconcile --json` and `history --json` print (field names are a documented
contract), built from model values. Pure: `now` is a parameter; the tables are rendered from these documents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from reconciler import decide, model

if TYPE_CHECKING:
    from reconciler.store import prune, rows


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    # By hand, five times for each watch of `status`: %-formatting takes half of isoformat()'s time, and 0.6 of an
    # f-string's with format specs.
    m = moment
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (m.year, m.month, m.day, m.hour, m.minute, m.second)  # noqa: UP031


def action_document(action: model.ActionRecord | None) -> dict[str, Any] | None:
    if action is None:
        return None
    return {
        "id": action.id,
        "kind": action.kind.value,
        "status": action.status.value,
        "tag": action.tag,
        "digest": action.digest,
        "attempt": action.attempt,
        "started_at": iso(action.launched_at or action.planned_at),
        "finished_at": iso(action.finished_at),
        "ref": action.link or action.external_ref,
        "detail": action.detail,
        "failure": action.failure.value if action.failure is not None else None,
        "next_attempt_at": iso(action.next_attempt_at) if action.status is model.ActionStatus.FAILED else None,
        "approval": approval_document(action),
    }


def approval_document(action: model.ActionRecord | None) -> dict[str, Any] | None:
    """A person's say on an action of a watch that needs approval: waiting, or who approved or rejected it, when."""
    if action is None or action.approval is None:
        return None
    if action.approval is model.Approval.WAITING and action.status is not model.ActionStatus.AWAITING_APPROVAL:
        return None  # superseded (or closed) before anyone decided: no one's say to show
    return {"state": action.approval.value, "by": action.decided_by, "at": iso(action.decided_at)}


def _running(watch: model.Watch, last_action: model.ActionRecord | None) -> dict[str, Any] | None:
    """For a StatefulSet watch: the digest its pods were verified to run after the last successful roll-out."""
    if not isinstance(watch.action, model.StatefulSetAction) or last_action is None:
        return None
    if last_action.status is not model.ActionStatus.SUCCEEDED:
        return None
    return {"digest": last_action.digest, "verified_at": iso(last_action.finished_at)}


def watch_status(
    watch: model.Watch,
    state: model.WatchState | None,
    *,
    now: datetime,
    last_action: model.ActionRecord | None = None,
) -> dict[str, Any]:
    observed = state.observed if state else None
    deployed = state.deployed if state else None
    checked_at = iso(state.checked_at if state else None)
    return {
        "name": watch.name,
        "image": str(watch.image),
        "selector": watch.selector.describe(),
        "state": decide.state_of(watch=watch, state=state, now=now, last_action=last_action).value,
        "observed": None
        if observed is None
        else {
            "tag": observed.tag,
            "digest": observed.digest,
            "since": iso(observed.since),
            "checked_at": checked_at,
        },
        "deployed": None
        if deployed is None
        else {"tag": deployed.tag, "digest": deployed.digest, "at": iso(deployed.at)},
        "checked_at": checked_at,
        "last_error": state.last_error if state else None,
        "last_action": action_document(last_action),
        "approval": approval_document(last_action),
        "deploys_via": None if watch.action is None else watch.action.describe(),
        "approve": watch.approve,
        "cannot_act": watch.cannot_act,
        "running": _running(watch, last_action),
    }


def status_document(
    watches: Sequence[model.Watch],
    states: Mapping[str, model.WatchState],
    *,
    now: datetime,
    last_actions: Mapping[str, model.ActionRecord] | None = None,
    notifications: Mapping[str, model.Backlog] | None = None,
    cannot_send: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    actions = last_actions or {}
    unable = cannot_send or {}
    return {
        "generated_at": iso(now),
        "watches": [watch_status(w, states.get(w.name), now=now, last_action=actions.get(w.name)) for w in watches],
        "notifications": {
            name: backlog_document(b, cannot_send=unable.get(name)) for name, b in (notifications or {}).items()
        },
    }


def backlog_document(backlog: model.Backlog, *, cannot_send: str | None = None) -> dict[str, Any]:
    """A notification target's undelivered notices: how many, since when, when tried next, and why not yet (or
    why none can be sent: its secret is not set)."""
    return {
        "cannot_send": cannot_send,
        "undelivered": backlog.undelivered,
        "oldest_at": iso(backlog.oldest_at),
        "next_attempt_at": iso(backlog.next_attempt_at),
        "last_error": backlog.last_error,
        "dropped": backlog.dropped,
    }


def _pass_action(outcome: model.WatchOutcome) -> dict[str, Any] | None:
    """What this pass did about the watch's action: carried it out, or (dry run) the exact request it would send."""
    action = outcome.watch.action
    if outcome.preview is not None and action is not None:
        if "error" in outcome.preview:
            return {
                "kind": action.kind.value,
                "status": "would_act",
                "target": action.describe(),
                "error": outcome.preview["error"],
            }
        return {
            "kind": action.kind.value,
            "status": "would_act",
            "target": action.describe(),
            "request": dict(outcome.preview),
        }
    if outcome.acted and outcome.action is not None:
        return {**(action_document(outcome.action) or {}), "request": outcome.action.request}
    return None


def reconcile_document(report: model.RunReport) -> dict[str, Any]:
    watches = []
    for outcome in report.outcomes:
        last = outcome.action
        entry = watch_status(outcome.watch, outcome.state, now=report.finished_at, last_action=last)
        entry["decision"] = {"verdict": outcome.decision.verdict.value, "reason": outcome.decision.reason}
        entry["action"] = _pass_action(outcome)
        watches.append(entry)
    return {
        "generated_at": iso(report.finished_at),
        "dry_run": report.dry_run,
        "summary": report.summary(),
        "watches": watches,
    }


def history_document(
    entries: Sequence[rows.HistoryEntry], actions: Sequence[model.ActionRecord], *, limit: int
) -> dict[str, Any]:
    """Observed changes and actions, newest first."""
    events: list[tuple[datetime, dict[str, Any]]] = [
        (
            e.at,
            {
                "at": iso(e.at),
                "watch": e.watch,
                "type": "observation",
                "verdict": e.verdict,
                "tag": e.tag,
                "digest": e.digest,
                "error": e.error,
                "reason": e.reason,
            },
        )
        for e in entries
    ]
    for a in actions:
        at = a.finished_at or a.launched_at or a.planned_at
        events.append(
            (
                at,
                {
                    "at": iso(at),
                    "watch": a.watch,
                    "type": "action",
                    "action": action_document(a),
                    "tag": a.tag,
                    "digest": a.digest,
                },
            )
        )
    events.sort(key=lambda pair: pair[0], reverse=True)
    return {"events": [event for _, event in events[:limit]]}


def waiting_document(waiting: Sequence[model.ActionRecord], watches: Sequence[model.Watch]) -> list[dict[str, Any]]:
    """The actions waiting for a person's yes or no, oldest first, as the status page lists them."""
    by_name = {w.name: w for w in watches}
    found = []
    for action in waiting:
        watch = by_name.get(action.watch)
        found.append(
            {
                "watch": action.watch,
                "action_id": action.id,
                "tag": action.tag,
                "digest": action.digest,
                "since": iso(action.created_at),
                "deploys_via": watch.action.describe() if watch is not None and watch.action is not None else None,
                "environment": watch.environment.upper() if watch is not None else None,
            }
        )
    return found


def prune_document(pruned: prune.Pruned, *, keep: timedelta, now: datetime, dry_run: bool) -> dict[str, Any]:
    """`db prune --json`: the cut-off, and the rows of each kind removed (or that would be, in a dry run)."""
    return {
        "dry_run": dry_run,
        "keep_seconds": int(keep.total_seconds()),
        "before": iso(now - keep),
        "would_remove" if dry_run else "removed": pruned.counts(),
        "total": pruned.total,
    }

"""Rows to model values, by column name: for the queries through SQLAlchemy (`outbox`, `queries`) and for the plain
SQL of `glance` alike, so a column is read one way only. Imports no SQLAlchemy.

A time comes from SQLAlchemy as an aware datetime, from psycopg as an aware datetime in the session's zone, and
from sqlite3 as the text SQLAlchemy wrote (naive UTC, "2026-11-28 01:02:03.456789"): `moment` makes each an aware
UTC datetime.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from reconciler import model

STATE_COLUMNS = (
    "watch",
    "observed_tag",
    "observed_digest",
    "observed_since",
    "checked_at",
    "last_error",
    "deployed_tag",
    "deployed_digest",
    "deployed_at",
    "check_failures",
)
ACTION_COLUMNS = (
    "id",
    "watch",
    "kind",
    "status",
    "tag",
    "digest",
    "attempt",
    "created_at",
    "previous_tag",
    "previous_digest",
    "request",
    "external_ref",
    "link",
    "detail",
    "launched_at",
    "finished_at",
    "next_attempt_at",
    "failure",
    "fingerprint",
    "outages",
    "abort",
    "reset_at",
    "approval",
    "decided_by",
    "decided_at",
    "released_at",
)
HISTORY_COLUMNS = ("at", "watch", "verdict", "tag", "digest", "error", "reason")


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """An observed change of a watch (a row of `observations`)."""

    at: datetime
    watch: str
    verdict: str
    tag: str | None
    digest: str | None
    error: str | None
    reason: str


def moment(value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # naive UTC: parsed with its zone in one step (`replace` costs seven times more)
        return datetime.fromisoformat(f"{value}+00:00")
    if value.tzinfo is UTC:
        return value
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _moment(value: datetime | str) -> datetime:
    """A time its writers always set (NOT NULL, or set with the tag and digest it goes with)."""
    return cast(datetime, moment(value))


def state_of(row: Mapping[str, Any]) -> model.WatchState:
    observed = deployed = None
    if row["observed_tag"] is not None and row["observed_digest"] is not None:
        since = _moment(row["observed_since"])
        observed = model.Seen(tag=row["observed_tag"], digest=row["observed_digest"], since=since)
    if row["deployed_tag"] is not None and row["deployed_digest"] is not None:
        at = _moment(row["deployed_at"])
        deployed = model.Deployed(tag=row["deployed_tag"], digest=row["deployed_digest"], at=at)
    return model.WatchState(
        watch=row["watch"],
        observed=observed,
        checked_at=moment(row["checked_at"]),
        last_error=row["last_error"],
        deployed=deployed,
        failures=row["check_failures"],
    )


def action_of(row: Mapping[str, Any]) -> model.ActionRecord:
    return model.ActionRecord(
        id=row["id"],
        watch=row["watch"],
        kind=model.ActionKind(row["kind"]),
        status=model.ActionStatus(row["status"]),
        tag=row["tag"],
        digest=row["digest"],
        attempt=row["attempt"],
        created_at=_moment(row["created_at"]),
        previous_tag=row["previous_tag"],
        previous_digest=row["previous_digest"],
        request=json.loads(row["request"]) if row["request"] else None,
        external_ref=row["external_ref"],
        link=row["link"],
        detail=row["detail"],
        launched_at=moment(row["launched_at"]),
        finished_at=moment(row["finished_at"]),
        next_attempt_at=moment(row["next_attempt_at"]),
        failure=model.Failure(row["failure"]) if row["failure"] else None,
        fingerprint=row["fingerprint"],
        outages=row["outages"],
        abort=row["abort"],
        reset_at=moment(row["reset_at"]),
        approval=model.Approval(row["approval"]) if row["approval"] else None,
        decided_by=row["decided_by"],
        decided_at=moment(row["decided_at"]),
        released_at=moment(row["released_at"]),
    )


def entry_of(row: Mapping[str, Any]) -> HistoryEntry:
    return HistoryEntry(
        at=_moment(row["at"]),
        watch=row["watch"],
        verdict=row["verdict"],
        tag=row["tag"],
        digest=row["digest"],
        error=row["error"],
        reason=row["reason"],
    )

"""Rows to model values, for the queries through SQLAlchemy (`outbox`, `approvals`) and for the plain SQL of
`glance` alike, so a column is read one way only. By position: a row holds the columns of STATE_COLUMNS,
ACTION_COLUMNS or HISTORY_COLUMNS in that order (a tuple unpacked costs a fraction of a dict built and read by
name, and `status` reads 10,000 of each). Imports no SQLAlchemy.

A time comes from SQLAlchemy as an aware datetime, from psycopg as an aware datetime in the session's zone, and
from sqlite3 as the text SQLAlchemy wrote (naive UTC, "2026-11-28 01:02:03.456789"): `moment` makes each an aware
UTC datetime.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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
ACTION_COLUMNS = (  # the table's order, which `select(tables.actions)` gives (a test holds them together)
    "id",
    "watch",
    "kind",
    "status",
    "tag",
    "digest",
    "previous_tag",
    "previous_digest",
    "attempt",
    "request",
    "external_ref",
    "link",
    "detail",
    "created_at",
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


def state_of(row: Sequence[Any]) -> model.WatchState:
    """A row of STATE_COLUMNS."""
    watch, observed_tag, observed_digest, since, checked_at, last_error, deployed_tag, deployed_digest, at, fails = row
    observed = deployed = None
    if observed_tag is not None and observed_digest is not None:
        observed = model.Seen(tag=observed_tag, digest=observed_digest, since=_moment(since))
    if deployed_tag is not None and deployed_digest is not None:
        deployed = model.Deployed(tag=deployed_tag, digest=deployed_digest, at=_moment(at))
    return model.WatchState(
        watch=watch,
        observed=observed,
        checked_at=moment(checked_at),
        last_error=last_error,
        deployed=deployed,
        failures=fails,
    )


_KINDS = {kind.value: kind for kind in model.ActionKind}  # a dict: a fifth of what calling the Enum costs
_STATUSES = {status.value: status for status in model.ActionStatus}


def action_of(row: Sequence[Any]) -> model.ActionRecord:
    """A row of ACTION_COLUMNS: of the plain SQL, or a `select(tables.actions)` row."""
    (
        id_, watch, kind, status, tag, digest, previous_tag, previous_digest, attempt, request, external_ref, link,
        detail, created_at, launched_at, finished_at, next_attempt_at, failure, fingerprint, outages, abort,
        reset_at, approval, decided_by, decided_at, released_at,
    ) = row  # fmt: skip
    return model.ActionRecord(
        id=id_,
        watch=watch,
        kind=_KINDS[kind],
        status=_STATUSES[status],
        tag=tag,
        digest=digest,
        attempt=attempt,
        created_at=_moment(created_at),
        previous_tag=previous_tag,
        previous_digest=previous_digest,
        request=json.loads(request) if request else None,
        external_ref=external_ref,
        link=link,
        detail=detail,
        launched_at=moment(launched_at),
        finished_at=moment(finished_at),
        next_attempt_at=moment(next_attempt_at),
        failure=model.Failure(failure) if failure else None,
        fingerprint=fingerprint,
        outages=outages,
        abort=abort,
        reset_at=moment(reset_at),
        approval=model.Approval(approval) if approval else None,
        decided_by=decided_by,
        decided_at=moment(decided_at),
        released_at=moment(released_at),
    )


def entry_of(row: Sequence[Any]) -> HistoryEntry:
    """A row of HISTORY_COLUMNS."""
    at, watch, verdict, tag, digest, error, reason = row
    return HistoryEntry(_moment(at), watch, verdict, tag, digest, error, reason)

"""SQLAlchemy 2.0 table definitions; `migrations/env.py` imports `metadata`, and a test proves they agree.

Observed and deployed are kept apart in `watch_state`; `observations` is the change log; `actions` is the outbox
(docs/how-it-works.md), where at most one action per watch and digest may be open; `leases` holds the lease of each
instance; `runs_hourly` rolls the passes up, one row per instance and hour (`runs` is version 0.1's);
`notifications` is the notification outbox, one row per notice and target. Times are stored as UTC and always come
back timezone-aware.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    text,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on SQLite (which keeps no zone) and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)

NAME = 200
TAG = 128
DIGEST = 71  # "sha256:" + 64 hex
OPEN_STATUSES = ("awaiting_approval", "planned", "launched")
_OPEN = text("status IN ('awaiting_approval', 'planned', 'launched')")
ACTION_STATUSES = ("awaiting_approval", "planned", "launched", "succeeded", "failed", "superseded", "rejected")

watch_state = Table(
    "watch_state",
    metadata,
    Column("watch", String(NAME), primary_key=True),
    Column("image", String(500), nullable=False),
    Column("selector", String(500), nullable=False),
    Column("observed_tag", String(TAG)),
    Column("observed_digest", String(DIGEST)),
    Column("observed_since", UTCDateTime()),
    Column("checked_at", UTCDateTime()),
    Column("last_error", Text()),
    Column("deployed_tag", String(TAG)),
    Column("deployed_digest", String(DIGEST)),
    Column("deployed_at", UTCDateTime()),
    Column("check_failures", Integer(), nullable=False, server_default="0"),  # failed checks in a row
)

observations = Table(
    "observations",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("watch", String(NAME), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("tag", String(TAG)),
    Column("digest", String(DIGEST)),
    Column("error", Text()),
    Column("verdict", String(20), nullable=False),
    Column("reason", Text(), nullable=False),
    Index("ix_observations_watch_at", "watch", "at"),
    Index("ix_observations_at", "at", "id"),  # the newest of every watch (`history`), and the oldest (the prune)
)

actions = Table(
    "actions",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("watch", String(NAME), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("tag", String(TAG), nullable=False),
    Column("digest", String(DIGEST), nullable=False),
    Column("previous_tag", String(TAG)),
    Column("previous_digest", String(DIGEST)),
    Column("attempt", Integer(), nullable=False, server_default="1"),
    Column("request", Text()),  # what is (or would be) sent, secrets excluded
    Column("external_ref", String(500)),  # AWX job id / StatefulSet generation, once launched
    Column("link", String(1000)),  # where a person can look at it (the AWX job page)
    Column("detail", Text()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("launched_at", UTCDateTime()),
    Column("finished_at", UTCDateTime()),
    Column("next_attempt_at", UTCDateTime()),
    Column("failure", String(20)),  # how a failed action failed: deployment | outage | refused
    Column("fingerprint", String(64)),  # the watch's action configuration it was planned under
    Column("outages", Integer(), nullable=False, server_default="0"),  # outage failures of this attempt before it
    Column("abort", Text()),  # the launched job must be canceled, and why (AWX ignored our variables)
    Column("reset_at", UTCDateTime()),  # `reconciler retry`: this failure no longer holds the watch back
    Column("approval", String(20)),  # a watch with `approve = true`: waiting | approved | rejected
    Column("decided_by", String(NAME)),  # who approved or rejected it
    Column("decided_at", UTCDateTime()),
    Column("released_at", UTCDateTime()),  # an approved action, planned (to be launched) by a pass
    CheckConstraint(f"status IN ({', '.join(repr(s) for s in ACTION_STATUSES)})", name="status"),
    Index("ix_actions_watch_created", "watch", "created_at"),
    Index("ix_actions_watch_id", "watch", "id"),  # a watch's newest actions (`status`, `history --watch`)
    Index("ix_actions_finished_at", "finished_at", "id"),  # the oldest finished (the prune)
    # The outbox rule: one open (awaiting approval, planned or launched) action per watch and digest, never two.
    Index(
        "uq_actions_open_watch_digest",
        "watch",
        "digest",
        unique=True,
        sqlite_where=_OPEN,
        postgresql_where=_OPEN,
    ),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("holder", String(NAME), nullable=False),
    Column("acquired_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
)

# Version 0.1's log of passes, one row per pass (so one per watch and interval of the daemon). Nothing of this
# version writes it: it stays for a 0.1 process still running while the database is upgraded (migration 0006 is
# additive), and its rows go with the prune. A later migration drops it.
runs = Table(
    "runs",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=False),
    Column("checked", Integer(), nullable=False),
    Column("errors", Integer(), nullable=False),
    Column("summary", Text(), nullable=False),
    Index("ix_runs_started_at", "started_at", "id"),  # the oldest (the prune)
)

# The passes rolled up, one row per instance and hour: each pass (the daemon's, one per watch and interval, or a
# `reconcile`) adds itself to it, so a year of them is 8,760 rows, whatever the number of watches.
runs_hourly = Table(
    "runs_hourly",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("instance", String(NAME), nullable=False),  # `[reconciler].instance` of the process that ran them
    Column("hour", UTCDateTime(), nullable=False),  # the hour the passes finished in (its start, UTC)
    Column("passes", Integer(), nullable=False),
    Column("checked", Integer(), nullable=False),  # watches checked, over all the passes
    Column("changed", Integer(), nullable=False),  # changes observed (rows written to `observations`)
    Column("errors", Integer(), nullable=False),  # failed checks
    Column("first_started_at", UTCDateTime(), nullable=False),
    Column("last_finished_at", UTCDateTime(), nullable=False),
    Column("last_summary", Text(), nullable=False),  # the newest pass's one-line summary
    Index("uq_runs_hourly_instance_hour", "instance", "hour", unique=True),
)

NOTICE_STATUSES = ("pending", "delivered", "dropped")

notifications = Table(
    "notifications",
    metadata,
    Column("seq", Integer(), primary_key=True, autoincrement=True),  # the order recorded: the order delivered
    Column("id", String(36), nullable=False),  # the notice's id, shared by its rows for other targets
    Column("target", String(NAME), nullable=False),  # the [[notify]] name, never its URL
    Column("event", String(30), nullable=False),
    Column("watch", String(NAME)),
    Column("body", Text(), nullable=False),  # the JSON sent, exactly (no secret is ever in it)
    Column("status", String(20), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("attempts", Integer(), nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime()),  # a failed delivery's back-off
    Column("claimed_until", UTCDateTime()),  # a process is sending it; another takes it over after this
    Column("last_error", Text()),
    Column("finished_at", UTCDateTime()),
    # The `[reconciler].instance` that recorded it: only its processes deliver it (another may name a target alike)
    Column("instance", String(NAME), nullable=False, server_default="default"),
    CheckConstraint(f"status IN ({', '.join(repr(s) for s in NOTICE_STATUSES)})", name="status"),
    Index("uq_notifications_id_target", "id", "target", unique=True),
    Index("ix_notifications_status_target", "status", "target"),
    Index("ix_notifications_finished_at", "finished_at", "seq"),  # the oldest delivered or dropped (the prune)
)

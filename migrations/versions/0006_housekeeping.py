"""Housekeeping: `runs_hourly`, the passes rolled up into one row per instance and hour, and the indexes the prune
and the commands that read one watch use.

The per-pass rows of `runs` are rolled up into the new table, hour by hour: how many passes, the watches they
checked, their failed checks, the changes observed in that hour (counted from `observations`), and the newest pass's
summary. `runs` itself stays as it was, so that a 0.1 daemon still running while the database is upgraded goes on
recording its passes (and holding its lease) rather than failing every one; its rows go with the prune.
`notifications.instance` names the instance that recorded a notice (0.1's, by default, "default").

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

INDEXES = (
    ("runs", "ix_runs_started_at", ["started_at", "id"]),
    ("observations", "ix_observations_at", ["at", "id"]),
    ("actions", "ix_actions_watch_id", ["watch", "id"]),
    ("actions", "ix_actions_finished_at", ["finished_at", "id"]),
    ("notifications", "ix_notifications_finished_at", ["finished_at", "seq"]),
)
_TIME = sa.DateTime(timezone=True)
_OLD_RUNS = sa.table(
    "runs",
    sa.column("id", sa.Integer()),
    sa.column("started_at", _TIME),
    sa.column("finished_at", _TIME),
    sa.column("checked", sa.Integer()),
    sa.column("errors", sa.Integer()),
    sa.column("summary", sa.Text()),
)
_NEW_RUNS = sa.table(
    "runs_hourly",
    sa.column("instance", sa.String()),
    sa.column("hour", _TIME),
    sa.column("passes", sa.Integer()),
    sa.column("checked", sa.Integer()),
    sa.column("changed", sa.Integer()),
    sa.column("errors", sa.Integer()),
    sa.column("first_started_at", _TIME),
    sa.column("last_finished_at", _TIME),
    sa.column("last_summary", sa.Text()),
)
_OBSERVATIONS = sa.table("observations", sa.column("at", _TIME))


def _hour_of(column: Any, sqlite: bool) -> Any:
    """The hour a time falls in, as 'YYYY-MM-DD HH' text (SQLite keeps UTC times as ISO text)."""
    if sqlite:
        return sa.func.substr(column, 1, 13)
    return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD HH24")


def _stored(value: datetime, sqlite: bool) -> datetime:
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.replace(tzinfo=None) if sqlite else value


def _rolled_up(conn: sa.Connection, sqlite: bool) -> list[dict[str, Any]]:
    r = _OLD_RUNS
    hour = _hour_of(r.c.finished_at, sqlite).label("hour")
    groups = conn.execute(
        sa.select(
            hour,
            sa.func.count(),
            sa.func.sum(r.c.checked),
            sa.func.sum(r.c.errors),
            sa.func.min(r.c.started_at),
            sa.func.max(r.c.finished_at),
            sa.func.max(r.c.id),
        ).group_by(hour)
    ).all()
    seen = _hour_of(_OBSERVATIONS.c.at, sqlite).label("hour")
    changed: dict[str, int] = {key: n for key, n in conn.execute(sa.select(seen, sa.func.count()).group_by(seen))}
    newest = [g[6] for g in groups]
    summaries: dict[int, str] = {}
    for start in range(0, len(newest), 500):
        chunk = newest[start : start + 500]
        summaries.update((i, text) for i, text in conn.execute(sa.select(r.c.id, r.c.summary).where(r.c.id.in_(chunk))))
    return [
        {
            "instance": "default",
            "hour": _stored(datetime.strptime(key, "%Y-%m-%d %H"), sqlite),
            "passes": passes,
            "checked": checked or 0,
            "changed": changed.get(key, 0),
            "errors": failed or 0,
            "first_started_at": _stored(first, sqlite),
            "last_finished_at": _stored(last, sqlite),
            "last_summary": summaries.get(last_id, ""),
        }
        for key, passes, checked, failed, first, last, last_id in groups
    ]


def upgrade() -> None:
    conn = op.get_bind()
    sqlite = conn.dialect.name == "sqlite"
    rows = _rolled_up(conn, sqlite)
    op.create_table(
        "runs_hourly",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("instance", sa.String(length=200), nullable=False),
        sa.Column("hour", _TIME, nullable=False),
        sa.Column("passes", sa.Integer(), nullable=False),
        sa.Column("checked", sa.Integer(), nullable=False),
        sa.Column("changed", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("first_started_at", _TIME, nullable=False),
        sa.Column("last_finished_at", _TIME, nullable=False),
        sa.Column("last_summary", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs_hourly")),
    )
    op.create_index("uq_runs_hourly_instance_hour", "runs_hourly", ["instance", "hour"], unique=True)
    if rows:
        op.bulk_insert(_NEW_RUNS, rows)
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("instance", sa.String(length=200), server_default="default", nullable=False))
    for table, name, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    # The hours recorded since the upgrade go back into `runs` as one row each, as if each had been one pass.
    for table, name, _columns in INDEXES:
        op.drop_index(name, table_name=table)
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_column("instance")
    conn = op.get_bind()
    r = _NEW_RUNS
    since = sa.select(sa.func.max(_OLD_RUNS.c.finished_at)).scalar_subquery()
    hours = conn.execute(
        sa.select(r.c.first_started_at, r.c.last_finished_at, r.c.checked, r.c.errors, r.c.last_summary).where(
            sa.or_(since.is_(None), r.c.last_finished_at > since)
        )
    ).all()
    op.drop_index("uq_runs_hourly_instance_hour", table_name="runs_hourly")
    op.drop_table("runs_hourly")
    if hours:
        op.bulk_insert(
            _OLD_RUNS,
            [
                {"started_at": s, "finished_at": f, "checked": c, "errors": e, "summary": summary}
                for s, f, c, e, summary in hours
            ],
        )

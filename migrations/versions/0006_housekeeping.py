"""Housekeeping: `runs` becomes one row per instance and hour (the passes rolled up), and the indexes the prune and
the commands that read one watch use.

The old per-pass rows are rolled up into the new table, hour by hour: how many passes, the watches they checked,
their failed checks, the changes observed in that hour (counted from `observations`), and the newest pass's summary.

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
    "runs",
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
    op.drop_table("runs")
    op.create_table(
        "runs",
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
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index("uq_runs_instance_hour", "runs", ["instance", "hour"], unique=True)
    if rows:
        op.bulk_insert(_NEW_RUNS, rows)
    for table, name, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    # The hourly rows become one row each, as if the hour had been one pass.
    for table, name, _columns in INDEXES:
        op.drop_index(name, table_name=table)
    conn = op.get_bind()
    hours = conn.execute(
        sa.select(
            _NEW_RUNS.c.first_started_at,
            _NEW_RUNS.c.last_finished_at,
            _NEW_RUNS.c.checked,
            _NEW_RUNS.c.errors,
            _NEW_RUNS.c.last_summary,
        )
    ).all()
    op.drop_index("uq_runs_instance_hour", table_name="runs")
    op.drop_table("runs")
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("started_at", _TIME, nullable=False),
        sa.Column("finished_at", _TIME, nullable=False),
        sa.Column("checked", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    if hours:
        op.bulk_insert(
            _OLD_RUNS,
            [
                {"started_at": s, "finished_at": f, "checked": c, "errors": e, "summary": summary}
                for s, f, c, e, summary in hours
            ],
        )

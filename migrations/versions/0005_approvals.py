"""Approvals: an action may wait for a person (`awaiting_approval`, then planned, or `rejected`), and keeps who
decided and when, and when an approved one was released to be launched. A waiting action is open: the outbox rule
(one open action per watch and digest) covers it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OLD_STATUSES = "status IN ('planned', 'launched', 'succeeded', 'failed', 'superseded')"
NEW_STATUSES = "status IN ('awaiting_approval', 'planned', 'launched', 'succeeded', 'failed', 'superseded', 'rejected')"
OLD_OPEN = "status IN ('planned', 'launched')"
NEW_OPEN = "status IN ('awaiting_approval', 'planned', 'launched')"


def _rebuild(statuses: str, open_statuses: str) -> None:
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.drop_index("uq_actions_open_watch_digest")
        batch_op.drop_constraint(op.f("ck_actions_status"), type_="check")
        batch_op.create_check_constraint(op.f("ck_actions_status"), sa.text(statuses))
        batch_op.create_index(
            "uq_actions_open_watch_digest",
            ["watch", "digest"],
            unique=True,
            sqlite_where=sa.text(open_statuses),
            postgresql_where=sa.text(open_statuses),
        )


def upgrade() -> None:
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("approval", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("decided_by", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("released_at", sa.DateTime(timezone=True), nullable=True))
    _rebuild(NEW_STATUSES, NEW_OPEN)


def downgrade() -> None:
    # What only this version knows is closed first: a waiting action as superseded, a rejected one as superseded.
    op.execute("UPDATE actions SET status = 'superseded' WHERE status IN ('awaiting_approval', 'rejected')")
    _rebuild(OLD_STATUSES, OLD_OPEN)
    with op.batch_alter_table("actions", schema=None) as batch_op:
        for column in ("released_at", "decided_at", "decided_by", "approval"):
            batch_op.drop_column(column)

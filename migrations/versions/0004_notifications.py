"""The notification outbox (one row per notice and target, delivered after the transaction that recorded it),
and each watch's count of failed checks in a row (`check_failing` after three).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("watch_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("check_failures", sa.Integer(), server_default="0", nullable=False))
    op.create_table(
        "notifications",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("event", sa.String(length=30), nullable=False),
        sa.Column("watch", sa.String(length=200), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'dropped')", name=op.f("ck_notifications_status")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_notifications")),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index("uq_notifications_id_target", ["id", "target"], unique=True)
        batch_op.create_index("ix_notifications_status_target", ["status", "target"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_status_target")
        batch_op.drop_index("uq_notifications_id_target")
    op.drop_table("notifications")
    with op.batch_alter_table("watch_state", schema=None) as batch_op:
        batch_op.drop_column("check_failures")

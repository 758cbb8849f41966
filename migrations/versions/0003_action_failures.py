"""Actions remember how they failed, the configuration they were planned under, a requested retry, their outage
streak and a pending cancel, so that outages use up no attempt and a refused action waits for a change.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failure", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("fingerprint", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("outages", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("abort", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("reset_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("actions", schema=None) as batch_op:
        for column in ("reset_at", "abort", "outages", "fingerprint", "failure"):
            batch_op.drop_column(column)

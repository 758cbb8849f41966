"""Alembic environment: runs migrations on the connection `reconciler.store.schema.upgrade` hands in, or, when
Alembic's own command line is used, on `$RECONCILER_DATABASE_URL`."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from reconciler.store import tables

config = context.config
connection = config.attributes.get("connection")

if connection is not None:
    context.configure(connection=connection, target_metadata=tables.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(os.environ.get("RECONCILER_DATABASE_URL", "sqlite:///reconciler.db"))
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=tables.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()

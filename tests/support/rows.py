"""Rows of the database as a test reads them back, through an engine of its own (never the product's)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, select

from reconciler.store import tables


def actions(database: str) -> list[dict[str, Any]]:
    """Every row of `actions`, oldest first, as plain dicts."""
    engine = create_engine(database)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(tables.actions).order_by(tables.actions.c.id))]
    finally:
        engine.dispose()

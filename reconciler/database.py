"""The database engine built from the configured URL, for the composition root (`app`) alone: SQLAlchemy only, so
the commands that just read (`status`, `history`) start without the HTTP clients `clients` builds.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

from reconciler.store import glance


def database_engine(url: str) -> Engine:
    if make_url(url).get_backend_name() == "sqlite":
        return create_engine(url, connect_args={"timeout": 30})  # wait for a concurrent writer, don't fail
    # A stalled link must end in an error, not a hang that holds the lease job and a stop request: libpq gives
    # up on a connect after 10 s and on unacknowledged data after 20 s, and probes idle connections.
    return create_engine(url, pool_pre_ping=True, connect_args=dict(glance.STALLED))


def sqlite_file_missing(url: str) -> bool:
    parsed = make_url(url)
    database = parsed.database
    return (
        parsed.get_backend_name() == "sqlite"
        and bool(database)
        and database != ":memory:"
        and not Path(database or "").exists()
    )

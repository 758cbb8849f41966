"""The database engine built from the configured URL, for the composition root (`app`) alone: SQLAlchemy only, so
the commands that just read (`status`, `history`) start without the HTTP clients `clients` builds.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from reconciler.store import glance

SQLITE_CACHE_KIB = 512  # each connection's page cache; SQLite's default, 2,000 KiB, is reached as the file grows


def database_engine(url: str) -> Engine:
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30})  # wait for a concurrent writer, don't fail
        # A daemon's pool holds a few connections for its life: with SQLite's default cache each would grow its
        # resident memory by up to 2 MB as the file grows (seen as a creep over a soak, which PostgreSQL did not
        # show); a quarter of that keeps the pages a pass reads, which the system's cache holds anyway.
        event.listen(engine, "connect", _small_cache)
        return engine
    # A stalled link must end in an error, not a hang that holds the lease job and a stop request: libpq gives
    # up on a connect after 10 s and on unacknowledged data after 20 s, and probes idle connections.
    return create_engine(url, pool_pre_ping=True, connect_args=dict(glance.STALLED))


def _small_cache(connection: sqlite3.Connection, _record: object) -> None:
    connection.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")


def sqlite_file_missing(url: str) -> bool:
    parsed = make_url(url)
    database = parsed.database
    return (
        parsed.get_backend_name() == "sqlite"
        and bool(database)
        and database != ":memory:"
        and not Path(database or "").exists()
    )

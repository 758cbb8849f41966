"""The database engine built from the configured URL, for the composition root (`app`) alone: SQLAlchemy only, so
the commands that just read (`status`, `history`) start without the HTTP clients `clients` builds.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from reconciler.store import glance

SQLITE_CACHE_KIB = 512  # each SQLite connection's page cache (SQLite's default: 2,000 KiB)


def database_engine(url: str) -> Engine:
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30})  # wait for a concurrent writer, don't fail
        # The daemon keeps a few pooled connections for its life, and each one's page cache fills as the file
        # grows: one connection writing 20,000 passes grew the process by 3.2 MiB with SQLite's default cache, by
        # 1.6 MiB with this one, then no more. The pages a pass reads stay in the system's cache anyway.
        event.listen(engine, "connect", _small_cache)
        return engine
    # A stalled link must end in an error, not a hang that holds the lease job and a stop request: libpq gives
    # up on a connect after 10 s and on unacknowledged data after 20 s, and probes idle connections.
    engine = create_engine(url, pool_pre_ping=True, connect_args=dict(glance.STALLED))
    event.listen(engine, "connect", _utc_session, insert=True)  # first: before the dialect reads anything
    return engine


def _small_cache(connection: sqlite3.Connection, _record: object) -> None:
    connection.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")


def _utc_session(connection: Any, _record: object) -> None:
    """Each PostgreSQL connection reads times in UTC (`glance.UTC_SESSION`), set outside any transaction as
    SQLAlchemy's PostgreSQL dialect documents for a session setting ("Setting Alternate Search Paths on Connect"):
    the rollback of a connection the pool takes back would undo a SET made inside one."""
    autocommit = connection.autocommit
    connection.autocommit = True
    try:
        cursor = connection.cursor()  # DB-API: any PostgreSQL driver SQLAlchemy can load has it
        cursor.execute(glance.UTC_SESSION)
        cursor.close()
    finally:
        connection.autocommit = autocommit


def sqlite_file_missing(url: str) -> bool:
    parsed = make_url(url)
    database = parsed.database
    return (
        parsed.get_backend_name() == "sqlite"
        and bool(database)
        and database != ":memory:"
        and not Path(database or "").exists()
    )

"""Empty, isolated databases for the store, migration and engine suites: one SQLite file, one PostgreSQL schema.

Owns: the `db` / `db_url` / `db_engine` / `migrated_engine` fixtures, each parametrized over SQLite and
PostgreSQL. A SQLite database is a file in the test's `tmp_path`; a PostgreSQL database is a fresh schema
`t_<uuid>` on the server of `postgres_url` (tests/conftest.py), selected with `search_path` and dropped with
CASCADE afterwards, so tests never see each other's tables, even when suites run concurrently on one server.
`plain_db` is the same but for its PostgreSQL half, a fresh database `t_<uuid>` whose URL needs no options.
Without PostgreSQL its half is skipped (a failure under CI, by `postgres_url`).
Must not: create tables by hand; `migrated_engine` runs the real migrations (`schema.upgrade`).

Use from a test module (a plugin rather than an import, so fixture parameters do not shadow imported names):

    pytest_plugins = ["tests.support.databases"]
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from reconciler import database
from reconciler.store import schema

BACKENDS = (
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
)


@dataclass(frozen=True, slots=True)
class TestDatabase:
    """One empty database. `url` is self-contained (the PostgreSQL schema travels as `?options=`), so
    `database.database_engine(url)` and the CLI's `--database` reach the same isolated database."""

    __test__ = False  # not a test class, despite the name

    backend: str  # "sqlite" | "postgresql"
    url: str
    schema: str | None = None  # PostgreSQL only

    def engine(self) -> Engine:
        """A new engine on this database: `database.database_engine` for SQLite; for PostgreSQL `create_engine`
        with the schema as `search_path`. The caller disposes of it."""
        if self.schema is None:
            return database.database_engine(self.url)
        base = make_url(self.url).difference_update_query(["options"])
        return create_engine(base, connect_args={"options": f"-csearch_path={self.schema}"})


def _admin_engine(postgres_url: str) -> Engine:
    return create_engine(postgres_url, isolation_level="AUTOCOMMIT")


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestDatabase]:
    """An empty database, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield TestDatabase(backend="sqlite", url=f"sqlite:///{tmp_path / 'reconciler.db'}")
        return
    with _postgres_schema(request.getfixturevalue("postgres_url")) as database:
        yield database


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[TestDatabase]:
    """An empty PostgreSQL database only (a fresh schema), for tests about several processes on one server."""
    with _postgres_schema(postgres_url) as database:
        yield database


@contextmanager
def _postgres_schema(postgres_url: str) -> Iterator[TestDatabase]:
    with _created(postgres_url, "SCHEMA", drop="CASCADE") as name:
        url = make_url(postgres_url).update_query_dict({"options": f"-csearch_path={name}"})
        yield TestDatabase(backend="postgresql", url=url.render_as_string(hide_password=False), schema=name)


@contextmanager
def _created(postgres_url: str, kind: str, *, drop: str) -> Iterator[str]:
    """A new schema or database `t_<uuid>` on the server, dropped afterwards (`drop`: how)."""
    name = f"t_{uuid.uuid4().hex}"
    admin = _admin_engine(postgres_url)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE {kind} "{name}"'))
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP {kind} IF EXISTS "{name}" {drop}'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def plain_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestDatabase]:
    """An empty database whose URL is plain (reconciler/store/urls.py), so that `status` and `history` read it
    through the driver alone: a SQLite file, or on PostgreSQL a fresh database (a schema's URL needs `?options=`,
    which SQLAlchemy reads)."""
    if request.param == "sqlite":
        yield TestDatabase(backend="sqlite", url=f"sqlite:///{tmp_path / 'reconciler.db'}")
        return
    yield request.getfixturevalue("plain_postgres_db")


@pytest.fixture
def plain_postgres_db(postgres_url: str) -> Iterator[TestDatabase]:
    """`plain_db`'s PostgreSQL half alone: a fresh database, dropped afterwards."""
    with _created(postgres_url, "DATABASE", drop="WITH (FORCE)") as name:
        yield TestDatabase(
            backend="postgresql", url=make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
        )


@pytest.fixture
def db_url(db: TestDatabase) -> str:
    """The URL of an empty database (SQLite file or PostgreSQL schema); see `TestDatabase.url`."""
    return db.url


@pytest.fixture
def db_engine(db: TestDatabase) -> Iterator[Engine]:
    """An engine on an empty, unmigrated database; disposed of before the database is dropped."""
    engine = db.engine()
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def migrated_engine(db_engine: Engine) -> Engine:
    """`db_engine` after `schema.upgrade`: every table at head, no rows."""
    schema.upgrade(db_engine)
    return db_engine

"""Schema upkeep: Alembic migrations applied programmatically, and whether a database is at head.

Owns finding the migrations: the package `reconciler.migrations`, which is the top-level `migrations/` of the
source tree (pyproject.toml's `package-dir` maps it, in the wheel and in an editable install alike). Also keeps
Alembic's INFO chatter ("Context impl …", "Running upgrade …") out of the log unless the root logger is at DEBUG.
Never edits data.
"""

from __future__ import annotations

import importlib.resources
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Connection, Engine, func, inspect, literal, text
from sqlalchemy.exc import SQLAlchemyError

from reconciler import errors
from reconciler.store import HEAD

if TYPE_CHECKING:  # Alembic (a third of a second) is imported only to migrate: `status` reads the revision itself
    from alembic.config import Config

_ALEMBIC = threading.Lock()
MIGRATION_LOCK = 0x7265636F6E63  # "reconc": the PostgreSQL advisory lock that serialises migrations
_SOURCE_TREE = Path(__file__).resolve().parents[2] / "migrations"  # a checkout run without installing it


def _migrations() -> Path:
    """The directory of `env.py` and `versions/`: where the package `reconciler.migrations` was imported from.

    Not `Path(__file__).parent.parent / "migrations"`: in an editable install that package is `migrations/` beside
    `reconciler/`, mapped by setuptools' editable finder, and only the import system knows where it is.
    """
    try:
        found = importlib.resources.files("reconciler.migrations")
    except ModuleNotFoundError:  # reconciler on sys.path from a checkout, not installed: no finder maps the package
        return _SOURCE_TREE
    return found if isinstance(found, Path) else Path(str(found))  # zipped: Alembic then says it cannot list it


MIGRATIONS = _migrations()


def _quiet_alembic() -> None:
    """Alembic reports each step at INFO; keep that below the log unless the root logger is at DEBUG.

    Set on every use rather than once, as the CLI configures logging after this module is imported. A level
    someone else gave the `alembic` logger (other than WARNING, which is ours) is left alone.
    """
    logger = logging.getLogger("alembic")
    if logger.level in (logging.NOTSET, logging.WARNING):
        debugging = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
        logger.setLevel(logging.NOTSET if debugging else logging.WARNING)


def _config() -> Config:
    from alembic.config import Config  # noqa: PLC0415

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head() -> str:
    return HEAD


def current(engine: Engine) -> str | None:
    """The revision the database is at (as Alembic records it), or None when it has never been migrated."""
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError as exc:
        raise errors.StoreError(f"cannot read the database {safe_url(engine)}: {reason(exc)}") from None


def _lock(conn: Connection) -> None:
    """Hold the database's migration lock until the transaction ends, so processes starting together on a fresh
    database migrate one after the other (the later ones find it at head) instead of colliding."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    elif conn.dialect.name == "sqlite":  # a write lock from the start; pysqlite would only begin at the first DML
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def upgrade(engine: Engine) -> None:
    """Apply every migration up to head (a no-op when already there), under the database's migration lock."""
    if current(engine) == HEAD:  # nothing to do, and no Alembic to import (~0.3 s of every `reconcile`)
        return
    from alembic import command  # noqa: PLC0415

    config = _config()
    _quiet_alembic()
    try:
        with _ALEMBIC, engine.begin() as conn:  # alembic's command API swaps module globals: one at a time
            _lock(conn)
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    except SQLAlchemyError as exc:
        raise errors.StoreError(f"cannot migrate the database {safe_url(engine)}: {reason(exc)}") from None


def has_tables(engine: Engine) -> bool:
    try:
        return inspect(engine).has_table("watch_state")
    except SQLAlchemyError as exc:
        raise errors.StoreError(f"cannot read the database {safe_url(engine)}: {reason(exc)}") from None


@contextmanager
def transaction(engine: Engine, doing: str) -> Iterator[Connection]:
    """One committed transaction; a database error becomes one `StoreError` saying what was being done."""
    try:
        with engine.begin() as conn:
            yield conn
    except SQLAlchemyError as exc:
        raise errors.StoreError(f"cannot {doing} in the database {safe_url(engine)}: {reason(exc)}") from None


def safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def reason(exc: SQLAlchemyError) -> str:
    """The driver's first line, which names the cause without the SQL or parameters."""
    original = getattr(exc, "orig", None) or exc
    return str(original).strip().splitlines()[0][:300] if str(original).strip() else type(exc).__name__


_SQLITE_TIME = "%Y-%m-%d %H:%M:%f"  # milliseconds; padded to the microseconds the store writes, so text compares


def database_now(engine: Engine, plus: timedelta = timedelta(0)) -> ColumnElement[Any]:
    """The database's clock (`now()` on PostgreSQL, `strftime('now')` on SQLite), plus `plus`: what processes whose
    clocks disagree compare a lease's or a claim's end against."""
    if engine.dialect.name == "sqlite":
        modifier = f"{plus.total_seconds():+.3f} seconds"
        return func.strftime(_SQLITE_TIME, "now", modifier).concat(literal("000"))
    return func.now() + plus if plus else func.now()

"""The reads of `status`, `history` and the passes, in plain SQL on the driver's own connection (sqlite3 or psycopg):
what a watch's state is, its last action, its newest changes and actions, the notifications not yet delivered.

Without SQLAlchemy on purpose: importing it costs a reading command more than its answer. `status` and `history`
open the connection themselves (`connect`), and only read; a process that holds an engine (the daemon,
`reconcile`) lends one of its pool's (`borrowed`). The SQL is the same on both databases but for the placeholder,
and the rows become model values in `rows`, as SQLAlchemy's do. A driver's error becomes one `StoreError` saying
what was being read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from reconciler import errors, model
from reconciler.store import HEAD, rows, urls

if TYPE_CHECKING:
    from sqlalchemy import Engine

FEW = 100  # watches named in a query; more (a whole configuration) are picked out here
OPEN = "('awaiting_approval', 'planned', 'launched')"
_STATE = ", ".join(rows.STATE_COLUMNS)
_ACTION = ", ".join(rows.ACTION_COLUMNS)
_HISTORY = ", ".join(rows.HISTORY_COLUMNS)
# Times are read in UTC: a session in the server's zone (Debian's default: "Etc/UTC", a ZoneInfo, not UTC itself)
# makes psycopg and then `rows.moment` convert each one again, 7% of `status --json` at 10,000 watches.
UTC_SESSION = "SET TIME ZONE 'UTC'"
STALLED = {  # a stalled link is an error, not a hang: libpq gives up a connect after 10 s, unacknowledged data
    # after 20 s, and probes idle connections (the engine in `reconciler/database.py` connects so too)
    "connect_timeout": 10,
    "tcp_user_timeout": 20_000,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _driver_errors(dialect: str) -> tuple[type[Exception], ...]:
    if dialect == "sqlite":
        return (sqlite3.Error,)
    import psycopg  # noqa: PLC0415  (imported already wherever a PostgreSQL connection was made)

    return (psycopg.Error,)


class Glance:
    """Reads of one connection, which it does not own. `shown` names the database in errors (no password)."""

    def __init__(self, conn: Any, dialect: str, shown: str) -> None:
        self._conn = conn
        self._mark = "?" if dialect == "sqlite" else "%s"
        self.dialect = dialect
        self.shown = shown

    def _rows(self, sql: str, params: Sequence[Any] = (), *, doing: str) -> list[tuple[Any, ...]]:
        errors_ = _driver_errors(self.dialect)
        try:
            cursor = self._conn.cursor()
            try:
                cursor.execute(sql.replace("?", self._mark), tuple(params))
                return list(cursor.fetchall())
            finally:
                cursor.close()
        except errors_ as exc:
            raise errors.StoreError(f"cannot {doing} in the database {self.shown}: {_first_line(exc)}") from None

    def _marks(self, names: Sequence[str]) -> str:
        return ", ".join("?" * len(names)).join("()")

    def revision(self) -> str | None:
        """The schema revision (None when the database has no tables yet)."""
        if self.dialect == "sqlite":
            listed = (
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('watch_state', 'alembic_version')"
            )
        else:  # the tables the search_path finds, as SQLAlchemy (the other commands) finds them
            listed = "SELECT t FROM unnest(ARRAY['watch_state', 'alembic_version']) AS t"
            listed += " WHERE to_regclass(t) IS NOT NULL"
        found = {r[0] for r in self._rows(listed, doing="read the tables")}
        if "watch_state" not in found:
            return None
        if "alembic_version" not in found:
            return ""
        versions = self._rows("SELECT version_num FROM alembic_version", doing="read the schema revision")
        return str(versions[0][0]) if versions else ""

    def states(self, names: Sequence[str] | None = None) -> dict[str, model.WatchState]:
        sql, params = f"SELECT {_STATE} FROM watch_state", list(names or ())
        if names is not None:
            sql += f" WHERE watch IN {self._marks(names)}" if names else " WHERE 1 = 0"
        found = self._rows(sql, params, doing="read the watch states")
        return {r[0]: rows.state_of(r) for r in found}

    def last_actions(self, names: Sequence[str] | None = None) -> dict[str, model.ActionRecord]:
        """Each watch's open action if it has one (nothing may run beside it), else its newest action."""
        these, params = "", list(names or ())
        if names is not None:  # just these watches' rows, through ix_actions_watch_id
            these = f" AND watch IN {self._marks(names)}" if names else " AND 1 = 0"
        newest = f"SELECT max(id) FROM actions WHERE 1 = 1{these} GROUP BY watch"
        sql = f"SELECT {_ACTION} FROM actions WHERE (id IN ({newest}) OR status IN {OPEN}){these} ORDER BY id"
        found: dict[str, model.ActionRecord] = {}
        for r in self._rows(sql, params + params, doing="read the last actions"):
            action = rows.action_of(r)
            kept = found.get(action.watch)
            if kept is None or not kept.status.open:
                found[action.watch] = action
        return found

    def history(self, names: Sequence[str] | None = None, *, limit: int = 50) -> list[rows.HistoryEntry]:
        """The newest `limit` observed changes of these watches (every watch when None)."""
        sql = f"SELECT {_HISTORY} FROM observations{{}} ORDER BY at DESC, id DESC"
        found = self._newest(sql, names, limit, doing="read the history")
        return [rows.entry_of(r) for r in found]

    def actions(self, names: Sequence[str] | None = None, *, limit: int = 50) -> list[model.ActionRecord]:
        """The newest `limit` actions of these watches (every watch when None)."""
        sql = f"SELECT {_ACTION} FROM actions{{}} ORDER BY id DESC"
        found = self._newest(sql, names, limit, doing="read the actions")
        return [rows.action_of(r) for r in found]

    def _newest(self, sql: str, names: Sequence[str] | None, limit: int, *, doing: str) -> list[tuple[Any, ...]]:
        """The first `limit` rows of `sql` (newest first; `{}` where a WHERE goes) of these watches. A few names go
        into the query, each watch's index finding its rows; many (every watch of a configuration of thousands)
        are picked out here from the newest rows, a chunk at a time, since naming them all makes the database
        gather and sort every row of every one of them. The watch is each row's second column."""
        if names is None or len(names) <= FEW:
            where = "" if names is None else f" WHERE watch IN {self._marks(names)}" if names else " WHERE 1 = 0"
            return self._rows(f"{sql.format(where)} LIMIT {int(limit)}", list(names or ()), doing=doing)
        wanted, chunk, offset = set(names), max(limit * 4, 500), 0
        found: list[tuple[Any, ...]] = []
        while len(found) < limit:
            batch = self._rows(f"{sql.format('')} LIMIT {chunk} OFFSET {offset}", doing=doing)
            found += [r for r in batch if r[1] in wanted]
            if len(batch) < chunk:
                break
            offset += chunk
        return found[:limit]

    def backlog(self, targets: Sequence[str], *, instance: str) -> dict[str, model.Backlog]:
        """Each of these targets' undelivered notifications (and how many were ever dropped), for `status`."""
        doing = "read the notification backlog"
        pending = self._rows(
            "SELECT target, count(*), min(created_at), min(next_attempt_at) FROM notifications"
            " WHERE status = 'pending' AND instance = ? GROUP BY target",
            [instance],
            doing=doing,
        )
        dropped_sql = "SELECT target, count(*) FROM notifications WHERE status = 'dropped' AND instance = ?"
        dropped = {t: c for t, c in self._rows(f"{dropped_sql} GROUP BY target", [instance], doing=doing)}
        last_error: dict[str, str] = {}
        for target, error in self._rows(
            "SELECT target, last_error FROM notifications"
            " WHERE status = 'pending' AND last_error IS NOT NULL AND instance = ? ORDER BY seq DESC",
            [instance],
            doing=doing,
        ):
            last_error[target] = error  # the oldest row's error wins: it holds its queue
        found = {t: model.Backlog(target=t, dropped=dropped.get(t, 0)) for t in targets}
        for target, count, oldest, next_at in pending:
            if target in found:  # not a target no longer configured: its rows are dropped after a day
                found[target] = model.Backlog(
                    target=target,
                    undelivered=count,
                    oldest_at=rows.moment(oldest),
                    next_attempt_at=rows.moment(next_at),
                    last_error=last_error.get(target),
                    dropped=dropped.get(target, 0),
                )
        return found


@contextmanager
def connect(url: urls.PlainURL, shown: str) -> Iterator[Glance | None]:
    """A read-only connection of the driver's own; None when there is no SQLite file yet (nothing to read)."""
    if url.backend == "sqlite":
        import os  # noqa: PLC0415

        if url.path is None or not os.path.exists(url.path):
            yield None  # no file is made for a read
            return
        # Not opened read-only ("mode=ro"), though nothing here writes: the journal a killed writer left is
        # rolled back by the next connection to read, which a read-only one cannot do. Waits for a writer as the
        # engine does.
        try:
            conn: Any = sqlite3.connect(url.path, timeout=30)
        except sqlite3.Error as exc:
            raise errors.StoreError(f"cannot open the database {shown}: {_first_line(exc)}") from None
    else:
        import psycopg  # noqa: PLC0415

        try:
            conn = psycopg.connect(url.conninfo, autocommit=True, **STALLED)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise errors.StoreError(f"cannot connect to the database {shown}: {_first_line(exc)}") from None
        try:
            conn.execute(UTC_SESSION)
        except psycopg.Error as exc:
            conn.close()
            raise errors.StoreError(f"cannot read the database {shown}: {_first_line(exc)}") from None
    try:
        yield Glance(conn, url.backend, shown)
    finally:
        conn.close()


@contextmanager
def borrowed(engine: Engine) -> Iterator[Glance]:
    """One connection of the engine's pool, given back (rolled back) when done; after an error, dropped from the
    pool instead (it may be a dead one), quietly, as SQLAlchemy drops a connection that failed it."""
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

    shown = engine.url.render_as_string(hide_password=True)
    failing: tuple[type[Exception], ...] = (SQLAlchemyError, *_driver_errors(engine.dialect.name))
    try:  # the pool raises the driver's own error when it cannot connect, SQLAlchemy's for a pool timeout
        conn = engine.raw_connection()
    except failing as exc:
        original = getattr(exc, "orig", None) or exc
        raise errors.StoreError(f"cannot connect to the database {shown}: {_first_line(original)}") from None
    try:
        yield Glance(conn, engine.dialect.name, shown)
    except errors.StoreError:
        conn.invalidate()
        raise
    finally:
        conn.close()


def at_head(glance: Glance | None) -> Glance | None:
    """The glance if its database is at this version's schema; None when it has none yet (nothing to read)."""
    if glance is None:
        return None
    revision = glance.revision()
    if revision is None:
        return None
    if revision != HEAD:
        raise errors.StoreError(f"the database {glance.shown} is at an older schema; run `reconciler db upgrade`")
    return glance

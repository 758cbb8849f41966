"""The lease row of `leases`, read and written on the database's clock, never a process's.

Every time in a lease comes from the database (`now()` on PostgreSQL, `strftime('now')` on SQLite), so hosts whose
clocks disagree still agree on who holds it. Taking an expired lease (or one whose holder is known dead) is
`acquire`; `renew` extends only a lease its holder still has, unexpired: an expired lease is lost, and its former
holder can only take it again, knowingly, through `acquire`. Receives its `sqlalchemy.Engine`; builds none.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from reconciler import errors
from reconciler.store import schema, tables


class Leases:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _now(self, plus: timedelta = timedelta(0)) -> ColumnElement[Any]:
        return schema.database_now(self.engine, plus)

    def _fail(self, doing: str, exc: SQLAlchemyError) -> errors.StoreError:
        return errors.StoreError(f"cannot {doing} in the database {schema.safe_url(self.engine)}: {schema.reason(exc)}")

    def acquire(self, *, name: str, holder: str, ttl: timedelta, steal_from: str | None = None) -> bool:
        """Take the lease if it is free, expired, already ours, or held by `steal_from` (known dead)."""
        lease = tables.leases
        takeable = or_(lease.c.holder == holder, lease.c.expires_at < self._now())
        if steal_from is not None:
            takeable = or_(takeable, lease.c.holder == steal_from)
        try:
            with self.engine.begin() as conn:
                taken = conn.execute(
                    update(lease)
                    .where(and_(lease.c.name == name, takeable))
                    .values(holder=holder, acquired_at=self._now(), expires_at=self._now(ttl))
                ).rowcount
                if not taken:  # no row yet: the primary key lets exactly one of several inserts win
                    conn.execute(
                        insert(lease).values(
                            name=name, holder=holder, acquired_at=self._now(), expires_at=self._now(ttl)
                        )
                    )
                return True
        except IntegrityError:
            return False
        except SQLAlchemyError as exc:
            raise self._fail("take the lease", exc) from None

    def renew(self, *, name: str, holder: str, ttl: timedelta) -> bool:
        """Extend the lease while `holder` still has it unexpired; False when it expired or was taken."""
        lease = tables.leases
        try:
            with self.engine.begin() as conn:
                mine = and_(lease.c.name == name, lease.c.holder == holder, lease.c.expires_at >= self._now())
                return bool(conn.execute(update(lease).where(mine).values(expires_at=self._now(ttl))).rowcount)
        except SQLAlchemyError as exc:
            raise self._fail("renew the lease", exc) from None

    def release(self, *, name: str, holder: str) -> None:
        lease = tables.leases
        with schema.transaction(self.engine, "release the lease") as conn:
            conn.execute(delete(lease).where(and_(lease.c.name == name, lease.c.holder == holder)))

    def holder(self, *, name: str) -> str | None:
        """Who holds the lease now (an expired lease has no holder)."""
        lease = tables.leases
        with schema.transaction(self.engine, "read the lease") as conn:
            return conn.execute(
                select(lease.c.holder).where(and_(lease.c.name == name, lease.c.expires_at >= self._now()))
            ).scalar_one_or_none()

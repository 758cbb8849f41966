"""Queries that speak model types: read watch states, record a pass, list history, hold the lease.

Receives its `sqlalchemy.Engine`; builds none. Every write of a pass is one transaction, so a crash leaves the
previous pass intact, never half of this one. Database errors are mapped to `StoreError` here, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from reconciler import errors, model
from reconciler.store import schema, tables


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    at: datetime
    watch: str
    verdict: str
    tag: str | None
    digest: str | None
    error: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class RunRecord:
    started_at: datetime
    finished_at: datetime
    checked: int
    errors: int
    summary: str


def _state(row: Any) -> model.WatchState:
    observed = deployed = None
    if row.observed_tag is not None and row.observed_digest is not None:
        observed = model.Seen(tag=row.observed_tag, digest=row.observed_digest, since=row.observed_since)
    if row.deployed_tag is not None and row.deployed_digest is not None:
        deployed = model.Deployed(tag=row.deployed_tag, digest=row.deployed_digest, at=row.deployed_at)
    return model.WatchState(
        watch=row.watch, observed=observed, checked_at=row.checked_at, last_error=row.last_error, deployed=deployed
    )


def _state_row(outcome: model.WatchOutcome) -> dict[str, Any]:
    s, w = outcome.state, outcome.watch
    return {
        "watch": w.name,
        "image": str(w.image),
        "selector": w.selector.describe(),
        "observed_tag": s.observed.tag if s.observed else None,
        "observed_digest": s.observed.digest if s.observed else None,
        "observed_since": s.observed.since if s.observed else None,
        "checked_at": s.checked_at,
        "last_error": s.last_error,
        "deployed_tag": s.deployed.tag if s.deployed else None,
        "deployed_digest": s.deployed.digest if s.deployed else None,
        "deployed_at": s.deployed.at if s.deployed else None,
    }


def _observation_row(outcome: model.WatchOutcome) -> dict[str, Any]:
    result = outcome.result
    seen = result if isinstance(result, model.Observation) else None
    return {
        "watch": outcome.watch.name,
        "at": result.checked_at,
        "tag": seen.tag if seen else None,
        "digest": seen.digest if seen else None,
        "error": result.message if isinstance(result, model.CheckFailure) else None,
        "verdict": outcome.decision.verdict.value,
        "reason": outcome.decision.reason,
    }


class Store:
    """The state store on one database (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _begin(self, doing: str) -> AbstractContextManager[Connection]:
        return schema.transaction(self.engine, doing)

    def states(self, names: Sequence[str] | None = None) -> dict[str, model.WatchState]:
        query = select(tables.watch_state)
        if names is not None:
            query = query.where(tables.watch_state.c.watch.in_(names))
        with self._begin("read the watch states") as conn:
            return {row.watch: _state(row) for row in conn.execute(query)}

    def record_pass(self, report: model.RunReport) -> None:
        """The states, the changes (as observations) and the run itself, in one transaction."""
        if not report.outcomes:
            return
        rows = [_state_row(o) for o in report.outcomes]
        changes = [_observation_row(o) for o in report.outcomes if o.changed]
        failures = sum(1 for o in report.outcomes if isinstance(o.result, model.CheckFailure))
        with self._begin("record the pass") as conn:
            conn.execute(self._upsert_states(), rows)
            if changes:
                conn.execute(insert(tables.observations), changes)
            conn.execute(
                insert(tables.runs).values(
                    started_at=report.started_at,
                    finished_at=report.finished_at,
                    checked=len(report.outcomes),
                    errors=failures,
                    summary=report.summary(),
                )
            )

    def _upsert_states(self) -> Any:
        dialect = self.engine.dialect.name
        stmt: sqlite.Insert | postgresql.Insert
        if dialect == "sqlite":
            stmt = sqlite.insert(tables.watch_state)
        elif dialect == "postgresql":
            stmt = postgresql.insert(tables.watch_state)
        else:
            raise errors.StoreError(f"unsupported database {dialect!r}: use SQLite or PostgreSQL")
        columns = [c.name for c in tables.watch_state.columns if c.name != "watch"]
        return stmt.on_conflict_do_update(
            index_elements=[tables.watch_state.c.watch], set_={c: stmt.excluded[c] for c in columns}
        )

    def history(self, *, watch: str | None = None, limit: int = 50) -> list[HistoryEntry]:
        o = tables.observations
        query = select(o).order_by(o.c.at.desc(), o.c.id.desc()).limit(limit)
        if watch is not None:
            query = query.where(o.c.watch == watch)
        with self._begin("read the history") as conn:
            return [
                HistoryEntry(
                    at=r.at,
                    watch=r.watch,
                    verdict=r.verdict,
                    tag=r.tag,
                    digest=r.digest,
                    error=r.error,
                    reason=r.reason,
                )
                for r in conn.execute(query)
            ]

    def last_run(self) -> RunRecord | None:
        r = tables.runs
        with self._begin("read the last run") as conn:
            row = conn.execute(select(r).order_by(r.c.id.desc()).limit(1)).first()
        if row is None:
            return None
        return RunRecord(
            started_at=row.started_at,
            finished_at=row.finished_at,
            checked=row.checked,
            errors=row.errors,
            summary=row.summary,
        )

    # The lease: one acting instance per database. Portable: a conditional UPDATE, else an INSERT that the
    # primary key makes fail when another holder got there first.
    def acquire_lease(
        self, *, name: str, holder: str, now: datetime, until: datetime, steal_from: str | None = None
    ) -> bool:
        """Take or renew the lease; `steal_from` names a holder known to be dead, whose lease may be taken early."""
        lease = tables.leases
        takeable = or_(lease.c.holder == holder, lease.c.expires_at < now)
        if steal_from is not None:
            takeable = or_(takeable, lease.c.holder == steal_from)
        try:
            with self.engine.begin() as conn:
                taken = conn.execute(
                    update(lease)
                    .where(and_(lease.c.name == name, takeable))
                    .values(holder=holder, acquired_at=now, expires_at=until)
                ).rowcount
                if taken:
                    return True
                conn.execute(insert(lease).values(name=name, holder=holder, acquired_at=now, expires_at=until))
                return True
        except IntegrityError:
            return False
        except SQLAlchemyError as exc:
            raise errors.StoreError(
                f"cannot take the lease in the database {schema.safe_url(self.engine)}: {schema.reason(exc)}"
            ) from None

    def release_lease(self, *, name: str, holder: str) -> None:
        lease = tables.leases
        with self._begin("release the lease") as conn:
            conn.execute(delete(lease).where(and_(lease.c.name == name, lease.c.holder == holder)))

    def lease_holder(self, *, name: str, now: datetime) -> str | None:
        lease = tables.leases
        with self._begin("read the lease") as conn:
            return conn.execute(
                select(lease.c.holder).where(and_(lease.c.name == name, lease.c.expires_at >= now))
            ).scalar_one_or_none()

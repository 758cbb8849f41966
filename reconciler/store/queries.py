"""Queries that speak model types: read watch states, record a pass, list history.

Receives its `sqlalchemy.Engine`; builds none. Every write of a pass is one transaction, so a crash leaves the
previous pass intact, never half of this one. Database errors are mapped to `StoreError` here, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, case, insert, select, update

from reconciler import errors, model
from reconciler.store import glance, notices, rows, schema, tables


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One instance's passes in one hour, rolled up."""

    instance: str
    hour: datetime
    passes: int
    checked: int
    changed: int
    errors: int
    first_started_at: datetime
    last_finished_at: datetime
    last_summary: str


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
        "check_failures": s.failures,
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
    """The state store on one database (SQLite or PostgreSQL); a pass's notices are recorded in its transaction."""

    def __init__(self, engine: Engine, box: notices.NoticeBox | None = None, *, instance: str = "default") -> None:
        self.engine = engine
        self._box = box
        self._instance = instance  # whose hourly `runs` row the passes add themselves to

    def _begin(self, doing: str) -> AbstractContextManager[Connection]:
        return schema.transaction(self.engine, doing)

    def states(self, names: Sequence[str] | None = None) -> dict[str, model.WatchState]:
        with glance.borrowed(self.engine) as reading:
            return reading.states(names)

    def record_pass(self, report: model.RunReport) -> None:
        """The states, the changes (as observations) and the run itself, in one transaction.

        What was observed is written for every watch, with the notices the checks give rise to; `deployed_*` only
        moves for a reason: a baseline (and only while nothing is deployed yet) or a watch without an action
        following what it observed. An action's success moves it in the outbox, never here, so a pass never
        rewrites it from its stale snapshot.
        """
        if not report.outcomes:
            return
        rows = [_state_row(o) for o in report.outcomes]
        changes = [_observation_row(o) for o in report.outcomes if o.changed]
        failures = sum(1 for o in report.outcomes if isinstance(o.result, model.CheckFailure))
        w = tables.watch_state
        with self._begin("record the pass") as conn:
            conn.execute(self._upsert_observed(), rows)
            for outcome in report.outcomes:
                deployed = outcome.state.deployed
                verdict = outcome.decision.verdict
                if deployed is None or verdict not in (model.Verdict.BASELINE, model.Verdict.FOLLOW):
                    continue
                where = w.c.watch == outcome.watch.name
                if verdict is model.Verdict.BASELINE:
                    where = where & w.c.deployed_digest.is_(None)
                conn.execute(
                    update(w)
                    .where(where)
                    .values(deployed_tag=deployed.tag, deployed_digest=deployed.digest, deployed_at=deployed.at)
                )
            if changes:
                conn.execute(insert(tables.observations), changes)
            conn.execute(self._add_run(report, changed=len(changes), failures=failures))
            told = [n for o in report.outcomes for n in o.notices]
            told_rows = self._box.record(conn, told, report.finished_at) if self._box and told else 0
        if told_rows and self._box is not None:
            self._box.announce()

    def _insert(self, table: Table) -> Any:
        """The dialect's INSERT, which can say what to do ON CONFLICT."""
        # Here, not at the top: a dialect's package costs ~20 ms to import, and the commands that only read need
        # none but their database's.
        from sqlalchemy.dialects import postgresql, sqlite  # noqa: PLC0415

        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            return sqlite.insert(table)
        if dialect == "postgresql":
            return postgresql.insert(table)
        raise errors.StoreError(f"unsupported database {dialect!r}: use SQLite or PostgreSQL")

    def _add_run(self, report: model.RunReport, *, changed: int, failures: int) -> Any:
        """This pass, added to its instance's row of the hour it finished in (the row made by the first)."""
        finished = report.finished_at.astimezone(UTC)
        stmt = self._insert(tables.runs_hourly).values(
            instance=self._instance,
            hour=finished.replace(minute=0, second=0, microsecond=0),
            passes=1,
            checked=len(report.outcomes),
            changed=changed,
            errors=failures,
            first_started_at=report.started_at,
            last_finished_at=report.finished_at,
            last_summary=report.summary(),
        )
        r, new = tables.runs_hourly, stmt.excluded
        later = new.last_finished_at >= r.c.last_finished_at  # passes may end out of order: the newest one speaks
        return stmt.on_conflict_do_update(
            index_elements=[r.c.instance, r.c.hour],
            set_={
                "passes": r.c.passes + 1,
                "checked": r.c.checked + new.checked,
                "changed": r.c.changed + new.changed,
                "errors": r.c.errors + new.errors,
                "first_started_at": case(
                    (new.first_started_at < r.c.first_started_at, new.first_started_at), else_=r.c.first_started_at
                ),
                "last_finished_at": case((later, new.last_finished_at), else_=r.c.last_finished_at),
                "last_summary": case((later, new.last_summary), else_=r.c.last_summary),
            },
        )

    def _upsert_observed(self) -> Any:
        """Insert a new watch's whole row; for a known watch, update what was observed and nothing else."""
        stmt = self._insert(tables.watch_state)
        columns = [
            c.name for c in tables.watch_state.columns if c.name != "watch" and not c.name.startswith("deployed")
        ]
        return stmt.on_conflict_do_update(
            index_elements=[tables.watch_state.c.watch], set_={c: stmt.excluded[c] for c in columns}
        )

    def history(self, *, watch: str | Sequence[str] | None = None, limit: int = 50) -> list[rows.HistoryEntry]:
        """The newest `limit` observed changes of these watches (one name or several; every watch when None)."""
        with glance.borrowed(self.engine) as reading:
            return reading.history([watch] if isinstance(watch, str) else watch, limit=limit)

    def last_run(self) -> RunRecord | None:
        """This instance's newest hour of passes, if it ran any."""
        r = tables.runs_hourly
        with self._begin("read the last run") as conn:
            row = conn.execute(
                select(r).where(r.c.instance == self._instance).order_by(r.c.hour.desc()).limit(1)
            ).first()
        if row is None:
            return None
        return RunRecord(
            instance=row.instance,
            hour=row.hour,
            passes=row.passes,
            checked=row.checked,
            changed=row.changed,
            errors=row.errors,
            first_started_at=row.first_started_at,
            last_finished_at=row.last_finished_at,
            last_summary=row.last_summary,
        )

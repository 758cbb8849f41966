"""Housekeeping: the rows older than `[reconciler].keep` go, in small batches.

What goes: `runs_hourly` hours (and version 0.1's `runs` rows), observations and finished actions older than the
cut-off, and delivered or dropped
notifications finished before it. What never goes, however old: a watch's newest observation and newest action,
an open action, a rejection that `reconciler retry` has not lifted (it still holds its digest back) and an
undelivered notification.

A batch is read in one short query (the next rows by age, through an index), then removed by one DELETE of those
of its rows that may go, so it is removed whole or not at all: a prune killed at any point leaves nothing
half-done, and the next one goes on where it stopped. No batch holds a lock for longer than it takes to delete
`BATCH` rows by their keys. Receives its `sqlalchemy.Engine`; builds none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, Table, and_, bindparam, delete, func, select, tuple_

from reconciler import model
from reconciler.store import schema, tables

BATCH = 500
FINISHED = tuple(s for s in tables.ACTION_STATUSES if s not in tables.OPEN_STATUSES)
KINDS = ("runs", "observations", "actions", "notifications")


@dataclass(frozen=True, slots=True)
class Pruned:
    """How many rows of each kind went (or would go, in a dry run)."""

    runs: int = 0
    observations: int = 0
    actions: int = 0
    notifications: int = 0

    @property
    def total(self) -> int:
        return self.runs + self.observations + self.actions + self.notifications

    def counts(self) -> dict[str, int]:
        return {kind: getattr(self, kind) for kind in KINDS}


@dataclass(frozen=True, slots=True)
class _Kind:
    table: Table
    key: Any  # the primary key column
    time: Any  # the column the age is read from, indexed
    prunable: Callable[[datetime], ColumnElement[bool]]


def _old_observations(before: datetime) -> ColumnElement[bool]:
    o = tables.observations
    newer = tables.observations.alias("newer")
    newest = select(func.max(newer.c.at)).where(newer.c.watch == o.c.watch).scalar_subquery()
    return and_(o.c.at < before, o.c.at < newest)  # the newest of its watch stays, however old


def _old_actions(before: datetime) -> ColumnElement[bool]:
    a = tables.actions
    newer = tables.actions.alias("newer")
    newest = select(func.max(newer.c.id)).where(newer.c.watch == a.c.watch).scalar_subquery()
    standing = and_(a.c.status == model.ActionStatus.REJECTED.value, a.c.reset_at.is_(None))
    return and_(a.c.finished_at < before, a.c.status.in_(FINISHED), a.c.id < newest, ~standing)


def _old_notifications(before: datetime) -> ColumnElement[bool]:
    n = tables.notifications
    return and_(n.c.finished_at < before, n.c.status.in_(("delivered", "dropped")))


def _old_hours(before: datetime) -> ColumnElement[bool]:
    return tables.runs_hourly.c.last_finished_at < before


def _old_passes(before: datetime) -> ColumnElement[bool]:
    return tables.runs.c.started_at < before


_KINDS = (  # (what it is counted as, how it is found)
    ("runs", _Kind(tables.runs_hourly, tables.runs_hourly.c.id, tables.runs_hourly.c.last_finished_at, _old_hours)),
    ("runs", _Kind(tables.runs, tables.runs.c.id, tables.runs.c.started_at, _old_passes)),  # version 0.1's
    ("observations", _Kind(tables.observations, tables.observations.c.id, tables.observations.c.at, _old_observations)),
    ("actions", _Kind(tables.actions, tables.actions.c.id, tables.actions.c.finished_at, _old_actions)),
    (
        "notifications",
        _Kind(tables.notifications, tables.notifications.c.seq, tables.notifications.c.finished_at, _old_notifications),
    ),
)


class Pruner:
    """Removes what is older than a cut-off. `on_batch(kind, removed so far)` is told after each batch;
    `should_stop()` is asked before each, and a True ends the prune there (what went, went whole)."""

    def __init__(
        self,
        engine: Engine,
        *,
        batch: int = BATCH,
        on_batch: Callable[[str, int], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.engine = engine
        self._batch = batch
        self._on_batch = on_batch or (lambda kind, removed: None)
        self._should_stop = should_stop

    def prune(self, before: datetime, *, dry_run: bool = False) -> Pruned:
        """Remove (or, in a dry run, count) every kind's rows older than `before`; a stop request ends it between two
        batches (or two counts)."""
        counted = dict.fromkeys(KINDS, 0)
        for name, kind in _KINDS:
            if self._should_stop():
                break
            counted[name] += self._count(kind, before) if dry_run else self._remove(name, kind, before, counted[name])
        return Pruned(**counted)

    def _count(self, kind: _Kind, before: datetime) -> int:
        with schema.transaction(self.engine, "count what the prune would remove") as conn:
            return int(
                conn.execute(select(func.count()).select_from(kind.table).where(kind.prunable(before))).scalar_one()
            )

    def _remove(self, name: str, kind: _Kind, before: datetime, earlier: int) -> int:
        """Batch after batch, oldest first: a read of the next `BATCH` rows older than `before` by the time index
        (going on after the last row the previous read saw, so a row kept is not read again), then one DELETE of
        those of them that may go."""
        removed = 0  # of this table (`earlier`: of another table of the same kind)
        after: tuple[Any, Any] | None = None  # (time, key) of the last row read
        while not self._should_stop():
            query = select(kind.time, kind.key).where(kind.time < before)
            if after is not None:
                query = query.where(tuple_(kind.time, kind.key) > tuple_(*after))  # one range of the index
            with schema.transaction(self.engine, f"find the {name} to prune") as conn:
                found = conn.execute(query.order_by(kind.time, kind.key).limit(self._batch)).all()
            if not found:
                break
            after = (bindparam(None, found[-1][0], kind.time.type), bindparam(None, found[-1][1], kind.key.type))
            keys = [row[1] for row in found]
            with schema.transaction(self.engine, f"prune {name}") as conn:
                removed += conn.execute(delete(kind.table).where(kind.key.in_(keys), kind.prunable(before))).rowcount
            self._on_batch(name, earlier + removed)
        return removed

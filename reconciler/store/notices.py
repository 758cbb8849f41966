"""The notification outbox: a notice is recorded, one row per target that wants it, in the caller's transaction —
the one that makes the state change it tells of — so a crash never loses one. The courier then claims a target's
pending rows of one watch one at a time, oldest first, and records each delivery, retry or drop.

A claim expires (`hold`): a process that died while sending leaves the row to be sent again by the next, which is
why a receiver may see a notice twice, with the same `id`. Only the target's name is stored, never its URL. Each
row names the instance (`[reconciler].instance`) that recorded it, and only that instance's processes deliver it,
count it or drop it: two instances on one database may each have a target called "slack", with different URLs.
Receives its `sqlalchemy.Engine`; builds none.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, func, insert, select, type_coerce, update

from reconciler import model
from reconciler.store import glance, schema, tables

PENDING, DELIVERED, DROPPED = tables.NOTICE_STATUSES


def _outgoing(row: Any) -> model.Outgoing:
    return model.Outgoing(
        seq=row.seq,
        id=row.id,
        target=row.target,
        event=row.event,
        watch=row.watch,
        body=row.body,
        created_at=row.created_at,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_error=row.last_error,
    )


class NoticeBox:
    """Records notices for the targets whose routes want them, and moves them through delivery."""

    def __init__(
        self,
        engine: Engine,
        routes: Sequence[model.Route] = (),
        *,
        recorded: Callable[[], None] = lambda: None,
        instance: str = "default",
    ) -> None:
        self.engine = engine
        self._routes = tuple(routes)
        self._recorded = recorded
        self._instance = instance

    def _ours(self) -> ColumnElement[bool]:
        return tables.notifications.c.instance == self._instance

    def _begin(self, doing: str) -> AbstractContextManager[Connection]:
        return schema.transaction(self.engine, doing)

    # --- recording, inside the caller's transaction -----------------------------------------------------------
    def record(self, conn: Connection, notices: Iterable[model.Notice], now: datetime) -> int:
        """Insert each notice once per target that wants it; how many rows. Call `announce` after the commit."""
        rows = []
        for notice in notices:
            wanted = [r.target for r in self._routes if r.wants(notice)]
            if not wanted:
                continue
            notice_id = str(uuid.uuid4())
            body = notice.body(notice_id)
            rows += [
                {
                    "id": notice_id,
                    "target": target,
                    "event": notice.event.value,
                    "watch": notice.watch,
                    "body": body,
                    "status": PENDING,
                    "created_at": now,
                    "instance": self._instance,
                }
                for target in wanted
            ]
        if rows:
            conn.execute(insert(tables.notifications), rows)
        return len(rows)

    def announce(self) -> None:
        """Wake the courier: rows were committed."""
        self._recorded()

    # --- delivery ---------------------------------------------------------------------------------------------
    def claim(
        self,
        now: datetime,
        *,
        targets: Collection[str],
        hold: Callable[[str], timedelta],
        busy: Collection[tuple[str, str]] = (),
        only: tuple[str, str] | None = None,
    ) -> list[model.Outgoing]:
        """The oldest pending row of each queue (a target and a watch; `only` one), claimed for `hold(target)` by
        the database's clock. A queue whose oldest row backs off (by `now`), is claimed by another process, or is
        `busy` here, waits whole: a later notice never overtakes an earlier one of the same watch."""
        n = tables.notifications
        queue = func.coalesce(n.c.watch, "")
        pending = (n.c.status == PENDING) & n.c.target.in_(list(targets)) & self._ours()
        if only is not None:
            pending = pending & (n.c.target == only[0]) & (queue == only[1])
        oldest = select(func.min(n.c.seq)).where(pending).group_by(n.c.target, queue)
        with self._begin("read the pending notifications") as conn:
            heads = conn.execute(select(n).where(n.c.seq.in_(oldest)).order_by(n.c.seq)).all()
        claimed = []
        for head in heads:
            if queue_of(head) in busy or (head.next_attempt_at is not None and head.next_attempt_at > now):
                continue
            if self._take(head.seq, hold(head.target)):
                claimed.append(_outgoing(head))
        return claimed

    def due_in(self, targets: Collection[str], now: datetime) -> timedelta | None:
        """How long until a pending row waiting now falls due: its back-off (by `now`, the clock that set it) and
        any claim on it (by the database's clock, the one that set that), whichever ends later; the soonest."""
        n = tables.notifications
        waiting = n.c.next_attempt_at.is_not(None) | n.c.claimed_until.is_not(None)
        database = type_coerce(schema.database_now(self.engine), tables.UTCDateTime())
        query = select(n.c.next_attempt_at, n.c.claimed_until, database).where(
            n.c.status == PENDING, n.c.target.in_(list(targets)), waiting, self._ours()
        )
        zero = timedelta(0)
        with self._begin("read when notifications fall due") as conn:
            waits = [
                max(retry - now if retry else zero, claim - database_now if claim else zero)
                for retry, claim, database_now in conn.execute(query)
            ]
        return min(waits, default=None)

    def _take(self, seq: int, hold: timedelta) -> bool:
        """Claim a row, unless another process claimed (and still holds) or finished it meanwhile. Claims are
        timed by the database's clock, as the lease is, so processes whose clocks disagree never send one twice."""
        n = tables.notifications
        free = n.c.claimed_until.is_(None) | (n.c.claimed_until <= schema.database_now(self.engine))
        with self._begin("claim a notification") as conn:
            taken = conn.execute(
                update(n)
                .where(n.c.seq == seq, n.c.status == PENDING, free)
                .values(claimed_until=schema.database_now(self.engine, hold))
            ).rowcount
        return bool(taken)

    def delivered(self, item: model.Outgoing, now: datetime) -> None:
        self._finish(item, "record a delivered notification", status=DELIVERED, finished_at=now, last_error=None)

    def retry(self, item: model.Outgoing, error: str, retry_at: datetime) -> None:
        self._finish(item, "record a failed notification", next_attempt_at=retry_at, last_error=error)

    def drop(self, item: model.Outgoing, error: str, now: datetime) -> None:
        self._finish(item, "drop a notification", status=DROPPED, finished_at=now, last_error=error, tried=False)

    def _finish(self, item: model.Outgoing, doing: str, *, tried: bool = True, **values: Any) -> None:
        n = tables.notifications
        if tried:
            values["attempts"] = n.c.attempts + 1
        with self._begin(doing) as conn:
            conn.execute(
                update(n).where(n.c.seq == item.seq, n.c.status == PENDING).values(claimed_until=None, **values)
            )

    def expired(self, before: datetime, now: datetime) -> list[model.Outgoing]:
        """Drop the pending, unclaimed rows recorded before `before` (a day of retries gone by, or a target that
        cannot deliver); returns those this call dropped (not another's), to be warned of and counted."""
        n = tables.notifications
        stale = (n.c.status == PENDING) & (n.c.created_at < before) & self._ours()
        free = n.c.claimed_until.is_(None) | (n.c.claimed_until <= schema.database_now(self.engine))
        drop = update(n).where(stale & free).values(status=DROPPED, finished_at=now, claimed_until=None)
        with self._begin("drop expired notifications") as conn:
            rows = conn.execute(drop.returning(*n.c)).all()
        return sorted((_outgoing(r) for r in rows), key=lambda item: item.seq)

    def backlog(self, targets: Sequence[str]) -> dict[str, model.Backlog]:
        """Each of these targets' undelivered notifications (and how many were ever dropped), for `status`."""
        with glance.borrowed(self.engine) as reading:
            return reading.backlog(targets, instance=self._instance)


def queue_of(item: model.Outgoing | Any) -> tuple[str, str]:
    """The queue a row waits in: its target and watch ("" for none), delivered one after another, in order."""
    return item.target, item.watch or ""

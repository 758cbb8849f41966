"""The actions outbox (docs/how-it-works.md): planned -> launched -> succeeded | failed (or superseded).

Every transition is its own committed transaction, written before the next step, so a crash leaves a row that
says exactly how far an action got. At most one action per watch and digest is open (a unique partial index).
Receives its `sqlalchemy.Engine`; builds none.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from reconciler import errors, model
from reconciler.store import glance, notices, rows, schema, tables

log = logging.getLogger(__name__)
Tell = Callable[[model.ActionRecord], Sequence[model.Notice]]  # the notices an action's new status gives rise to


class Outbox:
    """Reads and moves the actions of the outbox. A transition given `tell` records the notices it gives rise to
    in its own transaction (`notices`), so none is lost, nor told of a transition that did not happen."""

    def __init__(self, engine: Engine, box: notices.NoticeBox | None = None) -> None:
        self.engine = engine
        self._box = box

    def _begin(self, doing: str) -> AbstractContextManager[Connection]:
        return schema.transaction(self.engine, doing)

    def open_actions(self) -> list[model.ActionRecord]:
        a = tables.actions
        with self._begin("read the open actions") as conn:
            found = conn.execute(select(a).where(a.c.status.in_(tables.OPEN_STATUSES)).order_by(a.c.id))
            return [rows.action_of(r) for r in found]

    def last_actions(self, names: Sequence[str] | None = None) -> dict[str, model.ActionRecord]:
        """Each watch's open action if it has one (nothing may run beside it), else its newest action."""
        with glance.borrowed(self.engine) as reading:
            return reading.last_actions(names)

    def rejections(self, names: Sequence[str] | None = None) -> dict[tuple[str, str], model.ActionRecord]:
        """The digests a person rejected, by (watch, digest), that `reconciler retry` has not offered again."""
        a = tables.actions
        query = select(a).where(a.c.status == model.ActionStatus.REJECTED.value, a.c.reset_at.is_(None))
        if names is not None:
            query = query.where(a.c.watch.in_(names))
        with self._begin("read the rejected digests") as conn:
            return {(r.watch, r.digest): rows.action_of(r) for r in conn.execute(query.order_by(a.c.id))}

    def refs(self) -> set[str]:
        """The external references (AWX jobs, GitHub runs) already recorded on any action: a launch whose answer
        was lost is never matched to a job or run another action (of any watch) already has."""
        a = tables.actions
        with self._begin("read the action references") as conn:
            found = conn.execute(select(a.c.external_ref).where(a.c.external_ref.is_not(None)))
            return {str(r.external_ref) for r in found}

    def plan(
        self,
        *,
        target: model.Target,
        kind: model.ActionKind,
        attempt: int,
        request: Callable[[int], Mapping[str, Any]],
        now: datetime,
        fingerprint: str | None = None,
        outages: int = 0,
        needs_approval: bool = False,
        approval: model.ActionRecord | None = None,
        tell: Tell | None = None,
    ) -> model.ActionRecord | None:
        """Write the planned action before anything is sent; None when one is already open for this target.

        `request` gives the exact request from the new action's id (which its marker carries); it is recorded in
        the same transaction, so a planned row always says what it sends. It must not do I/O.

        `approval`, for a watch that needs one: an earlier action for this target whose approval this one carries
        (a retry), or None to record this one `awaiting_approval` (launched only once a person approves it).
        `tell` gives what its recording tells.
        """
        a = tables.actions
        status = model.ActionStatus.AWAITING_APPROVAL if needs_approval and approval is None else None
        values = {
            "watch": target.watch,
            "kind": kind.value,
            "status": (status or model.ActionStatus.PLANNED).value,
            "approval": model.Approval.WAITING.value if status else (approval.approval if approval else None),
            "decided_by": approval.decided_by if approval is not None else None,
            "decided_at": approval.decided_at if approval is not None else None,
            "released_at": now if approval is not None else None,  # planned under an earlier approval
            "tag": target.tag,
            "digest": target.digest,
            "previous_tag": target.previous_tag,
            "previous_digest": target.previous_digest,
            "attempt": attempt,
            "created_at": now,
            "fingerprint": fingerprint,
            "outages": outages,
        }
        try:
            with self.engine.begin() as conn:
                action_id = conn.execute(insert(a).values(**values).returning(a.c.id)).scalar_one()
                recorded = json.dumps(request(action_id))
                conn.execute(update(a).where(a.c.id == action_id).values(request=recorded))
                row = rows.action_of(conn.execute(select(a).where(a.c.id == action_id)).one())
                told = self._tell(conn, tell, row, now)
        except IntegrityError:
            return None  # the outbox rule: another open action for this watch and digest exists
        except SQLAlchemyError as exc:
            raise errors.StoreError(
                f"cannot plan an action in the database {schema.safe_url(self.engine)}: {schema.reason(exc)}"
            ) from None
        if told and self._box is not None:
            self._box.announce()
        return row

    def release(self, action_id: int, now: datetime) -> model.ActionRecord | None:
        """An approved action waiting for approval becomes planned, to be launched now; None when it no longer
        waits (another process released it, or it was superseded). It is planned from now (`released_at`), so a
        launch whose answer is lost is looked for as any other's, among what was launched since."""
        a = tables.actions
        with self._begin("release an approved action") as conn:
            moved = conn.execute(
                update(a)
                .where(
                    a.c.id == action_id,
                    a.c.status == model.ActionStatus.AWAITING_APPROVAL.value,
                    a.c.approval == model.Approval.APPROVED.value,
                )
                .values(status=model.ActionStatus.PLANNED.value, released_at=now)
            ).rowcount
            return rows.action_of(conn.execute(select(a).where(a.c.id == action_id)).one()) if moved else None

    def _transition(
        self,
        action_id: int,
        doing: str,
        *,
        tell: Tell | None = None,
        now: datetime | None = None,
        **values: Any,
    ) -> model.ActionRecord:
        """Move an open action on; one that another writer closed meanwhile stays as it is (and is returned so)."""
        a = tables.actions
        told = 0
        with self._begin(doing) as conn:
            moved = conn.execute(
                update(a).where(a.c.id == action_id, a.c.status.in_(tables.OPEN_STATUSES)).values(**values)
            ).rowcount
            row = rows.action_of(conn.execute(select(a).where(a.c.id == action_id)).one())
            if moved:
                told = self._tell(conn, tell, row, now)
        if not moved:
            log.warning("action #%d is already %s: did not %s", action_id, row.status.value, doing)
        if told and self._box is not None:
            self._box.announce()
        return row

    def _tell(self, conn: Connection, tell: Tell | None, row: model.ActionRecord, now: datetime | None) -> int:
        if tell is None or self._box is None or now is None:
            return 0
        return self._box.record(conn, tell(row), now)

    def launched(
        self, action_id: int, launch: model.Launch, now: datetime, *, tell: Tell | None = None
    ) -> model.ActionRecord:
        return self._transition(
            action_id,
            "record a launch",
            tell=tell,
            now=now,
            detail=launch.note,
            status=model.ActionStatus.LAUNCHED.value,
            external_ref=launch.ref,
            link=launch.link,
            abort=launch.abort,
            launched_at=now,
        )

    def note(self, action_id: int, detail: str) -> model.ActionRecord:
        """Keep what an open action is waiting for (a cancel not yet effective); it stays open."""
        return self._transition(action_id, "record an action's progress", detail=detail)

    def superseded(self, action_id: int, detail: str, now: datetime) -> model.ActionRecord:
        return self._transition(
            action_id, "supersede an action", status=model.ActionStatus.SUPERSEDED.value, detail=detail, finished_at=now
        )

    def withdrawn(self, action_id: int, detail: str, now: datetime) -> model.ActionRecord | None:
        """Close an action that waits for approval (decided or not) without sending anything; None when it no longer
        waits (a pass released it meanwhile, to be launched; a person rejected it): it is left as it is."""
        a = tables.actions
        values = {"status": model.ActionStatus.SUPERSEDED.value, "detail": detail, "finished_at": now}
        waits = model.ActionStatus.AWAITING_APPROVAL.value
        with self._begin("withdraw an action waiting for approval") as conn:
            moved = conn.execute(update(a).where(a.c.id == action_id, a.c.status == waits).values(**values)).rowcount
            return rows.action_of(conn.execute(select(a).where(a.c.id == action_id)).one()) if moved else None

    def failed(
        self,
        action_id: int,
        detail: str,
        now: datetime,
        *,
        retry_at: datetime | None,
        failure: model.Failure = model.Failure.DEPLOYMENT,
        tell: Tell | None = None,
    ) -> model.ActionRecord:
        return self._transition(
            action_id,
            "record a failed action",
            tell=tell,
            now=now,
            status=model.ActionStatus.FAILED.value,
            detail=detail,
            finished_at=now,
            next_attempt_at=retry_at,
            failure=failure.value,
        )

    def reset(self, watch: str, now: datetime) -> model.ActionRecord | None:
        """`reconciler retry`: the watch's newest action, if it failed, no longer holds it back (no back-off, no
        used-up attempts); every digest of the watch a person rejected is offered again. Returns the newest action
        so reset (a failure, else a rejection), or None when there was none."""
        a = tables.actions
        rejected = model.ActionStatus.REJECTED.value
        with self._begin("reset the watch's failures") as conn:
            row = conn.execute(select(a).where(a.c.watch == watch).order_by(a.c.id.desc()).limit(1)).first()
            if row is None or row.status != model.ActionStatus.FAILED.value:
                row = conn.execute(
                    select(a)
                    .where(a.c.watch == watch, a.c.status == rejected, a.c.reset_at.is_(None))
                    .order_by(a.c.id.desc())
                    .limit(1)
                ).first()
            conn.execute(
                update(a).where(a.c.watch == watch, a.c.status == rejected, a.c.reset_at.is_(None)).values(reset_at=now)
            )
            if row is None:
                return None
            conn.execute(update(a).where(a.c.id == row.id).values(reset_at=now))
            return rows.action_of(conn.execute(select(a).where(a.c.id == row.id)).one())

    def succeeded(
        self, action: model.ActionRecord, detail: str, now: datetime, *, tell: Tell | None = None
    ) -> model.ActionRecord:
        """The action and the watch's new `deployed_*`, in one transaction: deployed moves only on success."""
        a, w = tables.actions, tables.watch_state
        with self._begin("record a successful action") as conn:
            conn.execute(
                update(a)
                .where(a.c.id == action.id)
                .values(status=model.ActionStatus.SUCCEEDED.value, detail=detail, finished_at=now)
            )
            newer = (  # a newer action of this watch already succeeded: an older one must not move deployed back
                select(a.c.id)
                .where(a.c.watch == action.watch, a.c.id > action.id, a.c.status == model.ActionStatus.SUCCEEDED.value)
                .exists()
            )
            conn.execute(
                update(w)
                .where(w.c.watch == action.watch, ~newer)
                .values(deployed_tag=action.tag, deployed_digest=action.digest, deployed_at=now)
            )
            row = rows.action_of(conn.execute(select(a).where(a.c.id == action.id)).one())
            told = self._tell(conn, tell, row, now)
        if told and self._box is not None:
            self._box.announce()
        return row

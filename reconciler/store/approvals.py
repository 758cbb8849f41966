"""A person's yes or no to an action waiting for approval (a watch with `approve = true`), for one watch and one
digest. Deciding is one conditional UPDATE of the waiting row, so two people (or two processes) deciding at once
decide once, and a digest no longer waiting (superseded, decided, unknown) changes nothing. Approving moves no
action on by itself: the instance holding the lease releases the approved action at its next pass.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Engine, select, update

from reconciler import errors, model
from reconciler.store import rows, schema, tables

SHORTEST_DIGEST = 12  # hex characters: as many as the short digest everything shows
_DIGEST = re.compile(r"(?:sha256:)?([0-9a-f]{12,64})")
MAX_NAME = 200
# controls, formatting (bidi overrides, zero widths), surrogates, private use, unassigned, line and paragraph breaks
_INVISIBLE = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")
_FILLERS = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800"}  # letters and symbols that show as blank


def digest_prefix(text: str) -> str:
    """`sha256:` and at least SHORTEST_DIGEST hex characters of a digest (the short one shown will do)."""
    found = _DIGEST.fullmatch(text.strip().lower())
    if found is None:
        raise errors.ConfigError(
            f"--digest: expected a digest such as sha256:0123456789ab (at least {SHORTEST_DIGEST} hex characters), "
            f"got {text[:80]!r}"
        )
    return "sha256:" + found.group(1)


def checked_name(by: str) -> str:
    """Who decides, as stored and shown: one line of at most MAX_NAME characters that shows as it is."""
    name = by.strip()
    hidden = any(unicodedata.category(c) in _INVISIBLE for c in name)
    seen = any(unicodedata.category(c)[0] in "LNPS" and c not in _FILLERS for c in name)
    if not name or len(name) > MAX_NAME or hidden or not seen:
        raise errors.ConfigError(
            f"--by: expected a name of 1 to {MAX_NAME} visible characters on one line, without control characters"
        )
    return name


class Approvals:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _read(self, approval: model.Approval, names: Sequence[str] | None) -> list[model.ActionRecord]:
        a = tables.actions
        query = select(a).where(
            a.c.status.in_(tables.OPEN_STATUSES),  # the outbox's partial index holds the open actions
            a.c.status == model.ActionStatus.AWAITING_APPROVAL.value,
            a.c.approval == approval.value,
        )
        if names is not None:
            query = query.where(a.c.watch.in_(names))
        with schema.transaction(self.engine, "read the actions waiting for approval") as conn:
            return [rows.action_of(r) for r in conn.execute(query.order_by(a.c.id))]

    def waiting(self, names: Sequence[str] | None = None) -> list[model.ActionRecord]:
        """The actions waiting for a person's yes or no, oldest first."""
        return self._read(model.Approval.WAITING, names)

    def approved(self, names: Sequence[str] | None = None) -> list[model.ActionRecord]:
        """Approved, and not yet released by a pass: what the instance holding the lease acts on next."""
        return self._read(model.Approval.APPROVED, names)

    def decide(
        self,
        watch: str,
        digest: str | None,
        *,
        approve: bool,
        by: str,
        now: datetime,
        action_id: int | None = None,
    ) -> model.ActionRecord:
        """Approve or reject the watch's waiting action for this digest (or its only one; with `action_id`, only
        that one); NotWaiting, changing nothing, when there is no such action. An approval not yet acted on may
        still be rejected."""
        by = checked_name(by)
        prefix = digest_prefix(digest) if digest is not None else None
        pending = self.waiting([watch]) + ([] if approve else self.approved([watch]))
        candidates = [
            w for w in pending if (prefix is None or w.digest.startswith(prefix)) and action_id in (None, w.id)
        ]
        if not candidates and action_id is not None and any(w.id != action_id for w in pending):
            raise errors.NotWaiting(f"action #{action_id} of watch {watch} no longer waits for approval: another does")
        if not candidates:
            raise errors.NotWaiting(self._why_not(watch, prefix))
        if len(candidates) > 1:
            shown = ", ".join(c.digest for c in candidates)
            raise errors.NotWaiting(
                f"watch {watch} has {len(candidates)} digests waiting ({shown}); name one with --digest"
            )
        chosen = candidates[0]
        a = tables.actions
        decided = {"decided_by": by, "decided_at": now}
        if approve:
            values = {"approval": model.Approval.APPROVED.value, **decided}
        else:
            values = {
                "approval": model.Approval.REJECTED.value,
                "status": model.ActionStatus.REJECTED.value,
                "finished_at": now,
                "detail": f"not offered again: a newer digest is, or `reconciler retry {watch}` offers it again",
                **decided,
            }
        with schema.transaction(self.engine, "record an approval") as conn:
            moved = conn.execute(
                update(a)
                .where(
                    a.c.id == chosen.id,
                    a.c.status == model.ActionStatus.AWAITING_APPROVAL.value,
                    a.c.approval == (chosen.approval or model.Approval.WAITING).value,
                )
                .values(**values)
            ).rowcount
            row = rows.action_of(conn.execute(select(a).where(a.c.id == chosen.id)).one())
        if not moved:
            raise errors.NotWaiting(self._why_not(watch, chosen.digest))
        return row

    def _why_not(self, watch: str, prefix: str | None) -> str:
        """Why nothing of this watch (and digest) waits for approval, in one sentence."""
        a = tables.actions
        query = select(a).where(a.c.watch == watch).order_by(a.c.id.desc()).limit(1)
        if prefix is not None:
            query = query.where(a.c.digest.startswith(prefix, autoescape=True))
        with schema.transaction(self.engine, "read the watch's actions") as conn:
            row = conn.execute(query).first()
        what = f"{prefix} of watch {watch}" if prefix else f"watch {watch}"
        if row is None:
            return f"nothing waits for approval: {what} has no action"
        newest = rows.action_of(row)
        short = newest.digest[: len("sha256:") + SHORTEST_DIGEST]
        if prefix is None:
            return f"nothing of watch {watch} waits for approval (its newest action, for {short}, is {_said(newest)})"
        return f"{short} of watch {watch} does not wait for approval: it is {_said(newest)}"


def _iso(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment is not None else "an unknown time"


def _said(action: model.ActionRecord) -> str:
    if action.approval is model.Approval.APPROVED and action.status is model.ActionStatus.AWAITING_APPROVAL:
        return f"approved by {action.decided_by} at {_iso(action.decided_at)}, and launched at the next pass"
    if action.approval is model.Approval.APPROVED and action.decided_by:
        return f"{action.status.value.replace('_', ' ')}, approved by {action.decided_by} at {_iso(action.decided_at)}"
    if action.status is model.ActionStatus.REJECTED:
        return f"rejected by {action.decided_by} at {_iso(action.decided_at)}"
    return action.status.value.replace("_", " ")

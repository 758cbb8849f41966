"""Frozen value types of what happens: observations, states, decisions, the outbox's actions and a pass's report.

Nothing here does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from reconciler.model.notices import Notice
from reconciler.model.watches import ActionKind, ImageRef, Watch


class Verdict(enum.StrEnum):
    """What one pass decided for one watch."""

    BASELINE = "baseline"  # first sighting taken as deployed
    IN_SYNC = "in_sync"  # observed == deployed
    SETTLING = "settling"  # new, but not yet seen unchanged for `settle`
    DRIFT = "drift"  # observed != deployed: the action is due
    FOLLOW = "follow"  # changed, and the watch has no action: deployed follows observed
    BUSY = "busy"  # an action for this target is already open (launched, being waited for)
    RETRY_LATER = "retry_later"  # the last attempt failed; the back-off has not passed yet
    GAVE_UP = "gave_up"  # every attempt for this target failed; a newer image starts over
    BLOCKED = "blocked"  # the action is due but cannot be attempted (its secret is not set); nothing is counted
    AWAITING_APPROVAL = "awaiting_approval"  # the action is recorded and waits for a person to approve it
    REJECTED = "rejected"  # a person rejected this digest: it is not offered again; a newer one is
    ERROR = "error"  # the registry could not be asked


class State(enum.StrEnum):
    """What `status` says of a watch."""

    UNKNOWN = "unknown"
    IN_SYNC = "in_sync"
    SETTLING = "settling"
    DRIFTED = "drifted"
    DEPLOYING = "deploying"
    FAILED = "failed"
    ERROR = "error"
    AWAITING_APPROVAL = "awaiting_approval"


class ActionStatus(enum.StrEnum):
    """The outbox: planned -> launched -> succeeded | failed; a planned action never launched is superseded. A
    watch that needs approval first records it awaiting_approval: approved, it becomes planned; else rejected, or
    superseded by a newer digest."""

    AWAITING_APPROVAL = "awaiting_approval"
    PLANNED = "planned"
    LAUNCHED = "launched"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SUPERSEDED = "superseded"
    REJECTED = "rejected"

    @property
    def open(self) -> bool:
        """Open: nothing else runs for the watch beside it (awaiting approval included)."""
        return self in (ActionStatus.AWAITING_APPROVAL, ActionStatus.PLANNED, ActionStatus.LAUNCHED)


class Approval(enum.StrEnum):
    """A person's say on an action of a watch with `approve = true`."""

    WAITING = "waiting"
    APPROVED = "approved"
    REJECTED = "rejected"


class Failure(enum.StrEnum):
    """Why a failed action failed, which decides how it is retried."""

    DEPLOYMENT = "deployment"  # it ran and failed (or was refused): uses up one of `max_attempts`
    OUTAGE = "outage"  # nothing reached the system: backed off, but no attempt is used up
    REFUSED = "refused"  # a retry cannot succeed (ignored vars): not retried until the watch's action changes


@dataclass(frozen=True, slots=True)
class Seen:
    """A tag and the digest behind it; `since` is when this pair was first observed."""

    tag: str
    digest: str
    since: datetime


@dataclass(frozen=True, slots=True)
class Deployed:
    tag: str
    digest: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Observation:
    """What the registry answered for a watch."""

    tag: str
    digest: str
    checked_at: datetime


@dataclass(frozen=True, slots=True)
class CheckFailure:
    """The registry could not be asked; `message` is the user-facing sentence."""

    message: str
    checked_at: datetime


CheckResult = Observation | CheckFailure


@dataclass(frozen=True, slots=True)
class WatchState:
    """What the database remembers of a watch: seen and deployed kept apart."""

    watch: str
    observed: Seen | None = None
    checked_at: datetime | None = None
    last_error: str | None = None
    deployed: Deployed | None = None
    failures: int = 0  # checks failed in a row (0 after one that worked)


@dataclass(frozen=True, slots=True)
class Target:
    """What an action deploys: the observed tag and digest, and what was deployed before."""

    watch: str
    image: ImageRef
    tag: str
    digest: str
    previous_tag: str | None = None
    previous_digest: str | None = None

    def placeholders(self) -> dict[str, str]:
        """The values of `{image}`, `{tag}`, `{digest}`, `{previous_tag}`, `{previous_digest}`, `{watch}`."""
        return {
            "image": str(self.image),
            "tag": self.tag,
            "digest": self.digest,
            "previous_tag": self.previous_tag or "",
            "previous_digest": self.previous_digest or "",
            "watch": self.watch,
        }


@dataclass(frozen=True, slots=True)
class Launch:
    """A launched action: its external reference (AWX job id) and where a person can look at it."""

    ref: str
    link: str | None = None
    note: str | None = None  # a warning worth keeping with the action (e.g. a pull policy that may not pull)
    abort: str | None = None  # started, but must be stopped at once and fail with this reason (AWX ignored our vars)


@dataclass(frozen=True, slots=True)
class Finish:
    """How a launched action ended; `final`: a retry cannot succeed until the watch's action changes."""

    succeeded: bool
    detail: str
    final: bool = False


@dataclass(frozen=True, slots=True)
class Unfinished:
    """A wait that ended with the action still running (a cancel not yet effective): it stays open, followed later."""

    detail: str


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One row of the outbox: what was (or is to be) done for one watch and target, and how it went."""

    id: int
    watch: str
    kind: ActionKind
    status: ActionStatus
    tag: str
    digest: str
    attempt: int
    created_at: datetime
    previous_tag: str | None = None
    previous_digest: str | None = None
    request: Mapping[str, object] | None = None  # what is sent: method, URL, body (never a secret)
    external_ref: str | None = None  # the AWX job id, once launched
    link: str | None = None  # where a person can look at it (the AWX UI)
    detail: str | None = None
    launched_at: datetime | None = None
    finished_at: datetime | None = None
    next_attempt_at: datetime | None = None
    failure: Failure | None = None  # how a failed action failed
    fingerprint: str | None = None  # `fingerprint(action)` of the configuration it was planned under
    outages: int = 0  # outage failures of the same attempt before this action (their back-off grows)
    abort: str | None = None  # the launched job must be canceled: why
    reset_at: datetime | None = None  # `reconciler retry`: its failures no longer hold the watch back
    approval: Approval | None = None  # None: no approval was needed
    decided_by: str | None = None  # who approved or rejected it
    decided_at: datetime | None = None
    released_at: datetime | None = None  # when an approved action was planned, to be launched

    @property
    def planned_at(self) -> datetime:
        """When it was planned: what it launches was sent after this (an approved action: once released)."""
        return self.released_at or self.created_at

    @property
    def waiting(self) -> bool:
        """Recorded and waiting for a person's yes or no."""
        return self.status is ActionStatus.AWAITING_APPROVAL and self.approval is Approval.WAITING

    @property
    def approved(self) -> bool:
        return self.approval is Approval.APPROVED

    def targets(self, tag: str, digest: str) -> bool:
        return (self.tag, self.digest) == (tag, digest)


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: str


@dataclass(frozen=True, slots=True)
class WatchOutcome:
    """One watch in one pass: what was seen, decided, and what state it leaves."""

    watch: Watch
    result: CheckResult
    decision: Decision
    state: WatchState
    changed: bool  # the observed tag/digest or the error differs from the previous pass
    action: ActionRecord | None = None  # taken this pass, or the open/failed one the decision is about
    acted: bool = False  # whether `action` was carried out (or resumed) in this pass
    preview: Mapping[str, object] | None = None  # --dry-run: the exact request it would send, or {"error": …}
    notices: tuple[Notice, ...] = ()  # what the check tells people (drift, check_failing, recovered)


@dataclass(frozen=True, slots=True)
class RunReport:
    """One pass over the watches, counted."""

    started_at: datetime
    finished_at: datetime
    dry_run: bool
    outcomes: tuple[WatchOutcome, ...]

    def count(self, verdict: Verdict) -> int:
        return sum(1 for o in self.outcomes if o.decision.verdict is verdict)

    def acted(self, status: ActionStatus) -> int:
        return sum(1 for o in self.outcomes if o.acted and o.action is not None and o.action.status is status)

    def summary(self) -> str:
        counts = ", ".join(f"{v.value}={self.count(v)}" for v in Verdict if self.count(v))
        seconds = (self.finished_at - self.started_at).total_seconds()
        n = len(self.outcomes)
        actions = ", ".join(f"{s.value}={self.acted(s)}" for s in ActionStatus if self.acted(s))
        return f"checked {n} watch{'' if n == 1 else 'es'} in {seconds:.2f}s: {counts or 'nothing to do'}" + (
            f"; actions: {actions}" if actions else ""
        )

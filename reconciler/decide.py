"""Pure drift decisions: from what the registry said and what the database remembers, what to do and why.

`decide` returns a verdict with a human-readable reason; `advance` computes the state the pass leaves;
`state_of` says what `status` shows. No I/O, no clock (time is the `now` parameter), no logging.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from reconciler import model

Verdict = model.Verdict
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_MAX = timedelta(minutes=30)


def backoff(attempt: int) -> timedelta:
    """How long after failed attempt (or outage) number `attempt` the next may start: 30s, 1m, 2m, … at most 30m."""
    return min(BACKOFF_BASE * (1 << min(max(attempt - 1, 0), 16)), BACKOFF_MAX)


def _fresh_start(last: model.ActionRecord, action: model.Action | None) -> bool:
    """Whether a failure no longer counts: `reconciler retry` reset it, or the watch's action changed since."""
    changed = action is not None and last.fingerprint is not None and last.fingerprint != model.fingerprint(action)
    return last.reset_at is not None or changed


def next_attempt(
    last: model.ActionRecord | None, target: model.Observation, action: model.Action | None = None
) -> tuple[int, int]:
    """The attempt number of a new action, and how many outages of that attempt came before it.

    Counting goes on after deployment failures for the same target; an outage (nothing reached the system) uses
    up no attempt but lengthens the back-off; a reset or a changed action starts over at 1.
    """
    if last is None or not last.targets(target.tag, target.digest) or _fresh_start(last, action):
        return 1, 0
    if last.status is model.ActionStatus.FAILED and last.failure is model.Failure.OUTAGE:
        return last.attempt, last.outages + 1
    if last.status is model.ActionStatus.FAILED:
        return last.attempt + 1, 0
    return last.attempt, last.outages  # superseded before it launched: that attempt never happened


def _same(seen: model.Seen | model.Deployed | None, result: model.Observation) -> bool:
    return seen is not None and (seen.tag, seen.digest) == (result.tag, result.digest)


def _since(state: model.WatchState | None, result: model.Observation, now: datetime) -> datetime:
    """When the observed pair was first seen: kept while it stays the same, reset when it changes."""
    if state is not None and _same(state.observed, result) and state.observed is not None:
        return state.observed.since
    return now


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def _held_back(*, watch: model.Watch, last: model.ActionRecord, target: str, now: datetime) -> model.Decision | None:
    """What keeps a failed target from being tried again now: a refusal, used-up attempts, or its back-off."""
    if last.failure is model.Failure.REFUSED:
        return model.Decision(
            Verdict.GAVE_UP,
            f"action #{last.id} for {target} cannot succeed as configured ({last.detail}); not retried "
            "until the watch's action changes or `reconciler retry` is run",
        )
    if last.failure is not model.Failure.OUTAGE and last.attempt >= watch.max_attempts:
        tried = "the only attempt" if last.attempt == 1 else f"all {last.attempt} attempts"
        return model.Decision(Verdict.GAVE_UP, f"{tried} for {target} failed; last: {last.detail}")
    if last.next_attempt_at is not None and now < last.next_attempt_at:
        left = int((last.next_attempt_at - now).total_seconds())
        what = "could not be launched" if last.failure is model.Failure.OUTAGE else "failed"
        return model.Decision(
            Verdict.RETRY_LATER, f"attempt {last.attempt} for {target} {what} ({last.detail}); retry in {left}s"
        )
    return None


def decide(
    *,
    watch: model.Watch,
    result: model.CheckResult,
    state: model.WatchState | None,
    now: datetime,
    last_action: model.ActionRecord | None = None,
    rejection: model.ActionRecord | None = None,
) -> model.Decision:
    """The verdict of one pass for one watch; `last_action` is the watch's open action if it has one, else its
    newest; `rejection`, the action by which a person rejected the digest observed (not offered again)."""
    if isinstance(result, model.CheckFailure):
        return model.Decision(Verdict.ERROR, result.message)
    deployed = state.deployed if state is not None else None
    target = f"{result.tag}@{_short(result.digest)}"
    if deployed is None:
        if watch.action is None:
            return model.Decision(Verdict.BASELINE, f"first sighting of {target}; no action configured")
        if watch.first_seen is model.FirstSeen.BASELINE:
            return model.Decision(Verdict.BASELINE, f"first sighting of {target} taken as deployed")
    elif _same(deployed, result):
        return model.Decision(Verdict.IN_SYNC, f"{target} is deployed")
    was = "nothing" if deployed is None else f"{deployed.tag}@{_short(deployed.digest)}"
    if watch.action is None:
        return model.Decision(Verdict.FOLLOW, f"{was} -> {target}; no action configured")
    waited = now - _since(state, result, now)
    if waited < watch.settle:
        left = int((watch.settle - waited).total_seconds())
        return model.Decision(Verdict.SETTLING, f"{target} must stay unchanged {left}s more before acting")
    last = last_action
    approved = False
    if last is not None and last.status is model.ActionStatus.AWAITING_APPROVAL:
        waiting = _awaiting(watch, last, result)
        if waiting is not None:
            return waiting
        approved = awaits_this(watch, last, result)  # approved: it is released and launched now
    elif last is not None and last.status.open:  # whatever it targets: nothing ever runs beside an open action
        running = f"{last.tag}@{_short(last.digest)}"
        waits = "" if last.targets(result.tag, result.digest) else f"; {target} waits for it"
        return model.Decision(Verdict.BUSY, f"action #{last.id} for {running} is {last.status.value}{waits}")
    if rejection is not None and not (last is not None and last.status.open and last.id > rejection.id):
        return model.Decision(
            Verdict.REJECTED,
            f"{target} was rejected by {rejection.decided_by} (action #{rejection.id}); not offered again: a newer "
            f"digest is, or `reconciler retry {watch.name}` offers it again",
        )
    if (
        last is not None
        and last.targets(result.tag, result.digest)
        and last.status is model.ActionStatus.FAILED
        and not _fresh_start(last, watch.action)
    ):
        held = _held_back(watch=watch, last=last, target=target, now=now)
        if held is not None:
            return held
    if watch.cannot_act is not None:  # not attempted, so no attempt is counted; the secret's return makes it act
        return model.Decision(Verdict.BLOCKED, f"{was} deployed, {target} observed; not acted on: {watch.cannot_act}")
    if approved and last is not None:
        return model.Decision(Verdict.DRIFT, f"{was} deployed, {target} observed; approved by {last.decided_by}")
    if watch.approve and not carries_approval(watch, last, result):
        return model.Decision(Verdict.DRIFT, f"{was} deployed, {target} observed; needs approval")
    return model.Decision(Verdict.DRIFT, f"{was} deployed, {target} observed")


def awaits_this(watch: model.Watch, action: model.ActionRecord, seen: model.Observation | model.Target) -> bool:
    """Whether an action awaiting approval still stands for what is seen: the same digest, under the same
    configuration (its recorded request is what a person approves), on a watch that still needs approval."""
    return (
        watch.approve
        and watch.action is not None
        and action.status is model.ActionStatus.AWAITING_APPROVAL
        and action.targets(seen.tag, seen.digest)
        and action.fingerprint in (None, model.fingerprint(watch.action))
    )


def carries_approval(
    watch: model.Watch, last: model.ActionRecord | None, seen: model.Observation | model.Target
) -> bool:
    """Whether a new action for what is seen needs no approval of its own: an earlier one for the same digest and
    configuration was approved (a retry after a failure, or a launch a stopped process never made)."""
    retried = last is not None and (  # failed, or released but never launched (a process stopped first)
        last.status is model.ActionStatus.FAILED
        or (last.status is model.ActionStatus.SUPERSEDED and last.external_ref is None and last.released_at is not None)
    )
    return (
        retried
        and last is not None
        and watch.action is not None
        and last.approved
        and last.targets(seen.tag, seen.digest)
        and last.fingerprint in (None, model.fingerprint(watch.action))
    )


def withdrawn(state: model.WatchState | None, last: model.ActionRecord | None) -> str | None:
    """Why an action waiting for approval (approved or not) no longer stands for what is observed: the deployed
    digest is observed again, or another one (the pass that acts on it records its own); None when it stands."""
    observed = state.observed if state is not None and state.last_error is None else None
    if last is None or last.status is not model.ActionStatus.AWAITING_APPROVAL or observed is None:
        return None
    deployed = state.deployed if state is not None else None
    if deployed is not None and (observed.tag, observed.digest) == (deployed.tag, deployed.digest):
        return "the deployed digest is observed again"
    if not last.targets(observed.tag, observed.digest):
        return f"{observed.tag}@{_short(observed.digest)} is observed now"
    return None


def _awaiting(watch: model.Watch, last: model.ActionRecord, seen: model.Observation) -> model.Decision | None:
    """The decision while an action waits for approval: it waits on; None when it is approved (released now) or
    no longer stands (a newer digest, or changed configuration: it is superseded, and the new target waits)."""
    if not awaits_this(watch, last, seen) or last.approved:
        return None
    return model.Decision(
        Verdict.AWAITING_APPROVAL,
        f"action #{last.id} for {last.tag}@{_short(last.digest)} needs approval: "
        f"`reconciler approve {watch.name} --digest {_short(last.digest)}` (or reject)",
    )


def advance(
    *,
    state: model.WatchState | None,
    result: model.CheckResult,
    decision: model.Decision,
    watch: str,
    now: datetime,
) -> model.WatchState:
    """The state a pass leaves: observed always moves; deployed moves on a baseline or for a watch without action."""
    previous = state or model.WatchState(watch=watch)
    if isinstance(result, model.CheckFailure):
        return model.WatchState(
            watch=watch,
            observed=previous.observed,
            checked_at=result.checked_at,
            last_error=result.message,
            deployed=previous.deployed,
            failures=previous.failures + 1,
        )
    observed = model.Seen(tag=result.tag, digest=result.digest, since=_since(state, result, now))
    deployed = previous.deployed
    if decision.verdict in (Verdict.BASELINE, Verdict.FOLLOW):
        deployed = model.Deployed(tag=result.tag, digest=result.digest, at=now)
    return model.WatchState(
        watch=watch, observed=observed, checked_at=result.checked_at, last_error=None, deployed=deployed
    )


def changed(previous: model.WatchState | None, current: model.WatchState) -> bool:
    """Whether a pass saw something new: another tag or digest, or an error appearing or changing."""
    if previous is None:
        return True
    before = (previous.observed.tag, previous.observed.digest) if previous.observed else None
    after = (current.observed.tag, current.observed.digest) if current.observed else None
    return before != after or previous.last_error != current.last_error


def state_of(
    *,
    watch: model.Watch,
    state: model.WatchState | None,
    now: datetime,
    last_action: model.ActionRecord | None = None,
) -> model.State:
    """What `status` shows, from the stored state (and the watch's newest action) alone."""
    if last_action is not None and last_action.waiting and withdrawn(state, last_action) is None:
        return model.State.AWAITING_APPROVAL
    if last_action is not None and last_action.status.open and withdrawn(state, last_action) is None:
        return model.State.DEPLOYING
    if state is None or state.checked_at is None:
        return model.State.UNKNOWN
    if state.last_error is not None:
        return model.State.ERROR
    observed, deployed = state.observed, state.deployed
    if observed is None:
        return model.State.UNKNOWN
    if watch.action is None or (
        deployed is not None and (observed.tag, observed.digest) == (deployed.tag, deployed.digest)
    ):
        return model.State.IN_SYNC
    if (
        last_action is not None
        and last_action.status is model.ActionStatus.FAILED
        and last_action.targets(observed.tag, observed.digest)
        and not _fresh_start(last_action, watch.action)
    ):
        return model.State.FAILED
    if now - observed.since < watch.settle:
        return model.State.SETTLING
    return model.State.DRIFTED

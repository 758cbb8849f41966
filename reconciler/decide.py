"""Pure drift decisions: from what the registry said and what the database remembers, what to do and why.

`decide` returns a verdict with a human-readable reason; `advance` computes the state the pass leaves;
`state_of` says what `status` shows. No I/O, no clock (time is the `now` parameter), no logging.
"""

from __future__ import annotations

from datetime import datetime

from reconciler import model

Verdict = model.Verdict


def _same(seen: model.Seen | model.Deployed | None, result: model.Observation) -> bool:
    return seen is not None and (seen.tag, seen.digest) == (result.tag, result.digest)


def _since(state: model.WatchState | None, result: model.Observation, now: datetime) -> datetime:
    """When the observed pair was first seen: kept while it stays the same, reset when it changes."""
    if state is not None and _same(state.observed, result) and state.observed is not None:
        return state.observed.since
    return now


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def decide(
    *, watch: model.Watch, result: model.CheckResult, state: model.WatchState | None, now: datetime
) -> model.Decision:
    """The verdict of one pass for one watch."""
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
    return model.Decision(Verdict.DRIFT, f"{was} deployed, {target} observed")


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


def state_of(*, watch: model.Watch, state: model.WatchState | None, now: datetime) -> model.State:
    """What `status` shows, from the stored state alone."""
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
    if now - observed.since < watch.settle:
        return model.State.SETTLING
    return model.State.DRIFTED

"""The pure drift decision: verdicts, the state a pass leaves, what counts as a change, and what `status` shows.

Time is always a parameter: every test uses fixed datetimes derived from `T0`, never the clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler import decide, model

T0 = datetime(2026, 8, 3, 12, 0, 0, tzinfo=UTC)
IMAGE = model.ImageRef.parse("example/app")
AWX = model.AwxAction(server="awx", template="deploy app")
Verdict = model.Verdict
State = model.State


def digest(char: str) -> str:
    return "sha256:" + char * 64


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def watch(
    *,
    action: model.Action | None = AWX,
    settle: timedelta = timedelta(0),
    first_seen: model.FirstSeen = model.FirstSeen.BASELINE,
) -> model.Watch:
    return model.Watch(
        name="app",
        image=IMAGE,
        selector=model.TagSelector("latest"),
        settle=settle,
        first_seen=first_seen,
        action=action,
    )


def seen(tag: str, char: str, now: datetime) -> model.Observation:
    return model.Observation(tag=tag, digest=digest(char), checked_at=now)


def failure(now: datetime, message: str = "registry.example: 503 Service Unavailable") -> model.CheckFailure:
    return model.CheckFailure(message=message, checked_at=now)


def in_sync_state(tag: str = "latest", char: str = "a", *, now: datetime = T0) -> model.WatchState:
    return model.WatchState(
        watch="app",
        observed=model.Seen(tag=tag, digest=digest(char), since=now),
        checked_at=now,
        deployed=model.Deployed(tag=tag, digest=digest(char), at=now),
    )


def step(
    w: model.Watch, state: model.WatchState | None, result: model.CheckResult, now: datetime
) -> tuple[model.Decision, model.WatchState]:
    """One pass for one watch, as the engine chains it."""
    decision = decide.decide(watch=w, result=result, state=state, now=now)
    return decision, decide.advance(state=state, result=result, decision=decision, watch=w.name, now=now)


def run(
    w: model.Watch, passes: Sequence[tuple[model.CheckResult, datetime]], state: model.WatchState | None = None
) -> tuple[list[Verdict], model.WatchState | None]:
    verdicts = []
    for result, now in passes:
        decision, state = step(w, state, result, now)
        verdicts.append(decision.verdict)
    return verdicts, state


# --- decide ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("w", "state", "result", "expected"),
    [
        pytest.param(watch(), None, seen("latest", "a", T0), Verdict.BASELINE, id="first-sighting-baseline"),
        pytest.param(
            watch(first_seen=model.FirstSeen.DEPLOY),
            None,
            seen("latest", "a", T0),
            Verdict.DRIFT,
            id="first-sighting-deploy-with-action",
        ),
        pytest.param(
            watch(action=None, first_seen=model.FirstSeen.DEPLOY),
            None,
            seen("latest", "a", T0),
            Verdict.BASELINE,
            id="first-sighting-deploy-without-action",
        ),
        pytest.param(watch(), in_sync_state(), seen("latest", "a", at(300)), Verdict.IN_SYNC, id="unchanged"),
        pytest.param(watch(), in_sync_state(), seen("latest", "b", at(300)), Verdict.DRIFT, id="re-pushed-tag"),
        pytest.param(watch(), in_sync_state("1.0.0"), seen("1.0.1", "b", at(300)), Verdict.DRIFT, id="new-release-tag"),
        pytest.param(
            watch(),
            in_sync_state("1.0.0"),
            seen("1.0.1", "a", at(300)),
            Verdict.DRIFT,
            id="new-tag-same-digest",
        ),
        pytest.param(
            watch(action=None),
            in_sync_state(),
            seen("latest", "b", at(300)),
            Verdict.FOLLOW,
            id="change-without-action",
        ),
        pytest.param(watch(), in_sync_state(), failure(at(300)), Verdict.ERROR, id="check-failure"),
        pytest.param(watch(), None, failure(T0), Verdict.ERROR, id="check-failure-first-pass"),
    ],
)
def test_verdict(w: model.Watch, state: model.WatchState | None, result: model.CheckResult, expected: Verdict) -> None:
    decision = decide.decide(watch=w, result=result, state=state, now=result.checked_at)
    assert decision.verdict is expected
    assert decision.reason


def test_reasons_name_the_tags_and_short_digests() -> None:
    decision = decide.decide(watch=watch(), result=seen("1.0.1", "b", at(5)), state=in_sync_state("1.0.0"), now=at(5))
    assert decision.reason == f"1.0.0@{'a' * 12} deployed, 1.0.1@{'b' * 12} observed"


def test_error_reason_is_the_failure_message() -> None:
    decision = decide.decide(watch=watch(), result=failure(T0, "boom: do X"), state=None, now=T0)
    assert decision == model.Decision(Verdict.ERROR, "boom: do X")


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        pytest.param(0, Verdict.SETTLING, id="just-seen"),
        pytest.param(10, Verdict.SETTLING, id="seen-10s-ago"),
        pytest.param(59.999999, Verdict.SETTLING, id="a-microsecond-short"),
        pytest.param(60, Verdict.DRIFT, id="exactly-settled"),
        pytest.param(61, Verdict.DRIFT, id="seen-61s-ago"),
    ],
)
def test_settle_against_stored_since(age: float, expected: Verdict) -> None:
    state = model.WatchState(
        watch="app",
        observed=model.Seen(tag="latest", digest=digest("b"), since=T0),
        checked_at=T0,
        deployed=model.Deployed(tag="latest", digest=digest("a"), at=T0 - timedelta(days=1)),
    )
    now = at(age)
    decision = decide.decide(
        watch=watch(settle=timedelta(seconds=60)), result=seen("latest", "b", now), state=state, now=now
    )
    assert decision.verdict is expected


def test_settle_keeps_since_across_passes_while_unchanged() -> None:
    w = watch(settle=timedelta(seconds=60))
    verdicts, state = run(
        w,
        [
            (seen("latest", "b", at(0)), at(0)),
            (seen("latest", "b", at(10)), at(10)),
            (seen("latest", "b", at(30)), at(30)),
            (seen("latest", "b", at(61)), at(61)),
        ],
        state=in_sync_state(now=T0 - timedelta(days=1)),
    )
    assert verdicts == [Verdict.SETTLING, Verdict.SETTLING, Verdict.SETTLING, Verdict.DRIFT]
    assert state is not None and state.observed is not None
    assert state.observed.since == at(0)
    assert state.checked_at == at(61)
    # Drift does not move deployed: only a successful action does.
    assert state.deployed is not None and state.deployed.digest == digest("a")


def test_settle_restarts_when_the_digest_changes_again() -> None:
    w = watch(settle=timedelta(seconds=60))
    verdicts, state = run(
        w,
        [
            (seen("latest", "b", at(0)), at(0)),
            (seen("latest", "b", at(50)), at(50)),
            (seen("latest", "c", at(55)), at(55)),  # pushed again: the clock restarts
            (seen("latest", "c", at(70)), at(70)),  # 70s after b, but only 15s after c
            (seen("latest", "c", at(114)), at(114)),
            (seen("latest", "c", at(115)), at(115)),
        ],
        state=in_sync_state(now=T0 - timedelta(days=1)),
    )
    assert verdicts == [
        Verdict.SETTLING,
        Verdict.SETTLING,
        Verdict.SETTLING,
        Verdict.SETTLING,
        Verdict.SETTLING,
        Verdict.DRIFT,
    ]
    assert state is not None and state.observed is not None
    assert state.observed.since == at(55)


def test_settle_survives_a_failed_check() -> None:
    w = watch(settle=timedelta(seconds=60))
    verdicts, state = run(
        w,
        [
            (seen("latest", "b", at(0)), at(0)),
            (failure(at(30)), at(30)),
            (seen("latest", "b", at(60)), at(60)),
        ],
        state=in_sync_state(now=T0 - timedelta(days=1)),
    )
    assert verdicts == [Verdict.SETTLING, Verdict.ERROR, Verdict.DRIFT]
    assert state is not None and state.observed is not None and state.observed.since == at(0)


def test_first_sighting_deploy_settles_too() -> None:
    w = watch(settle=timedelta(seconds=60), first_seen=model.FirstSeen.DEPLOY)
    verdicts, _ = run(w, [(seen("latest", "a", at(0)), at(0)), (seen("latest", "a", at(60)), at(60))])
    assert verdicts == [Verdict.SETTLING, Verdict.DRIFT]


def test_returning_to_the_deployed_digest_is_in_sync_without_settling() -> None:
    w = watch(settle=timedelta(seconds=60))
    verdicts, _ = run(
        w,
        [(seen("latest", "b", at(0)), at(0)), (seen("latest", "a", at(10)), at(10))],
        state=in_sync_state(now=T0 - timedelta(days=1)),
    )
    assert verdicts == [Verdict.SETTLING, Verdict.IN_SYNC]


# --- advance --------------------------------------------------------------------------------------------------


def test_baseline_takes_the_first_sighting_as_deployed() -> None:
    decision, state = step(watch(), None, seen("latest", "a", T0), T0)
    assert decision.verdict is Verdict.BASELINE
    assert state == model.WatchState(
        watch="app",
        observed=model.Seen(tag="latest", digest=digest("a"), since=T0),
        checked_at=T0,
        last_error=None,
        deployed=model.Deployed(tag="latest", digest=digest("a"), at=T0),
    )


def test_first_sighting_deploy_leaves_nothing_deployed() -> None:
    _, state = step(watch(first_seen=model.FirstSeen.DEPLOY), None, seen("latest", "a", T0), T0)
    assert state.observed == model.Seen(tag="latest", digest=digest("a"), since=T0)
    assert state.deployed is None


def test_without_action_deployed_follows_observed() -> None:
    w = watch(action=None)
    verdicts, state = run(
        w,
        [
            (seen("latest", "a", at(0)), at(0)),
            (seen("latest", "b", at(300)), at(300)),
            (seen("latest", "b", at(600)), at(600)),
        ],
    )
    assert verdicts == [Verdict.BASELINE, Verdict.FOLLOW, Verdict.IN_SYNC]
    assert state is not None
    assert state.deployed == model.Deployed(tag="latest", digest=digest("b"), at=at(300))
    assert state.observed == model.Seen(tag="latest", digest=digest("b"), since=at(300))


def test_drift_moves_observed_but_not_deployed() -> None:
    before = in_sync_state("1.0.0")
    decision, state = step(watch(), before, seen("1.0.1", "b", at(300)), at(300))
    assert decision.verdict is Verdict.DRIFT
    assert state.observed == model.Seen(tag="1.0.1", digest=digest("b"), since=at(300))
    assert state.deployed == before.deployed
    assert state.checked_at == at(300)


def test_failure_keeps_observed_and_deployed_and_records_the_error() -> None:
    before = in_sync_state()
    decision, state = step(watch(), before, failure(at(300), "registry down"), at(300))
    assert decision.verdict is Verdict.ERROR
    assert state == model.WatchState(
        watch="app",
        observed=before.observed,
        checked_at=at(300),
        last_error="registry down",
        deployed=before.deployed,
        failures=1,  # one failed check in a row
    )


def test_failure_on_first_pass_leaves_an_error_only_state() -> None:
    _, state = step(watch(), None, failure(T0, "no such host"), T0)
    assert state == model.WatchState(watch="app", checked_at=T0, last_error="no such host", failures=1)


def test_a_later_success_clears_the_error() -> None:
    verdicts, state = run(
        watch(),
        [(failure(at(300)), at(300)), (seen("latest", "a", at(600)), at(600))],
        state=in_sync_state(),
    )
    assert verdicts == [Verdict.ERROR, Verdict.IN_SYNC]
    assert state is not None
    assert state.last_error is None
    assert state.checked_at == at(600)
    assert state.observed == model.Seen(tag="latest", digest=digest("a"), since=T0)


# --- changed --------------------------------------------------------------------------------------------------


def _after(previous: model.WatchState | None, result: model.CheckResult, now: datetime) -> model.WatchState:
    return step(watch(), previous, result, now)[1]


@pytest.mark.parametrize(
    ("previous", "result", "expected"),
    [
        pytest.param(None, seen("latest", "a", T0), True, id="first-pass"),
        pytest.param(None, failure(T0), True, id="first-pass-failure"),
        pytest.param(in_sync_state(), seen("latest", "a", at(300)), False, id="nothing-changed"),
        pytest.param(in_sync_state(), seen("latest", "b", at(300)), True, id="new-digest"),
        pytest.param(in_sync_state("1.0.0"), seen("1.0.1", "a", at(300)), True, id="new-tag"),
        pytest.param(in_sync_state(), failure(at(300)), True, id="new-error"),
        pytest.param(
            _after(in_sync_state(), failure(at(300), "down"), at(300)),
            failure(at(600), "down"),
            False,
            id="same-error-again",
        ),
        pytest.param(
            _after(in_sync_state(), failure(at(300), "down"), at(300)),
            failure(at(600), "401 unauthorized"),
            True,
            id="different-error",
        ),
        pytest.param(
            _after(in_sync_state(), failure(at(300)), at(300)),
            seen("latest", "a", at(600)),
            True,
            id="error-cleared",
        ),
    ],
)
def test_changed(previous: model.WatchState | None, result: model.CheckResult, expected: bool) -> None:
    current = _after(previous, result, result.checked_at)
    assert decide.changed(previous, current) is expected


# --- state_of -------------------------------------------------------------------------------------------------


def _drifted(since: datetime) -> model.WatchState:
    return model.WatchState(
        watch="app",
        observed=model.Seen(tag="latest", digest=digest("b"), since=since),
        checked_at=since,
        deployed=model.Deployed(tag="latest", digest=digest("a"), at=T0 - timedelta(days=1)),
    )


@pytest.mark.parametrize(
    ("w", "state", "expected"),
    [
        pytest.param(watch(), None, State.UNKNOWN, id="never-stored"),
        pytest.param(watch(), model.WatchState(watch="app"), State.UNKNOWN, id="never-checked"),
        pytest.param(
            watch(),
            model.WatchState(watch="app", checked_at=T0, last_error="down"),
            State.ERROR,
            id="error-first-pass",
        ),
        pytest.param(
            watch(),
            model.WatchState(
                watch="app",
                observed=in_sync_state().observed,
                checked_at=T0,
                last_error="down",
                deployed=in_sync_state().deployed,
            ),
            State.ERROR,
            id="error-after-success",
        ),
        pytest.param(watch(), in_sync_state(), State.IN_SYNC, id="in-sync"),
        pytest.param(watch(settle=timedelta(seconds=60)), _drifted(at(-10)), State.SETTLING, id="settling"),
        pytest.param(watch(settle=timedelta(seconds=60)), _drifted(at(-61)), State.DRIFTED, id="settled-drift"),
        pytest.param(watch(), _drifted(at(-1)), State.DRIFTED, id="drifted-no-settle"),
        pytest.param(
            watch(first_seen=model.FirstSeen.DEPLOY),
            model.WatchState(watch="app", observed=model.Seen("latest", digest("a"), at(-5)), checked_at=at(-5)),
            State.DRIFTED,
            id="never-deployed",
        ),
        pytest.param(watch(action=None), _drifted(at(-1)), State.IN_SYNC, id="no-action-is-in-sync"),
    ],
)
def test_state_of(w: model.Watch, state: model.WatchState | None, expected: State) -> None:
    assert decide.state_of(watch=w, state=state, now=T0) is expected


def test_state_of_agrees_with_decide_over_a_settle_window() -> None:
    w = watch(settle=timedelta(seconds=60))
    state: model.WatchState | None = in_sync_state(now=T0 - timedelta(days=1))
    expected = {0: State.SETTLING, 30: State.SETTLING, 60: State.DRIFTED}
    for seconds, shown in expected.items():
        decision, state = step(w, state, seen("latest", "b", at(seconds)), at(seconds))
        assert decide.state_of(watch=w, state=state, now=at(seconds)) is shown
        assert (decision.verdict is Verdict.DRIFT) == (shown is State.DRIFTED)


@pytest.mark.parametrize(("max_attempts", "said"), [(1, "the only attempt for"), (2, "all 2 attempts for")])
def test_giving_up_counts_the_attempts_grammatically(max_attempts: int, said: str) -> None:
    w = model.Watch(
        name="app", image=IMAGE, selector=model.TagSelector("latest"), action=AWX, max_attempts=max_attempts
    )
    last = model.ActionRecord(
        id=1,
        watch="app",
        kind=model.ActionKind.AWX,
        status=model.ActionStatus.FAILED,
        tag="latest",
        digest=digest("b"),
        attempt=max_attempts,
        created_at=T0,
        detail="job 4 failed",
        failure=model.Failure.DEPLOYMENT,
    )
    decision = decide.decide(
        watch=w, result=seen("latest", "b", at(60)), state=in_sync_state(), now=at(60), last_action=last
    )
    assert decision.verdict is Verdict.GAVE_UP
    assert decision.reason.startswith(f"{said} latest@bbbbbbbbbbbb failed"), decision.reason


# --- approvals ------------------------------------------------------------------------------------------------------


def gated() -> model.Watch:
    return dataclasses.replace(watch(), approve=True)


def action(status: model.ActionStatus, char: str, *, approval: model.Approval | None = None, **fields: Any) -> Any:
    values: dict[str, Any] = {
        "id": 7,
        "watch": "app",
        "kind": model.ActionKind.AWX,
        "status": status,
        "tag": "latest",
        "digest": digest(char),
        "attempt": 1,
        "created_at": T0,
        "approval": approval,
        "fingerprint": model.fingerprint(AWX),
    }
    values.update(fields)
    return model.ActionRecord(**values)


def drifted_state(char: str) -> model.WatchState:
    state = in_sync_state()
    return dataclasses.replace(state, observed=model.Seen(tag="latest", digest=digest(char), since=T0))


def test_a_new_digest_on_a_gated_watch_needs_approval_and_a_waiting_one_waits() -> None:
    w, result = gated(), seen("latest", "b", at(60))
    first = decide.decide(watch=w, result=result, state=drifted_state("b"), now=at(60))
    assert first.verdict is Verdict.DRIFT and "needs approval" in first.reason
    waiting = action(model.ActionStatus.AWAITING_APPROVAL, "b", approval=model.Approval.WAITING)
    later = decide.decide(watch=w, result=result, state=drifted_state("b"), now=at(90), last_action=waiting)
    assert later.verdict is Verdict.AWAITING_APPROVAL and "reconciler approve app --digest bbbbbbbbbbbb" in later.reason
    assert (
        decide.state_of(watch=w, state=drifted_state("b"), now=at(90), last_action=waiting) is State.AWAITING_APPROVAL
    )
    approved = dataclasses.replace(waiting, approval=model.Approval.APPROVED, decided_by="alice")
    released = decide.decide(watch=w, result=result, state=drifted_state("b"), now=at(90), last_action=approved)
    assert released.verdict is Verdict.DRIFT and "approved by alice" in released.reason
    assert decide.state_of(watch=w, state=drifted_state("b"), now=at(90), last_action=approved) is State.DEPLOYING


def test_a_waiting_action_is_withdrawn_when_it_no_longer_stands_for_what_is_observed() -> None:
    waiting = action(model.ActionStatus.AWAITING_APPROVAL, "b", approval=model.Approval.APPROVED)
    assert decide.withdrawn(drifted_state("b"), waiting) is None
    assert decide.withdrawn(in_sync_state(), waiting) == "the deployed digest is observed again"
    assert decide.withdrawn(drifted_state("c"), waiting) == "latest@cccccccccccc is observed now"
    assert decide.withdrawn(dataclasses.replace(drifted_state("c"), last_error="503"), waiting) is None
    assert decide.withdrawn(drifted_state("c"), dataclasses.replace(waiting, status=model.ActionStatus.PLANNED)) is None
    w = gated()
    assert decide.state_of(watch=w, state=in_sync_state(), now=T0, last_action=waiting) is State.IN_SYNC
    assert decide.state_of(watch=w, state=drifted_state("c"), now=T0, last_action=waiting) is State.DRIFTED


@pytest.mark.parametrize(
    ("fields", "carries"),
    [
        ({"status": model.ActionStatus.FAILED}, True),
        ({"status": model.ActionStatus.SUPERSEDED, "released_at": T0}, True),  # released, never launched
        ({"status": model.ActionStatus.SUPERSEDED}, False),  # withdrawn before it was released
        ({"status": model.ActionStatus.SUPERSEDED, "released_at": T0, "external_ref": "4242"}, False),
        ({"status": model.ActionStatus.SUCCEEDED}, False),
        ({"status": model.ActionStatus.FAILED, "fingerprint": "another configuration"}, False),
        ({"status": model.ActionStatus.FAILED, "approval": model.Approval.REJECTED}, False),
        ({"status": model.ActionStatus.FAILED, "digest": digest("c")}, False),
    ],
)
def test_only_a_retry_of_the_approved_digest_and_configuration_carries_its_approval(
    fields: dict[str, Any], carries: bool
) -> None:
    last = action(fields.pop("status"), "b", approval=fields.pop("approval", model.Approval.APPROVED), **fields)
    assert decide.carries_approval(gated(), last, seen("latest", "b", T0)) is carries


def test_a_rejected_digest_is_held_back_unless_a_newer_action_for_it_is_open() -> None:
    w, result, state = gated(), seen("latest", "b", at(60)), drifted_state("b")
    rejection = action(model.ActionStatus.REJECTED, "b", approval=model.Approval.REJECTED, decided_by="bob")
    held = decide.decide(watch=w, result=result, state=state, now=at(60), last_action=rejection, rejection=rejection)
    assert held.verdict is Verdict.REJECTED and "rejected by bob" in held.reason
    newer = action(model.ActionStatus.AWAITING_APPROVAL, "b", approval=model.Approval.APPROVED, id=9, decided_by="al")
    released = decide.decide(watch=w, result=result, state=state, now=at(60), last_action=newer, rejection=rejection)
    assert released.verdict is Verdict.DRIFT

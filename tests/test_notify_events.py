"""Which notices a check or an action's step gives rise to, and their words (pure: no I/O, time is a value)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from reconciler import decide, events, model

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
A = "sha256:" + "0123456789ab" + "c" * 52
B = "sha256:" + "fedcba987654" + "d" * 52
LINK = "https://awx.example.org/#/jobs/playbook/4242"


def watch(name: str = "stack-staging", *, action: bool = True, **options: object) -> model.Watch:
    spec = model.AwxAction(server="production", template="Staging Fragalysis Stack") if action else None
    return model.Watch(
        name=name,
        image=model.ImageRef.parse("xchem/fragalysis-stack"),
        selector=model.TagSelector("latest"),
        action=spec,
        **options,  # type: ignore[arg-type]
    )


def record(status: model.ActionStatus, **fields: object) -> model.ActionRecord:
    values: dict[str, object] = {
        "id": 12,
        "watch": "stack-staging",
        "kind": model.ActionKind.AWX,
        "status": status,
        "tag": "latest",
        "digest": A,
        "attempt": 1,
        "created_at": T0,
        "previous_tag": "latest",
        "previous_digest": B,
        "link": LINK,
    }
    values.update(fields)
    return model.ActionRecord(**values)  # type: ignore[arg-type]


def test_the_environment_is_the_watch_names_last_part_unless_given() -> None:
    assert watch("stack-staging").environment == "staging"
    assert watch("stack-production").environment == "production"
    assert watch("frontend").environment == "frontend"
    assert watch("stack-1", environment="Developer").environment == "Developer"


def test_a_launch_tells_that_a_deployment_has_begun_in_the_seed_chains_words() -> None:
    [notice] = events.of_action(watch(), record(model.ActionStatus.LAUNCHED), T0)
    assert notice.event is model.Event.STARTED
    assert notice.message == (
        f'A new STAGING deployment has begun: stack-staging, image tag "latest" (sha256:0123456789ab). Job: {LINK}'
    )
    assert notice.action == {"id": 12, "kind": "awx", "status": "launched", "attempt": 1, "link": LINK}
    assert (notice.previous_tag, notice.previous_digest) == ("latest", B)


def test_an_action_awaiting_approval_tells_how_to_approve_it() -> None:
    waiting = record(model.ActionStatus.AWAITING_APPROVAL, link=None, approval=model.Approval.WAITING, tag="2026.08.4")
    [notice] = events.of_action(watch("stack-production", approve=True), waiting, T0)
    assert notice.event is model.Event.AWAITING_APPROVAL
    assert notice.message == (
        'A new PRODUCTION deployment waits for approval: stack-production, image tag "2026.08.4" '
        "(sha256:0123456789ab). Approve: `reconciler approve stack-production --digest sha256:0123456789ab` (or reject)"
    )
    assert notice.action is not None and notice.action["status"] == "awaiting_approval"
    assert (notice.tag, notice.digest) == ("2026.08.4", A)


def test_released_and_rejected_actions_tell_nothing_themselves() -> None:
    for status in (model.ActionStatus.PLANNED, model.ActionStatus.REJECTED, model.ActionStatus.SUPERSEDED):
        assert events.of_action(watch(), record(status, approval=model.Approval.APPROVED), T0) == []


def test_a_success_tells_that_the_deployment_is_ready() -> None:
    [notice] = events.of_action(watch("stack-production"), record(model.ActionStatus.SUCCEEDED, tag="2026.08.3"), T0)
    assert notice.event is model.Event.SUCCEEDED
    assert notice.message.startswith('A new PRODUCTION deployment is ready: stack-production, image tag "2026.08.3"')
    assert notice.message.endswith(f"Job: {LINK}")


def test_an_action_without_a_link_names_its_number() -> None:
    [notice] = events.of_action(watch(), record(model.ActionStatus.SUCCEEDED, link=None), T0)
    assert notice.message.endswith("(sha256:0123456789ab) (action #12)")


def test_a_failure_with_attempts_left_is_failed_only() -> None:
    failed = record(
        model.ActionStatus.FAILED, failure=model.Failure.DEPLOYMENT, detail="job 4242 failed: playbook error"
    )
    [notice] = events.of_action(watch(), failed, T0)
    assert notice.event is model.Event.FAILED
    assert notice.message.startswith("The STAGING deployment FAILED: stack-staging")
    assert "attempt 1 of 3: job 4242 failed: playbook error" in notice.message


def test_a_failure_names_its_job_link_once_whether_or_not_its_detail_does() -> None:
    linked = record(
        model.ActionStatus.FAILED, failure=model.Failure.DEPLOYMENT, detail=f"job 4242 failed in 0s ({LINK})"
    )
    [notice] = events.of_action(watch(), linked, T0)
    assert notice.message.count(LINK) == 1
    assert notice.message.endswith(f"attempt 1 of 3: job 4242 failed in 0s ({LINK})")
    unlinked = record(model.ActionStatus.FAILED, failure=model.Failure.DEPLOYMENT, detail="job 4242 failed")
    [notice] = events.of_action(watch(), unlinked, T0)
    assert notice.message.count(LINK) == 1
    assert notice.message.endswith(f"attempt 1 of 3: job 4242 failed. Job: {LINK}")


def test_the_last_failed_attempt_also_gives_up() -> None:
    failed = record(model.ActionStatus.FAILED, failure=model.Failure.DEPLOYMENT, attempt=3, detail="boom")
    told = events.of_action(watch(), failed, T0)
    assert [n.event for n in told] == [model.Event.FAILED, model.Event.GAVE_UP]
    assert "all 3 attempts failed" in told[1].message and "reconciler retry stack-staging" in told[1].message


def test_a_refusal_gives_up_at_once() -> None:
    refused = record(model.ActionStatus.FAILED, failure=model.Failure.REFUSED, detail="template not found")
    assert [n.event for n in events.of_action(watch(), refused, T0)] == [model.Event.FAILED, model.Event.GAVE_UP]


def test_an_outage_is_told_once_not_at_every_back_off() -> None:
    first = record(model.ActionStatus.FAILED, failure=model.Failure.OUTAGE, detail="AWX unreachable", outages=0)
    [notice] = events.of_action(watch(), first, T0)
    assert notice.event is model.Event.FAILED and "could not be launched" in notice.message
    again = record(model.ActionStatus.FAILED, failure=model.Failure.OUTAGE, detail="AWX unreachable", outages=2)
    assert events.of_action(watch(), again, T0) == []


@pytest.mark.parametrize("status", [model.ActionStatus.PLANNED, model.ActionStatus.SUPERSEDED])
def test_planned_and_superseded_tell_nothing(status: model.ActionStatus) -> None:
    assert events.of_action(watch(), record(status), T0) == []


def test_a_long_detail_is_cut() -> None:
    failed = record(model.ActionStatus.FAILED, failure=model.Failure.DEPLOYMENT, detail="x" * 5000)
    [notice] = events.of_action(watch(), failed, T0)
    assert len(notice.message) < events.DETAIL_ROOM + 200


# --- checks ---------------------------------------------------------------------------------------------------


def check(
    w: model.Watch, previous: model.WatchState | None, result: model.CheckResult, now: datetime
) -> tuple[model.WatchState, list[model.Notice]]:
    """One pass's check, as the engine does it: decide, advance, then what it tells."""
    decision = decide.decide(watch=w, result=result, state=previous, now=now)
    state = decide.advance(state=previous, result=result, decision=decision, watch=w.name, now=now)
    outcome = model.WatchOutcome(
        watch=w, result=result, decision=decision, state=state, changed=decide.changed(previous, state)
    )
    return state, events.of_check(w, previous, outcome, now)


def seen(digest: str, at: datetime) -> model.Observation:
    return model.Observation(tag="latest", digest=digest, checked_at=at)


def broken(at: datetime) -> model.CheckFailure:
    return model.CheckFailure(message="registry docker.io answered 503", checked_at=at)


def test_drift_is_told_once_per_new_digest_and_not_for_the_baseline() -> None:
    w = watch()
    state, told = check(w, None, seen(A, T0), T0)
    assert told == []  # the first sighting is the baseline
    state, told = check(w, state, seen(B, T0 + timedelta(minutes=5)), T0 + timedelta(minutes=5))
    [drift] = told
    assert drift.event is model.Event.DRIFT and (drift.tag, drift.digest) == ("latest", B)
    assert (drift.previous_tag, drift.previous_digest) == ("latest", A)
    assert drift.message == (
        'A new image for STAGING: stack-staging, image tag "latest" (sha256:fedcba987654); '
        'deployed: "latest" (sha256:0123456789ab)'
    )
    _, told = check(w, state, seen(B, T0 + timedelta(minutes=10)), T0 + timedelta(minutes=10))
    assert told == []  # still the same drift: told once


def test_a_watch_without_an_action_tells_no_drift() -> None:
    w = watch("frontend", action=False)
    state, _ = check(w, None, seen(A, T0), T0)
    _, told = check(w, state, seen(B, T0 + timedelta(minutes=5)), T0 + timedelta(minutes=5))
    assert told == []


def test_checks_failing_three_times_in_a_row_are_told_once_and_their_recovery_too() -> None:
    w = watch()
    state, _ = check(w, None, seen(A, T0), T0)
    told_each_pass = []
    for i in range(1, 6):
        state, told = check(w, state, broken(T0 + timedelta(minutes=5 * i)), T0 + timedelta(minutes=5 * i))
        told_each_pass.append([n.event for n in told])
    assert told_each_pass == [[], [], [model.Event.CHECK_FAILING], [], []]
    state, told = check(w, state, seen(A, T0 + timedelta(hours=1)), T0 + timedelta(hours=1))
    [recovered] = told
    assert recovered.event is model.Event.RECOVERED and state.failures == 0
    assert recovered.message == 'STAGING can be checked again: stack-staging, image tag "latest" (sha256:0123456789ab)'


def test_two_failed_checks_then_one_that_works_tell_nothing() -> None:
    w = watch()
    state, _ = check(w, None, seen(A, T0), T0)
    for i in (1, 2):
        state, told = check(w, state, broken(T0 + timedelta(minutes=i)), T0 + timedelta(minutes=i))
        assert told == []
    _, told = check(w, state, seen(A, T0 + timedelta(minutes=3)), T0 + timedelta(minutes=3))
    assert told == []


def test_check_failing_names_the_error_the_image_and_the_environment() -> None:
    w = watch("stack-production")
    state = model.WatchState(watch=w.name, failures=2)
    _, [notice] = check(w, state, broken(T0), T0)
    assert notice.event is model.Event.CHECK_FAILING
    assert notice.message.startswith("PRODUCTION cannot be checked: stack-production (docker.io/xchem/fragalysis-stack")
    assert "the last 3 checks failed: registry docker.io answered 503" in notice.message


# --- the notice itself and its routes -------------------------------------------------------------------------


def test_the_webhook_body_has_the_documented_fields_in_order() -> None:
    [notice] = events.of_action(watch(), record(model.ActionStatus.LAUNCHED), T0)
    body = json.loads(notice.body("0f6c…"))
    assert list(body) == ["id", "event", "at", "watch", "image", "tag", "digest", "previous", "action", "message"]
    assert body["id"] == "0f6c…" and body["at"] == "2026-11-26T09:00:00Z"
    assert body["previous"] == {"tag": "latest", "digest": B}
    assert body["image"] == "docker.io/xchem/fragalysis-stack"


def test_routes_filter_by_event_and_watch() -> None:
    started = events.of_action(watch(), record(model.ActionStatus.LAUNCHED), T0)[0]
    drift = model.Notice(event=model.Event.DRIFT, at=T0, message="m", watch="stack-staging")
    other = model.Notice(event=model.Event.STARTED, at=T0, message="m", watch="stack-production")
    everything = model.Route(target="all")
    assert everything.wants(started) and everything.wants(other) and not everything.wants(drift)  # drift: opt in
    staging_only = model.Route(target="s", watches=frozenset({"stack-staging"}))
    assert staging_only.wants(started) and not staging_only.wants(other)
    failures = model.Route(target="f", events=frozenset({model.Event.FAILED, model.Event.DRIFT}))
    assert failures.wants(drift) and not failures.wants(started)


def test_the_test_notice_names_its_target() -> None:
    notice = events.test("slack-staging", T0)
    assert notice.event is model.Event.TEST and notice.watch is None
    assert "slack-staging" in notice.message and notice.title == "test: reconciler"

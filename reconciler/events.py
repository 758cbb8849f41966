"""Pure: which notices a pass or an action's step gives rise to, and their messages, written for people in the
words of the chain reconciler replaces ("A new STAGING deployment has begun", "… is ready", "The … deployment
FAILED"), naming the environment, the tag, the short digest and the job link.

The store records what these return in the transaction of the state change; nothing here does I/O.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from reconciler import model

Event = model.Event
DETAIL_ROOM = 300  # characters of an action's detail or a check's error kept in a message


def short(digest: str | None) -> str:
    """`sha256:0123456789ab`: enough of a digest to tell it apart."""
    return digest[: len("sha256:") + 12] if digest else "no digest"


def _clip(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= DETAIL_ROOM else text[: DETAIL_ROOM - 1] + "…"


def _image(watch: model.Watch, tag: str, digest: str | None) -> str:
    return f'{watch.name}, image tag "{tag}" ({short(digest)})'


def _env(watch: model.Watch) -> str:
    return watch.environment.upper()


def _job(record: model.ActionRecord) -> str:
    label = "Run" if record.kind is model.ActionKind.GITHUB else "Job"  # a GitHub Actions run; an AWX job
    return f". {label}: {record.link}" if record.link else f" (action #{record.id})"


def action_summary(record: model.ActionRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "kind": record.kind.value,
        "status": record.status.value,
        "attempt": record.attempt,
        "link": record.link,
    }


def _notice(
    event: model.Event, watch: model.Watch, at: datetime, message: str, *, record: model.ActionRecord
) -> model.Notice:
    return model.Notice(
        event=event,
        at=at,
        message=message,
        watch=watch.name,
        image=str(watch.image),
        tag=record.tag,
        digest=record.digest,
        previous_tag=record.previous_tag,
        previous_digest=record.previous_digest,
        action=action_summary(record),
    )


def gave_up(watch: model.Watch, record: model.ActionRecord) -> bool:
    """Whether this failed action ends the retries: refused as configured, or its last attempt failed."""
    if record.status is not model.ActionStatus.FAILED:
        return False
    if record.failure is model.Failure.REFUSED:
        return True
    return record.failure is model.Failure.DEPLOYMENT and record.attempt >= watch.max_attempts


def of_action(watch: model.Watch, record: model.ActionRecord, now: datetime) -> list[model.Notice]:
    """What an action's new status tells: awaiting approval; launched → started; succeeded; failed, and gave_up
    when it was the last try. An outage (nothing reached the system) is told once, on its first occurrence, not
    at every back-off."""
    env, what, job = _env(watch), _image(watch, record.tag, record.digest), _job(record)
    status = record.status
    if status is model.ActionStatus.AWAITING_APPROVAL:
        message = (
            f"A new {env} deployment waits for approval: {what}. "
            f"Approve: `reconciler approve {watch.name} --digest {short(record.digest)}` (or reject)"
        )
        return [_notice(Event.AWAITING_APPROVAL, watch, now, message, record=record)]
    if status is model.ActionStatus.LAUNCHED:
        return [_notice(Event.STARTED, watch, now, f"A new {env} deployment has begun: {what}{job}", record=record)]
    if status is model.ActionStatus.SUCCEEDED:
        return [_notice(Event.SUCCEEDED, watch, now, f"A new {env} deployment is ready: {what}{job}", record=record)]
    if status is not model.ActionStatus.FAILED:
        return []
    detail = _clip(record.detail)
    if record.failure is model.Failure.OUTAGE:
        if record.outages:
            return []
        message = f"The {env} deployment could not be launched: {what}: {detail}; retrying with back-off"
        return [_notice(Event.FAILED, watch, now, message, record=record)]
    tries = f"attempt {record.attempt} of {watch.max_attempts}"
    # An AWX failure's detail already names its job's link ("job 4243 failed in 0s (<link>)"): not twice
    told = "" if record.link and record.link in detail else job
    message = f"The {env} deployment FAILED: {what}, {tries}: {detail}{told}"
    notices = [_notice(Event.FAILED, watch, now, message, record=record)]
    if gave_up(watch, record):
        why = (
            "it cannot succeed as configured"
            if record.failure is model.Failure.REFUSED
            else ("its only attempt failed" if record.attempt == 1 else f"all {record.attempt} attempts failed")
        )
        message = (
            f"The {env} deployment gave up: {what}: {why}; not retried until `reconciler retry {watch.name}` "
            f"or the watch's action changes{job}"
        )
        notices.append(_notice(Event.GAVE_UP, watch, now, message, record=record))
    return notices


def _seen(
    watch: model.Watch,
    event: model.Event,
    now: datetime,
    message: str,
    *,
    seen: model.Observation | None = None,
    deployed: model.Deployed | None = None,
) -> model.Notice:
    return model.Notice(
        event=event,
        at=now,
        message=message,
        watch=watch.name,
        image=str(watch.image),
        tag=seen.tag if seen else None,
        digest=seen.digest if seen else None,
        previous_tag=deployed.tag if deployed else None,
        previous_digest=deployed.digest if deployed else None,
    )


def of_check(
    watch: model.Watch, previous: model.WatchState | None, outcome: model.WatchOutcome, now: datetime
) -> list[model.Notice]:
    """What a pass's check tells: a new tag or digest on a watch with an action (drift); checks failing for
    CHECK_FAILING_AFTER passes in a row (check_failing), and working again after that (recovered)."""
    state, result = outcome.state, outcome.result
    if isinstance(result, model.CheckFailure):
        if state.failures != model.CHECK_FAILING_AFTER:
            return []
        message = (
            f"{_env(watch)} cannot be checked: {watch.name} ({watch.image}, {watch.selector.describe()}): "
            f"the last {state.failures} checks failed: {_clip(result.message)}"
        )
        return [_seen(watch, Event.CHECK_FAILING, now, message)]
    notices: list[model.Notice] = []
    what = _image(watch, result.tag, result.digest)
    if previous is not None and previous.failures >= model.CHECK_FAILING_AFTER:
        message = f"{_env(watch)} can be checked again: {what}"
        notices.append(_seen(watch, Event.RECOVERED, now, message, seen=result))
    pair = (result.tag, result.digest)
    seen_before = previous.observed if previous is not None else None
    deployed = state.deployed
    new = seen_before is None or (seen_before.tag, seen_before.digest) != pair
    drifted = deployed is None or (deployed.tag, deployed.digest) != pair
    quiet = outcome.decision.verdict in (model.Verdict.BASELINE, model.Verdict.FOLLOW)
    if watch.action is not None and new and drifted and not quiet:
        was = f'"{deployed.tag}" ({short(deployed.digest)})' if deployed is not None else "nothing"
        message = f"A new image for {_env(watch)}: {what}; deployed: {was}"
        notices.append(_seen(watch, Event.DRIFT, now, message, seen=result, deployed=deployed))
    return notices


def test(target: str, now: datetime) -> model.Notice:
    """`reconciler notify test`: proves a target receives what reconciler sends."""
    message = f"A test notification from reconciler to {target}: if you read this, {target} receives notifications"
    return model.Notice(event=Event.TEST, at=now, message=message)

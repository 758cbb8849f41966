"""The lease as the daemon uses it (lose it, get it back, keep acting) and the outbox rule that an older action's
late success never moves `deployed_*` back; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from reconciler import errors, lease, model
from reconciler.store import outbox, queries

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_a_lease_lost_and_taken_back_keeps_renewing(migrated_engine: Engine) -> None:
    store = queries.Store(migrated_engine)
    clock = Clock()
    a = lease.Lease(store=store, clock=clock, ttl=timedelta(seconds=60))
    b = lease.Lease(store=store, clock=clock, ttl=timedelta(seconds=60))
    a.acquire()
    clock.now += timedelta(seconds=61)  # A stalled past its lease (a database outage, a long pause)
    b.acquire()
    with pytest.raises(errors.LeaseLost):
        a.keep_alive()
    with pytest.raises(errors.LockHeld):
        a.acquire()
    b.release()
    a.acquire()
    for _ in range(5):  # renewed every third of the lease, never "lost" again
        clock.now += timedelta(seconds=25)
        a.keep_alive()
    assert store.lease_holder(name=lease.NAME, now=clock.now) == a.holder


def _target(digest: str) -> model.Target:
    return model.Target(watch="app", image=model.ImageRef.parse("xchem/app"), tag="latest", digest=digest)


def test_an_older_action_succeeding_late_does_not_move_deployed_back(migrated_engine: Engine) -> None:
    store, box = queries.Store(migrated_engine), outbox.Outbox(migrated_engine)
    old_digest, new_digest = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    w = model.Watch(name="app", image=model.ImageRef.parse("xchem/app"), selector=model.TagSelector("latest"))
    state = model.WatchState(watch="app", observed=model.Seen("latest", new_digest, T0), checked_at=T0)
    outcome = model.WatchOutcome(
        watch=w,
        result=model.Observation("latest", new_digest, T0),
        decision=model.Decision(model.Verdict.DRIFT, "x"),
        state=state,
        changed=True,
    )
    store.record_pass(model.RunReport(T0, T0, False, (outcome,)))
    older = box.plan(target=_target(old_digest), kind=model.ActionKind.AWX, attempt=1, request={}, now=T0)
    newer = box.plan(target=_target(new_digest), kind=model.ActionKind.AWX, attempt=1, request={}, now=T0)
    assert older is not None and newer is not None
    box.succeeded(newer, "job 2 successful", T0 + timedelta(minutes=1))
    box.succeeded(older, "job 1 successful", T0 + timedelta(minutes=2))
    deployed = store.states()["app"].deployed
    assert deployed is not None and deployed.digest == new_digest

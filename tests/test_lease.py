"""The one-acting-instance lease on the database's clock, and `deployed` moving only for a reason; on SQLite and
PostgreSQL. Time cannot be faked in a database's clock, so a lease's end is moved in its row, as a stalled holder
would find it; the process's own clock is faked to show it plays no part."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select, update

from reconciler import errors, lease, model
from reconciler.store import leases, outbox, queries, tables

TTL = timedelta(seconds=60)
T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _expire(engine: Engine, holder: str) -> None:
    """Move the lease's end into the past, as a holder stalled past it (a pause, a lost network) would find it."""
    with engine.begin() as conn:
        row = conn.execute(select(tables.leases.c.expires_at).where(tables.leases.c.holder == holder)).one()
        conn.execute(
            update(tables.leases)
            .where(tables.leases.c.holder == holder)
            .values(expires_at=row.expires_at - timedelta(hours=1))
        )


def _db_now(engine: Engine) -> datetime:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            text = conn.execute(select(func.strftime("%Y-%m-%d %H:%M:%f", "now"))).scalar_one()
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        moment: datetime = conn.execute(select(func.now())).scalar_one()
        return moment.astimezone(UTC)


def test_an_expired_lease_is_lost_and_never_quietly_renewed(migrated_engine: Engine) -> None:
    monotonic = Monotonic()
    a = lease.Lease(store=leases.Leases(migrated_engine), ttl=TTL, monotonic=monotonic)
    a.acquire()
    _expire(migrated_engine, a.holder)  # nobody took it: it simply ran out
    monotonic.now += 30  # a renewal is due
    with pytest.raises(errors.LeaseLost, match="expired"):
        a.keep_alive()
    with pytest.raises(errors.LeaseLost):
        a.confirm()
    assert leases.Leases(migrated_engine).holder(name=lease.NAME) is None
    a.acquire()  # taken again only knowingly, by the same rule as anyone
    monotonic.now += 30
    a.keep_alive()
    assert leases.Leases(migrated_engine).holder(name=lease.NAME) == a.holder


def test_confirm_checks_the_database_even_when_no_renewal_is_due(migrated_engine: Engine) -> None:
    a = lease.Lease(store=leases.Leases(migrated_engine), ttl=TTL, monotonic=Monotonic())
    a.acquire()
    _expire(migrated_engine, a.holder)
    a.keep_alive()  # not due yet by its own schedule: no database round trip
    with pytest.raises(errors.LeaseLost):
        a.confirm()  # right before planning, the database is asked


def test_a_lease_taken_by_another_is_lost_until_released(migrated_engine: Engine) -> None:
    store = leases.Leases(migrated_engine)
    monotonic = Monotonic()
    a = lease.Lease(store=store, ttl=TTL, monotonic=monotonic)
    b = lease.Lease(store=store, ttl=TTL, monotonic=monotonic)
    a.acquire()
    with pytest.raises(errors.LockHeld):
        b.acquire()
    _expire(migrated_engine, a.holder)
    b.acquire()
    monotonic.now += 30
    with pytest.raises(errors.LeaseLost):
        a.keep_alive()
    with pytest.raises(errors.LockHeld):
        a.acquire()
    b.release()
    a.acquire()
    for _ in range(5):  # renewed every third of the lease, never "lost" again
        monotonic.now += 25
        a.keep_alive()
    assert store.holder(name=lease.NAME) == a.holder


def test_lease_times_come_from_the_database_clock(migrated_engine: Engine) -> None:
    a = lease.Lease(store=leases.Leases(migrated_engine), ttl=TTL, monotonic=Monotonic())
    before = _db_now(migrated_engine)
    a.acquire()
    after = _db_now(migrated_engine)
    with migrated_engine.connect() as conn:
        row = conn.execute(select(tables.leases)).one()
    assert before - timedelta(seconds=1) <= row.acquired_at <= after + timedelta(seconds=1)
    assert abs((row.expires_at - row.acquired_at) - TTL) < timedelta(seconds=1)


def test_leases_are_per_name(migrated_engine: Engine) -> None:
    store = leases.Leases(migrated_engine)
    assert store.acquire(name="engine", holder="A", ttl=TTL)
    assert store.acquire(name="webhook", holder="B", ttl=TTL)
    assert not store.acquire(name="engine", holder="B", ttl=TTL)
    assert store.holder(name="engine") == "A"
    assert store.holder(name="webhook") == "B"
    store.release(name="engine", holder="B")  # not B's to release
    assert store.holder(name="engine") == "A"
    store.release(name="engine", holder="A")
    assert store.holder(name="engine") is None


# --- deployed moves only for a reason ---------------------------------------------------------------------------


def _digest(char: str) -> str:
    return "sha256:" + char * 64


def _outcome(verdict: model.Verdict, *, observed: str, deployed: str | None) -> model.WatchOutcome:
    watch = model.Watch(name="app", image=model.ImageRef.parse("xchem/app"), selector=model.TagSelector("latest"))
    state = model.WatchState(
        watch="app",
        observed=model.Seen("latest", _digest(observed), T0),
        checked_at=T0,
        deployed=model.Deployed("latest", _digest(deployed), T0) if deployed else None,
    )
    return model.WatchOutcome(
        watch=watch,
        result=model.Observation("latest", _digest(observed), T0),
        decision=model.Decision(verdict, "test"),
        state=state,
        changed=True,
    )


def test_a_pass_never_rewrites_deployed_from_its_stale_snapshot(migrated_engine: Engine) -> None:
    store, box = queries.Store(migrated_engine), outbox.Outbox(migrated_engine)
    store.record_pass(model.RunReport(T0, T0, False, (_outcome(model.Verdict.BASELINE, observed="a", deployed="a"),)))
    target = model.Target(watch="app", image=model.ImageRef.parse("xchem/app"), tag="latest", digest=_digest("b"))
    action = box.plan(target=target, kind=model.ActionKind.AWX, attempt=1, request=lambda _: {}, now=T0)
    assert action is not None
    box.succeeded(action, "job 1 successful", T0)  # another pass (or process) deployed b meanwhile
    stale = _outcome(model.Verdict.DRIFT, observed="b", deployed="a")  # decided before that success
    store.record_pass(model.RunReport(T0, T0, False, (stale,)))
    deployed = store.states()["app"].deployed
    assert deployed is not None and deployed.digest == _digest("b")


def test_a_baseline_never_overwrites_what_is_deployed(migrated_engine: Engine) -> None:
    store = queries.Store(migrated_engine)
    store.record_pass(model.RunReport(T0, T0, False, (_outcome(model.Verdict.BASELINE, observed="a", deployed="a"),)))
    late = _outcome(model.Verdict.BASELINE, observed="c", deployed="c")  # a second process's first sighting
    store.record_pass(model.RunReport(T0, T0, False, (late,)))
    state = store.states()["app"]
    assert state.deployed is not None and state.deployed.digest == _digest("a")
    assert state.observed is not None and state.observed.digest == _digest("c")


def test_a_watch_without_action_follows_what_it_observes(migrated_engine: Engine) -> None:
    store = queries.Store(migrated_engine)
    store.record_pass(model.RunReport(T0, T0, False, (_outcome(model.Verdict.BASELINE, observed="a", deployed="a"),)))
    store.record_pass(model.RunReport(T0, T0, False, (_outcome(model.Verdict.FOLLOW, observed="d", deployed="d"),)))
    deployed = store.states()["app"].deployed
    assert deployed is not None and deployed.digest == _digest("d")


def test_a_pass_of_an_earlier_hold_stops_even_after_the_lease_is_taken_again(migrated_engine: Engine) -> None:
    """The daemon's passes share one Lease: lost and taken back, a pass begun before must not carry on."""
    monotonic = Monotonic()
    a = lease.Lease(store=leases.Leases(migrated_engine), ttl=TTL, monotonic=monotonic)
    a.acquire()
    started_in = a.tenure
    _expire(migrated_engine, a.holder)
    monotonic.now += 30
    with pytest.raises(errors.LeaseLost):
        a.keep_alive()
    a.acquire()  # the daemon takes it again; another instance may have acted meanwhile
    with pytest.raises(errors.LeaseLost, match="earlier hold"):
        a.keep_alive(started_in)  # no renewal due, yet the old pass learns it at once
    with pytest.raises(errors.LeaseLost, match="earlier hold"):
        a.confirm(started_in)
    a.confirm(a.tenure)  # a pass of the new hold acts

"""The SQL store's contract, on SQLite and on PostgreSQL alike: states, the change log, runs, the actions outbox
rule. Every test gets an empty, migrated database of its own (tests/support/databases.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from reconciler import decide, errors, model
from reconciler.store import queries, rows, tables

T0 = datetime(2026, 8, 3, 12, 0, 0, 123456, tzinfo=UTC)
IMAGE = model.ImageRef.parse("example/app")
Verdict = model.Verdict


def digest(char: str) -> str:
    return "sha256:" + char * 64


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def watch(name: str = "app", *, action: model.Action | None = None) -> model.Watch:
    return model.Watch(name=name, image=IMAGE, selector=model.TagSelector("latest"), action=action)


def outcome(
    w: model.Watch,
    result: model.CheckResult,
    previous: model.WatchState | None = None,
) -> model.WatchOutcome:
    """One watch in one pass, computed as the engine does."""
    now = result.checked_at
    decision = decide.decide(watch=w, result=result, state=previous, now=now)
    state = decide.advance(state=previous, result=result, decision=decision, watch=w.name, now=now)
    return model.WatchOutcome(
        watch=w, result=result, decision=decision, state=state, changed=decide.changed(previous, state)
    )


def report(*outcomes: model.WatchOutcome, started: datetime = T0, seconds: float = 1.5) -> model.RunReport:
    return model.RunReport(
        started_at=started, finished_at=started + timedelta(seconds=seconds), dry_run=False, outcomes=outcomes
    )


def seen(char: str, now: datetime, tag: str = "latest") -> model.Observation:
    return model.Observation(tag=tag, digest=digest(char), checked_at=now)


@pytest.fixture
def store(migrated_engine: Engine) -> queries.Store:
    return queries.Store(migrated_engine)


# --- states and record_pass -----------------------------------------------------------------------------------


def test_empty_store(store: queries.Store) -> None:
    assert store.states() == {}
    assert store.history() == []
    assert store.last_run() is None


def test_record_pass_then_states_round_trip(store: queries.Store) -> None:
    full = model.WatchOutcome(
        watch=watch("full", action=model.AwxAction(server="awx", template="deploy")),
        result=seen("b", at(2)),
        decision=model.Decision(Verdict.DRIFT, "drift"),
        state=model.WatchState(
            watch="full",
            observed=model.Seen(tag="1.0.1", digest=digest("b"), since=at(1)),
            checked_at=at(2),
            last_error=None,
            deployed=model.Deployed(tag="1.0.0", digest=digest("a"), at=at(-86400)),
        ),
        changed=True,
    )
    errored = model.WatchOutcome(
        watch=watch("errored"),
        result=model.CheckFailure(message="registry.example: 503", checked_at=at(3)),
        decision=model.Decision(Verdict.ERROR, "registry.example: 503"),
        state=model.WatchState(watch="errored", checked_at=at(3), last_error="registry.example: 503"),
        changed=True,
    )
    store.record_pass(report(full, errored))

    states = store.states()
    assert states == {"full": full.state, "errored": errored.state}
    restored = states["full"]
    assert restored.observed is not None and restored.deployed is not None and restored.checked_at is not None
    for value in (restored.observed.since, restored.checked_at, restored.deployed.at):
        assert value.tzinfo is UTC
    assert store.states(["errored"]) == {"errored": errored.state}
    assert store.states([]) == {}


def test_second_pass_updates_rather_than_duplicates(store: queries.Store) -> None:
    w = watch()
    first = outcome(w, seen("a", at(0)))
    store.record_pass(report(first, started=at(0)))
    second = outcome(w, seen("b", at(300)), first.state)
    store.record_pass(report(second, started=at(300)))

    assert store.states() == {"app": second.state}
    with store.engine.connect() as conn:
        assert conn.execute(select(tables.watch_state.c.watch)).scalars().all() == ["app"]
        assert conn.execute(select(tables.runs_hourly.c.passes)).scalars().all() == [
            2
        ]  # one row per hour, not per pass


def test_upsert_can_clear_columns(store: queries.Store) -> None:
    w = watch()
    first = outcome(w, model.CheckFailure(message="down", checked_at=at(0)))
    store.record_pass(report(first, started=at(0)))
    assert store.states()["app"].last_error == "down"
    second = outcome(w, seen("a", at(300)), first.state)
    store.record_pass(report(second, started=at(300)))
    assert store.states()["app"].last_error is None
    assert store.states()["app"] == second.state


def test_only_changes_become_observations(store: queries.Store) -> None:
    w, other = watch(), watch("other")
    store.record_pass(report(outcome(w, seen("a", at(0))), started=at(0)))
    state = store.states()["app"]
    unchanged = outcome(w, seen("a", at(300)), state)
    changed = outcome(other, seen("c", at(300)))
    assert not unchanged.changed and changed.changed
    store.record_pass(report(unchanged, changed, started=at(300)))

    history = store.history()
    assert [(h.watch, h.at) for h in history] == [("other", at(300)), ("app", at(0))]
    # The unchanged watch's state still moved on.
    assert store.states()["app"].checked_at == at(300)


def test_history_entry_fields(store: queries.Store) -> None:
    w = watch()
    first = outcome(w, seen("a", at(0)))
    failed = outcome(w, model.CheckFailure(message="401 unauthorized", checked_at=at(60)), first.state)
    store.record_pass(report(first, started=at(0)))
    store.record_pass(report(failed, started=at(60)))

    newest, oldest = store.history()
    assert newest == rows.HistoryEntry(
        at=at(60),
        watch="app",
        verdict="error",
        tag=None,
        digest=None,
        error="401 unauthorized",
        reason="401 unauthorized",
    )
    assert oldest == rows.HistoryEntry(
        at=at(0),
        watch="app",
        verdict="baseline",
        tag="latest",
        digest=digest("a"),
        error=None,
        reason=first.decision.reason,
    )


def test_history_newest_first_filtered_and_limited(store: queries.Store) -> None:
    a, b = watch("a"), watch("b")
    states: dict[str, model.WatchState | None] = {"a": None, "b": None}
    for i, char in enumerate("cdefg"):
        now = at(60 * i)
        outcomes = []
        for w in (a, b):
            o = outcome(w, seen(char, now), states[w.name])
            states[w.name] = o.state
            outcomes.append(o)
        store.record_pass(report(*outcomes, started=now))

    everything = store.history()
    assert len(everything) == 10
    assert [h.at for h in everything] == sorted((h.at for h in everything), reverse=True)

    only_a = store.history(watch="a")
    assert [h.watch for h in only_a] == ["a"] * 5
    assert [h.digest for h in only_a] == [digest(c) for c in "gfedc"]

    limited = store.history(watch="b", limit=2)
    assert [(h.watch, h.digest, h.at) for h in limited] == [("b", digest("g"), at(240)), ("b", digest("f"), at(180))]
    assert len(store.history(limit=3)) == 3
    assert store.history(watch="nobody") == []


def test_history_same_instant_ties_broken_by_insertion(store: queries.Store) -> None:
    w = watch()
    first = outcome(w, seen("a", T0))
    store.record_pass(report(first))
    second = outcome(w, seen("b", T0), first.state)
    store.record_pass(report(second))
    assert [h.digest for h in store.history()] == [digest("b"), digest("a")]


def test_last_run(store: queries.Store) -> None:
    w, broken = watch(), watch("broken")
    store.record_pass(report(outcome(w, seen("a", at(0))), started=at(0), seconds=2))
    second = report(
        outcome(w, seen("a", at(300))),
        outcome(broken, model.CheckFailure(message="down", checked_at=at(300))),
        started=at(300),
        seconds=0.25,
    )
    store.record_pass(second)

    assert store.last_run() == queries.RunRecord(
        instance="default",
        hour=T0.replace(minute=0, second=0, microsecond=0),
        passes=2,
        checked=3,
        changed=len(store.history()),  # the rows the passes wrote to the change log
        errors=1,
        first_started_at=at(0),
        last_finished_at=at(300.25),
        last_summary=second.summary(),
    )


def test_runs_are_one_row_per_instance_and_hour(migrated_engine: Engine) -> None:
    """A pass adds itself to its instance's row of the hour it finished in; one that finished before the newest
    (passes run concurrently) is counted but does not speak for the hour."""
    mine, theirs = queries.Store(migrated_engine), queries.Store(migrated_engine, instance="europe")
    w = watch()
    late = report(outcome(w, seen("a", at(1000))), started=at(1000))
    mine.record_pass(late)
    mine.record_pass(report(outcome(w, seen("a", at(10))), started=at(10)))  # finished earlier, recorded later
    theirs.record_pass(report(outcome(watch("other"), seen("b", at(20))), started=at(20)))
    next_hour = report(outcome(w, seen("a", at(3600))), started=at(3600))
    mine.record_pass(next_hour)
    with migrated_engine.connect() as conn:
        h = tables.runs_hourly
        rows = conn.execute(select(h).order_by(h.c.instance, h.c.hour)).all()
    hour = T0.replace(minute=0, second=0, microsecond=0)
    assert [(r.instance, r.hour, r.passes, r.last_summary) for r in rows] == [
        ("default", hour, 2, late.summary()),
        ("default", hour + timedelta(hours=1), 1, next_hour.summary()),
        ("europe", hour, 1, rows[2].last_summary),
    ]
    assert rows[0].first_started_at == at(10) and rows[0].last_finished_at == late.finished_at
    last = mine.last_run()
    assert last is not None and last.hour == hour + timedelta(hours=1)


def test_empty_pass_records_nothing(store: queries.Store) -> None:
    store.record_pass(report())
    assert store.last_run() is None


# --- time ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "moment",
    [
        pytest.param(datetime(2026, 8, 3, 12, 0, 0, 123456, tzinfo=UTC), id="utc-microseconds"),
        pytest.param(datetime(2026, 8, 3, 12, 0, 0, 1, tzinfo=UTC), id="one-microsecond"),
        pytest.param(datetime(2026, 8, 3, 12, 0, 0, 999999, tzinfo=UTC), id="last-microsecond"),
        pytest.param(datetime(2026, 8, 3, 14, 0, 0, 654321, tzinfo=timezone(timedelta(hours=2))), id="plus-two"),
        pytest.param(datetime(2026, 1, 1, 0, 30, 0, 5, tzinfo=timezone(timedelta(hours=-5))), id="minus-five"),
    ],
)
def test_timestamps_round_trip_exactly_as_aware_utc(store: queries.Store, moment: datetime) -> None:
    state = model.WatchState(
        watch="app",
        observed=model.Seen(tag="latest", digest=digest("a"), since=moment),
        checked_at=moment,
        deployed=model.Deployed(tag="latest", digest=digest("a"), at=moment),
    )
    store.record_pass(
        report(
            model.WatchOutcome(
                watch=watch(),
                result=seen("a", moment),
                decision=model.Decision(Verdict.BASELINE, "first"),
                state=state,
                changed=True,
            ),
            started=moment,
        )
    )
    restored = store.states()["app"]
    expected = moment.astimezone(UTC)
    assert restored.observed is not None and restored.deployed is not None and restored.checked_at is not None
    for value in (restored.observed.since, restored.checked_at, restored.deployed.at, store.history()[0].at):
        assert value == expected
        assert value.tzinfo is UTC
        assert value.replace(tzinfo=None) == expected.replace(tzinfo=None)  # the wall time too, not only the instant
    run = store.last_run()
    assert run is not None and run.first_started_at == expected and run.first_started_at.tzinfo is UTC


def test_naive_datetime_is_refused(store: queries.Store) -> None:
    naive = datetime(2026, 8, 3, 12, 0, 0)
    state = model.WatchState(
        watch="app", observed=model.Seen(tag="latest", digest=digest("a"), since=naive), checked_at=naive
    )
    bad = model.WatchOutcome(
        watch=watch(),
        result=seen("a", naive),
        decision=model.Decision(Verdict.BASELINE, "first"),
        state=state,
        changed=True,
    )
    with pytest.raises(errors.StoreError, match="naive datetime"):
        store.record_pass(report(bad))
    # One transaction: nothing of the refused pass was written.
    assert store.states() == {}
    assert store.history() == []
    assert store.last_run() is None


# --- the actions outbox ---------------------------------------------------------------------------------------


def _action(status: str, *, watch_name: str = "app", char: str = "b") -> dict[str, object]:
    return {
        "watch": watch_name,
        "kind": "awx",
        "status": status,
        "tag": "latest",
        "digest": digest(char),
        "created_at": T0,
    }


@pytest.mark.parametrize(
    "statuses",
    [
        pytest.param(("planned", "planned"), id="planned-planned"),
        pytest.param(("planned", "launched"), id="planned-launched"),
        pytest.param(("launched", "launched"), id="launched-launched"),
    ],
)
def test_two_open_actions_for_one_watch_and_digest_are_refused(
    migrated_engine: Engine, statuses: tuple[str, str]
) -> None:
    with migrated_engine.begin() as conn:
        conn.execute(insert(tables.actions), _action(statuses[0]))
    with pytest.raises(IntegrityError), migrated_engine.begin() as conn:
        conn.execute(insert(tables.actions), _action(statuses[1]))
    with migrated_engine.connect() as conn:
        assert len(conn.execute(select(tables.actions)).all()) == 1


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param([_action("planned"), _action("succeeded")], id="planned-succeeded"),
        pytest.param([_action("failed"), _action("failed")], id="failed-failed"),
        pytest.param([_action("failed"), _action("failed"), _action("launched")], id="retry-after-failures"),
        pytest.param([_action("superseded"), _action("planned")], id="superseded-planned"),
        pytest.param([_action("planned"), _action("planned", char="c")], id="planned-other-digest"),
        pytest.param([_action("planned"), _action("planned", watch_name="other")], id="planned-other-watch"),
    ],
)
def test_closed_or_distinct_actions_are_allowed(migrated_engine: Engine, rows: list[dict[str, object]]) -> None:
    with migrated_engine.begin() as conn:
        for row in rows:
            conn.execute(insert(tables.actions), row)
        assert len(conn.execute(select(tables.actions)).all()) == len(rows)


def test_closing_an_action_lets_a_new_one_open(migrated_engine: Engine) -> None:
    with migrated_engine.begin() as conn:
        first = conn.execute(insert(tables.actions), _action("launched")).inserted_primary_key[0]
        conn.execute(update(tables.actions).where(tables.actions.c.id == first).values(status="failed"))
        conn.execute(insert(tables.actions), _action("planned"))
        assert conn.execute(select(tables.actions.c.attempt)).scalars().all() == [1, 1]  # server default


@pytest.mark.parametrize("status", ["pending", "PLANNED", "done", ""])
def test_status_outside_the_allowed_set_violates_the_check(migrated_engine: Engine, status: str) -> None:
    with pytest.raises(IntegrityError, match="ck_actions_status"), migrated_engine.begin() as conn:
        conn.execute(insert(tables.actions), _action(status))


# --- scale ----------------------------------------------------------------------------------------------------


def test_a_thousand_watches_in_one_pass(store: queries.Store) -> None:
    outcomes = [outcome(watch(f"w{i:04d}"), seen("a", at(0))) for i in range(1000)]
    store.record_pass(report(*outcomes))
    states = store.states()
    assert len(states) == 1000
    assert states["w0999"] == outcomes[-1].state
    # and once more, all of them updated in place
    again = [outcome(o.watch, seen("b", at(300)), o.state) for o in outcomes]
    store.record_pass(report(*again, started=at(300)))
    states = store.states()
    assert len(states) == 1000
    assert {s.observed.digest for s in states.values() if s.observed} == {digest("b")}
    assert len(store.history(limit=5000)) == 2000

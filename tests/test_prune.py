"""The prune (`[reconciler].keep`, `reconciler db prune`), on SQLite and PostgreSQL: what is kept, what goes, in
batches, and a prune killed mid-batch, which leaves nothing half-done. Rows are written straight into the tables,
dated relative to now, since the CLI prunes by the real clock (the keep is 90 days: no test waits for it)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, text

from reconciler.store import prune, tables
from tests.support.cli import run_cli
from tests.support.daemon import wait_until
from tests.support.databases import TestDatabase

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=100)  # older than the default keep, 90 days
RECENT = NOW - timedelta(days=1)
DIGEST = "sha256:" + "a" * 64


def _observation(watch: str, at: datetime, n: int = 0) -> dict[str, Any]:
    return {
        "watch": watch,
        "at": at + timedelta(seconds=n),
        "tag": "latest",
        "digest": DIGEST,
        "verdict": "follow",
        "reason": f"#{n}",
    }


def _action(watch: str, status: str, at: datetime, digest: str = DIGEST, **more: Any) -> dict[str, Any]:
    finished = None if status in tables.OPEN_STATUSES else at + timedelta(minutes=5)
    row = {"watch": watch, "kind": "awx", "status": status, "tag": "latest", "digest": digest}
    return row | {"created_at": at, "finished_at": finished, "reset_at": None, **more}  # every row has every key


def _notice(n: int, status: str, at: datetime) -> dict[str, Any]:
    finished = None if status == "pending" else at + timedelta(seconds=1)
    return {"id": f"n{n}", "target": "slack", "event": "started", "body": "{}", "status": status} | {
        "created_at": at,
        "finished_at": finished,
    }


def _run(instance: str, hour: datetime) -> dict[str, Any]:
    hour = hour.replace(minute=0, second=0, microsecond=0)
    return {"instance": instance, "hour": hour, "passes": 3, "checked": 6, "changed": 1, "errors": 0} | {
        "first_started_at": hour,
        "last_finished_at": hour + timedelta(minutes=59),
        "last_summary": "checked 2 watches",
    }


def _pass(at: datetime) -> dict[str, Any]:
    summary = "recent pass" if at == RECENT else "old pass"
    return {"started_at": at, "finished_at": at + timedelta(seconds=2), "checked": 2, "errors": 0, "summary": summary}


def _seed(engine: Engine) -> None:
    """Old and recent rows of every kind, and the old ones that must stay."""
    with engine.begin() as conn:
        conn.execute(
            insert(tables.observations),
            [
                _observation("web", OLD, 1),  # goes
                _observation("web", OLD, 2),  # goes
                _observation("web", RECENT, 3),  # recent: stays
                _observation("quiet", OLD, 4),  # old, but the newest of its watch: stays
            ],
        )
        conn.execute(
            insert(tables.actions),
            [
                _action("web", "succeeded", OLD),  # goes
                _action("web", "failed", OLD, "sha256:" + "b" * 64),  # goes
                _action("web", "rejected", OLD, "sha256:" + "c" * 64),  # still holds its digest back: stays
                _action("web", "rejected", OLD, "sha256:" + "d" * 64, reset_at=OLD),  # lifted by retry: goes
                _action("web", "superseded", OLD, "sha256:" + "e" * 64),  # goes
                _action("web", "awaiting_approval", OLD, "sha256:" + "f" * 64),  # open: stays
                _action("web", "succeeded", RECENT),  # recent, and the newest: stays
                _action("quiet", "succeeded", OLD),  # old, but the newest of its watch: stays
            ],
        )
        conn.execute(
            insert(tables.notifications),
            [
                _notice(1, "delivered", OLD),  # goes
                _notice(2, "dropped", OLD),  # goes
                _notice(3, "pending", OLD),  # not delivered yet: stays
                _notice(4, "delivered", RECENT),  # stays
            ],
        )
        conn.execute(insert(tables.runs_hourly), [_run("default", OLD), _run("default", RECENT), _run("europe", OLD)])
        conn.execute(insert(tables.runs), [_pass(OLD), _pass(RECENT)])  # version 0.1's, one per pass


def _left(engine: Engine) -> dict[str, list[Any]]:
    with engine.connect() as conn:
        return {
            "observations": conn.execute(select(tables.observations.c.reason).order_by("id")).scalars().all(),
            "actions": [
                (w, s, d[7])
                for w, s, d in conn.execute(
                    select(tables.actions.c.watch, tables.actions.c.status, tables.actions.c.digest).order_by("id")
                )
            ],
            "notifications": conn.execute(select(tables.notifications.c.id).order_by("seq")).scalars().all(),
            "runs": conn.execute(select(tables.runs_hourly.c.instance).order_by("id")).scalars().all()
            + conn.execute(select(tables.runs.c.summary).order_by("id")).scalars().all(),
        }


KEPT = {
    "observations": ["#3", "#4"],
    "actions": [
        ("web", "rejected", "c"),
        ("web", "awaiting_approval", "f"),
        ("web", "succeeded", "a"),
        ("quiet", "succeeded", "a"),
    ],
    "notifications": ["n3", "n4"],
    "runs": ["default", "recent pass"],
}


def test_the_prune_keeps_what_must_stay_and_removes_the_rest(migrated_engine: Engine) -> None:
    _seed(migrated_engine)
    cutoff = NOW - timedelta(days=90)
    would = prune.Pruner(migrated_engine).prune(cutoff, dry_run=True)
    assert would == prune.Pruned(runs=3, observations=2, actions=4, notifications=2)
    assert len(_left(migrated_engine)["actions"]) == 8  # a dry run removes nothing

    done = prune.Pruner(migrated_engine).prune(cutoff)
    assert done == would
    assert _left(migrated_engine) == KEPT
    assert prune.Pruner(migrated_engine).prune(cutoff) == prune.Pruned()  # nothing more to do


def test_the_prune_goes_in_batches_oldest_first_and_a_stop_ends_it_between_two(migrated_engine: Engine) -> None:
    with migrated_engine.begin() as conn:
        conn.execute(insert(tables.observations), [_observation("web", OLD, n) for n in range(25)])
    told: list[tuple[str, int]] = []
    pruner = prune.Pruner(
        migrated_engine,
        batch=10,
        on_batch=lambda kind, removed: told.append((kind, removed)),
        should_stop=lambda: len(told) >= 2,
    )
    assert pruner.prune(NOW - timedelta(days=90)) == prune.Pruned(observations=20)
    assert told == [("observations", 10), ("observations", 20)]
    assert _left(migrated_engine)["observations"] == [f"#{n}" for n in range(20, 25)]  # the oldest went first

    told.clear()
    rest = prune.Pruner(migrated_engine, batch=10, on_batch=lambda kind, removed: told.append((kind, removed)))
    assert rest.prune(NOW - timedelta(days=90)) == prune.Pruned(observations=4)  # the newest, #24, stays
    assert told == [("observations", 4)]


# --- the command ----------------------------------------------------------------------------------------------


def _config(tmp_path: Path, database: str, extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[reconciler]\ndatabase = "{database}"\n{extra}\n'
        '[[watch]]\nname = "web"\nimage = "example/web"\ntag = "latest"\n'
    )
    return path


def test_db_prune_prints_what_it_removed_and_a_dry_run_removes_nothing(db: TestDatabase, tmp_path: Path) -> None:
    config = _config(tmp_path, db.url)
    assert run_cli(config, "db", "upgrade").returncode == 0
    engine = db.engine()
    try:
        _seed(engine)
        dry = run_cli(config, "db", "prune", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert dry.stdout.startswith("would remove what is older than 90d (before ")
        assert "3 runs, 2 observations, 4 actions, 2 notifications; nothing was removed" in dry.stdout
        assert len(_left(engine)["actions"]) == 8

        done = run_cli(config, "db", "prune", "--json")
        assert done.returncode == 0, done.stderr
        document = json.loads(done.stdout)
        assert document["removed"] == {"runs": 3, "observations": 2, "actions": 4, "notifications": 2}
        assert document["dry_run"] is False and document["total"] == 11 and document["keep_seconds"] == 90 * 86400
        assert datetime.fromisoformat(document["before"]) < NOW - timedelta(days=89)
        assert _left(engine) == KEPT

        again = run_cli(config, "db", "prune")
        assert again.returncode == 0 and ": 0 runs, 0 observations, 0 actions, 0 notifications" in again.stdout
    finally:
        engine.dispose()


def test_keep_is_read_from_the_configuration(db: TestDatabase, tmp_path: Path) -> None:
    config = _config(tmp_path, db.url, 'keep = "200d"')
    assert run_cli(config, "db", "upgrade").returncode == 0
    engine = db.engine()
    try:
        _seed(engine)
        done = run_cli(config, "db", "prune", "--json")
        assert json.loads(done.stdout)["total"] == 0  # the old rows are 100 days old
        assert len(_left(engine)["actions"]) == 8
    finally:
        engine.dispose()


@pytest.mark.parametrize("keep", ["90", "-1d", "forever", "59m"])
def test_a_bad_keep_is_one_clear_line(tmp_path: Path, keep: str) -> None:
    done = run_cli(_config(tmp_path, f"sqlite:///{tmp_path}/r.db", f'keep = "{keep}"'), "db", "prune")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "reconciler.keep" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "r.db").exists()


def test_db_prune_without_a_database_creates_none(tmp_path: Path) -> None:
    done = run_cli(_config(tmp_path, f"sqlite:///{tmp_path}/r.db"), "db", "prune")
    assert done.returncode == 0, done.stderr
    assert ": 0 runs, 0 observations, 0 actions, 0 notifications" in done.stdout
    assert not (tmp_path / "r.db").exists()


# --- killed mid-batch -----------------------------------------------------------------------------------------

MANY = 60_000  # observations of one watch, all old but the newest: 120 batches of 500


def _observations(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return (
            conn.execute(select(tables.observations.c.id).order_by(tables.observations.c.at, tables.observations.c.id))
            .scalars()
            .all()
        )


@pytest.fixture
def crowded(db: TestDatabase, tmp_path: Path) -> Iterator[tuple[Path, Engine]]:
    config = _config(tmp_path, db.url)
    assert run_cli(config, "db", "upgrade").returncode == 0
    engine = db.engine()
    with engine.begin() as conn:
        conn.execute(
            insert(tables.observations),
            [_observation("web", OLD, n) for n in range(MANY)] + [_observation("web", RECENT, MANY)],
        )
    try:
        yield config, engine
    finally:
        engine.dispose()


def _prune_process(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler.cli", "--config", str(config), "db", "prune"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_prune_killed_mid_way_removed_whole_batches_of_the_oldest_and_the_next_finishes(
    crowded: tuple[Path, Engine],
) -> None:
    config, engine = crowded
    before = _observations(engine)
    proc = _prune_process(config)
    try:
        wait_until(
            "the first batch to be removed",
            lambda: len(_observations(engine)) < len(before) or proc.poll() is not None,
            timeout=60,
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    after = _observations(engine)
    removed = len(before) - len(after)
    assert removed % prune.BATCH == 0  # whole batches, never part of one
    assert after == before[removed:]  # the oldest went, and nothing else

    rest = run_cli(config, "db", "prune", "--json")
    assert rest.returncode == 0, rest.stderr
    assert json.loads(rest.stdout)["removed"]["observations"] == MANY - removed
    assert _observations(engine) == before[-1:]  # the newest stays


def _ask(engine: Engine, query: str) -> Any:
    """A query on a connection of its own: PostgreSQL keeps one view of pg_stat_activity per transaction."""
    with engine.connect() as conn:
        return conn.execute(text(query)).scalar()


@pytest.mark.postgres
def test_a_prune_killed_while_its_delete_waits_undoes_that_batch_whole(
    postgres_db: TestDatabase, tmp_path: Path
) -> None:
    """Deterministic: the test holds a lock on one row of the first batch, so the prune's DELETE has removed part of
    the batch (in its transaction) and waits; the process is killed there. PostgreSQL rolls the batch back whole."""
    config = _config(tmp_path, postgres_db.url)
    assert run_cli(config, "db", "upgrade").returncode == 0
    engine = postgres_db.engine()
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(tables.observations),
                [_observation("web", OLD, n) for n in range(1200)] + [_observation("web", RECENT, 9999)],
            )
        before = _observations(engine)
        holder = engine.connect()
        trans = holder.begin()
        o = tables.observations
        holder.execute(select(o.c.id).where(o.c.id == before[300]).with_for_update())
        proc = _prune_process(config)
        try:
            waiting = (
                "SELECT pid FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND query LIKE 'DELETE FROM observations%'"
            )
            pid = wait_until("the prune's DELETE to wait on the locked row", lambda: _ask(engine, waiting), timeout=60)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        trans.rollback()  # the DELETE goes on, finds its client gone, and its transaction is rolled back
        gone = f"SELECT count(*) FROM pg_stat_activity WHERE pid = {int(pid)}"
        wait_until("the killed prune's session to end", lambda: _ask(engine, gone) == 0)
        holder.close()
        assert _observations(engine) == before  # not one row of the interrupted batch went

        rest = run_cli(config, "db", "prune", "--json")
        assert json.loads(rest.stdout)["removed"]["observations"] == 1200
        assert _observations(engine) == before[-1:]
    finally:
        engine.dispose()

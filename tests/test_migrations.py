"""The Alembic migrations build exactly the schema `store.tables` describes, on SQLite and on PostgreSQL."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import DateTime, Engine, Integer, Text, insert, inspect, select
from sqlalchemy import column as sa_column
from sqlalchemy import table as sa_table

from reconciler import model
from reconciler.store import queries, schema, tables
from tests.support.databases import TestDatabase

TABLES = {"watch_state", "observations", "actions", "leases", "runs", "runs_hourly", "notifications"}


def _diff(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, tables.metadata))


def test_fresh_database_has_no_tables_and_no_revision(db_engine: Engine) -> None:
    assert not schema.has_tables(db_engine)
    assert schema.current(db_engine) is None


def test_the_migrations_form_one_line_ending_at_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(schema.MIGRATIONS))
    script = ScriptDirectory.from_config(config)
    assert script.get_heads() == [schema.head()]
    chain = [rev.revision for rev in script.walk_revisions()]
    assert chain[-1] == "0001" and len(chain) == len(set(chain))


def test_upgrade_reaches_head_with_every_table(migrated_engine: Engine) -> None:
    assert schema.has_tables(migrated_engine)
    assert schema.current(migrated_engine) == schema.head()
    assert set(inspect(migrated_engine).get_table_names()) == TABLES | {"alembic_version"}


def test_migrations_give_exactly_the_models_schema(migrated_engine: Engine) -> None:
    assert _diff(migrated_engine) == []


def _quoted(sql: object) -> set[str]:
    return set(re.findall(r"'([^']*)'", str(sql)))


# Alembic's comparison ignores partial-index WHERE clauses and CHECK constraints, so these two are checked here.
def test_the_outbox_index_is_unique_and_partial_on_open_statuses(migrated_engine: Engine) -> None:
    indexes = {ix["name"]: ix for ix in inspect(migrated_engine).get_indexes("actions")}
    open_ix = indexes["uq_actions_open_watch_digest"]
    assert open_ix["unique"]
    assert open_ix["column_names"] == ["watch", "digest"]
    where = [v for k, v in open_ix.get("dialect_options", {}).items() if k.endswith("_where")]
    assert len(where) == 1, open_ix
    assert _quoted(where[0]) == set(tables.OPEN_STATUSES)


def test_the_status_check_allows_exactly_the_action_statuses(migrated_engine: Engine) -> None:
    checks = {ck["name"]: ck["sqltext"] for ck in inspect(migrated_engine).get_check_constraints("actions")}
    assert _quoted(checks["ck_actions_status"]) == set(tables.ACTION_STATUSES)


def test_upgrade_twice_is_a_no_op(migrated_engine: Engine) -> None:
    before = {name: inspect(migrated_engine).get_columns(name) for name in TABLES}
    schema.upgrade(migrated_engine)
    assert schema.current(migrated_engine) == schema.head()
    after = {name: inspect(migrated_engine).get_columns(name) for name in TABLES}
    assert [str(c) for c in before.items()] == [str(c) for c in after.items()]
    assert _diff(migrated_engine) == []


def test_downgrade_to_base_and_back(migrated_engine: Engine) -> None:
    config = Config()
    config.set_main_option("script_location", str(schema.MIGRATIONS))
    with migrated_engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    assert not schema.has_tables(migrated_engine)
    assert schema.current(migrated_engine) is None
    schema.upgrade(migrated_engine)
    assert schema.current(migrated_engine) == schema.head()
    assert _diff(migrated_engine) == []


def test_processes_migrating_a_fresh_database_together_never_crash(db: TestDatabase, tmp_path: Path) -> None:
    """`db upgrade` (and `run`, `reconcile`) started together: the migration lock (a PostgreSQL advisory lock,
    SQLite's write lock) makes them take turns, and the later ones find the database at head."""
    config = tmp_path / "config.toml"
    config.write_text("[reconciler]\n")
    command = [sys.executable, "-m", "reconciler.cli", "--config", str(config), "--database", db.url, "db", "upgrade"]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in processes]
    assert [code for code, _, _ in results] == [0] * 6, [err for _, _, err in results]
    assert all("Traceback" not in err for _, _, err in results)
    engine = db.engine()
    try:
        assert schema.current(engine) == schema.head()
        assert _diff(engine) == []
    finally:
        engine.dispose()


def _alembic(engine: Engine, verb: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(schema.MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        getattr(command, verb)(config, revision)


def _outcome(at: datetime) -> model.WatchOutcome:
    watch = model.Watch(name="w", image=model.ImageRef.parse("example/app"), selector=model.TagSelector("latest"))
    seen = model.Observation(tag="latest", digest="sha256:" + "a" * 64, checked_at=at)
    state = model.WatchState(watch="w", observed=model.Seen(tag="latest", digest=seen.digest, since=at), checked_at=at)
    decision = model.Decision(model.Verdict.BASELINE, "first")
    return model.WatchOutcome(watch=watch, result=seen, decision=decision, state=state, changed=True)


def test_0006_rolls_the_per_pass_runs_up_into_hours_and_back(db_engine: Engine) -> None:
    """Before 0006 every pass wrote a `runs` row; after it, one `runs_hourly` row per instance and hour holds their
    sums, the changes observed in that hour, and the newest pass's summary. `runs` stays as it was, and takes a
    0.1 process's passes still; a downgrade puts the hours recorded since back into it."""
    _alembic(db_engine, "upgrade", "0005")
    old = sa_table(
        "runs",
        sa_column("started_at", DateTime(timezone=True)),
        sa_column("finished_at", DateTime(timezone=True)),
        sa_column("checked", Integer()),
        sa_column("errors", Integer()),
        sa_column("summary", Text()),
    )
    seen = sa_table(
        "observations",
        sa_column("watch", Text()),
        sa_column("at", DateTime(timezone=True)),
        sa_column("verdict", Text()),
        sa_column("reason", Text()),
    )
    sqlite = db_engine.dialect.name == "sqlite"

    def at(hour: int, minute: int) -> datetime:
        value = datetime(2026, 11, 27, hour, minute, tzinfo=UTC)
        return value.replace(tzinfo=None) if sqlite else value

    with db_engine.begin() as conn:
        conn.execute(
            insert(old),
            [
                {"started_at": at(9, m), "finished_at": at(9, m + 1), "checked": 3, "errors": e, "summary": f"p{m}"}
                for m, e in ((10, 0), (20, 1), (58, 2))
            ]
            + [{"started_at": at(10, 5), "finished_at": at(10, 6), "checked": 4, "errors": 0, "summary": "ten"}],
        )
        conn.execute(insert(seen), [{"watch": "w", "at": at(9, 21), "verdict": "drift", "reason": "r"}] * 2)
    _alembic(db_engine, "upgrade", "0006")
    hourly = tables.runs_hourly
    with db_engine.connect() as conn:
        rows = conn.execute(select(hourly).order_by(hourly.c.hour)).all()
    assert [(r.instance, r.hour, r.passes, r.checked, r.changed, r.errors, r.last_summary) for r in rows] == [
        ("default", datetime(2026, 11, 27, 9, tzinfo=UTC), 3, 9, 2, 3, "p58"),
        ("default", datetime(2026, 11, 27, 10, tzinfo=UTC), 1, 4, 0, 0, "ten"),
    ]
    assert rows[0].first_started_at == datetime(2026, 11, 27, 9, 10, tzinfo=UTC)
    assert rows[0].last_finished_at == datetime(2026, 11, 27, 9, 59, tzinfo=UTC)
    with db_engine.begin() as conn:  # a 0.1 daemon still running records a pass the old way; a new one, the new way
        old_pass = {"started_at": at(11, 1), "finished_at": at(11, 2), "checked": 5, "errors": 0, "summary": "old"}
        conn.execute(insert(old), [old_pass])
    noon = datetime(2026, 11, 27, 12, 1, tzinfo=UTC)
    new_pass = model.RunReport(started_at=noon, finished_at=noon, dry_run=False, outcomes=(_outcome(noon),))
    queries.Store(db_engine).record_pass(new_pass)
    _alembic(db_engine, "downgrade", "0005")
    with db_engine.connect() as conn:
        back = conn.execute(select(old.c.checked, old.c.errors, old.c.summary).order_by(old.c.started_at)).all()
    assert [tuple(r) for r in back][:5] == [(3, 0, "p10"), (3, 1, "p20"), (3, 2, "p58"), (4, 0, "ten"), (5, 0, "old")]
    assert len(back) == 6 and back[5].summary.startswith("checked 1 watch")

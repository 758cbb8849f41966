"""`status` and `history` read through the database's own driver (`reconciler/store/glance.py`), without
SQLAlchemy, when the URL is plain; through SQLAlchemy otherwise; and through the engine's pool in the daemon. Each
way must say the same, on SQLite and PostgreSQL: rows written here, read back as documents, compared with each
other and with what was written. A database that cannot be read is one line, without its password."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, Table, create_engine, insert
from sqlalchemy.engine import make_url

from reconciler import config, database, errors, reading
from reconciler.store import glance, notices, outbox, queries, rows, schema, tables, urls
from tests.support.cli import run_cli
from tests.support.databases import TestDatabase

pytest_plugins = ["tests.support.databases"]

T0 = datetime(2026, 11, 28, 9, 30, 15, 123456, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)
DIGEST = "sha256:" + "a" * 64
NEWER = "sha256:" + "b" * 64


def _config(tmp_path: Path, database: str) -> config.Settings:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[reconciler]
database = "{database}"
[awx.production]
url = "https://awx.example.org"
token_env = "GLANCE_AWX_TOKEN"
[[notify]]
name = "chat"
url_env = "GLANCE_CHAT_URL"
[[watch]]
name = "staging"
image = "example/app"
tag = "latest"
[watch.action]
kind = "awx"
awx = "production"
template = "Deploy"
[[watch]]
name = "production"
image = "example/app"
tags = "release"
approve = true
[watch.action]
kind = "awx"
awx = "production"
template = "Deploy"
[[watch]]
name = "quiet"
image = "example/other"
tag = "latest"
"""
    )
    return config.load(path)


def _whole(table: Table, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every row with the same keys (one INSERT for all): what a row leaves out is NULL, or the column's default."""
    keys = {k for r in rows for k in r}
    defaults = {c.name: None for c in table.columns if c.name in keys}
    return [defaults | r for r in rows]


def _fill(engine: Engine) -> None:
    """Two watches with history; staging's last action succeeded after one failed, production's waits for a
    person; two pending notifications (one with an error) and a dropped one for `chat`, and one of another
    instance's, which is not ours to count."""
    state = {"observed_since": T0, "checked_at": T0 + timedelta(minutes=5), "check_failures": 0}
    action = {"kind": "awx", "attempt": 1, "created_at": T0, "previous_tag": None, "previous_digest": None}
    notice = {"event": "deployed", "watch": "staging", "body": "{}", "attempts": 1, "instance": "default"}
    with engine.begin() as conn:
        conn.execute(
            insert(tables.watch_state),
            _whole(
                tables.watch_state,
                [
                    {"watch": "staging", "image": "docker.io/example/app", "selector": "tag:latest", **state}
                    | {"observed_tag": "latest", "observed_digest": DIGEST}
                    | {"deployed_tag": "latest", "deployed_digest": DIGEST, "deployed_at": T0 + timedelta(minutes=3)},
                    {"watch": "production", "image": "docker.io/example/app", "selector": "release", **state}
                    | {"observed_tag": "2026.11.1", "observed_digest": NEWER, "last_error": "401 once"},
                    {"watch": "gone", "image": "docker.io/example/gone", "selector": "tag:latest", **state},
                ],
            ),
        )
        conn.execute(
            insert(tables.observations),
            [
                {"watch": "staging", "at": T0 + timedelta(seconds=s), "tag": "latest", "digest": DIGEST}
                | {"verdict": "drift", "reason": f"change {s}"}
                for s in range(3)
            ]
            + [{"watch": "gone", "at": T0, "tag": "x", "digest": DIGEST, "verdict": "drift", "reason": "not ours"}],
        )
        conn.execute(
            insert(tables.actions),
            _whole(
                tables.actions,
                [
                    {"watch": "staging", "status": "failed", "tag": "latest", "digest": DIGEST, **action}
                    | {"failure": "outage", "finished_at": T0 + timedelta(minutes=1), "detail": "AWX 502"},
                    {"watch": "staging", "status": "succeeded", "tag": "latest", "digest": DIGEST, **action}
                    | {"attempt": 2, "launched_at": T0 + timedelta(minutes=2), "finished_at": T0 + timedelta(minutes=3)}
                    | {"external_ref": "42", "link": "https://awx.example.org/#/jobs/playbook/42"},
                    {"watch": "production", "status": "awaiting_approval", "tag": "2026.11.1", "digest": NEWER}
                    | action
                    | {"approval": "waiting", "request": '{"method": "POST"}'},
                ],
            ),
        )
        conn.execute(
            insert(tables.notifications),
            _whole(
                tables.notifications,
                [
                    {"id": "n1", "target": "chat", "status": "pending", "created_at": T0, **notice},
                    {"id": "n2", "target": "chat", "status": "pending", "created_at": T0 + timedelta(seconds=1)}
                    | notice
                    | {"last_error": "HTTP 500", "next_attempt_at": T0 + timedelta(minutes=1)},
                    {"id": "n3", "target": "chat", "status": "dropped", "created_at": T0, **notice},
                    {
                        "id": "n4",
                        "target": "chat",
                        "status": "pending",
                        "created_at": T0,
                        **notice,
                        "instance": "other",
                    },
                ],
            ),
        )


@pytest.fixture
def filled(tmp_path: Path, plain_db: TestDatabase) -> Iterator[tuple[config.Settings, Engine]]:
    engine = plain_db.engine()
    schema.upgrade(engine)
    _fill(engine)
    if plain_db.backend == "postgresql":  # an empty schema first on the search_path ("$user"): still found
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE SCHEMA IF NOT EXISTS postgres")
    yield _config(tmp_path, plain_db.url), engine
    engine.dispose()


def _documents(read: reading.Reading) -> dict[str, Any]:
    return {
        "status": read.status([], now=NOW),
        "one": read.status(["production"], now=NOW),
        "history": read.history([], limit=10),
        "staging": read.history(["staging"], limit=4),
    }


def test_the_driver_and_the_pool_say_the_same_and_what_was_written(filled: tuple[config.Settings, Engine]) -> None:
    settings, engine = filled
    assert urls.parse(settings.database) is not None  # the test databases' URLs are plain: read by the driver
    bare = _documents(reading.Reading(settings))
    pooled = _documents(reading.Reading(settings, lambda: glance.borrowed(engine)))
    assert bare == pooled

    watches = {w["name"]: w for w in bare["status"]["watches"]}
    assert list(watches) == ["staging", "production", "quiet"]  # the configuration's, not the database's "gone"
    staging, production = watches["staging"], watches["production"]
    assert staging["observed"] == {
        "tag": "latest",
        "digest": DIGEST,
        "since": "2026-11-28T09:30:15Z",
        "checked_at": "2026-11-28T09:35:15Z",
    }
    assert staging["deployed"]["at"] == "2026-11-28T09:33:15Z"
    assert staging["last_action"]["status"] == "succeeded" and staging["last_action"]["attempt"] == 2
    assert staging["last_action"]["ref"] == "https://awx.example.org/#/jobs/playbook/42"
    assert production["last_action"]["status"] == "awaiting_approval"
    assert production["approval"] == {"state": "waiting", "by": None, "at": None}
    assert production["last_error"] == "401 once" and production["deployed"] is None
    assert watches["quiet"]["observed"] is None and watches["quiet"]["last_action"] is None
    chat = bare["status"]["notifications"]["chat"]
    assert (chat["undelivered"], chat["dropped"], chat["last_error"]) == (2, 1, "HTTP 500")
    assert [w["name"] for w in bare["one"]["watches"]] == ["production"]

    events = bare["history"]["events"]
    assert {e["watch"] for e in events} == {"staging", "production"}  # not "gone": another configuration's
    assert len(events) == 6 and events == sorted(events, key=lambda e: e["at"], reverse=True)
    staging_events = bare["staging"]["events"]  # newest first: the two actions, then two of three changes
    assert [e["type"] for e in staging_events] == ["action", "action", "observation", "observation"]
    assert [e["action"]["status"] for e in staging_events[:2]] == ["succeeded", "failed"]
    assert [e["reason"] for e in staging_events[2:]] == ["change 2", "change 1"]


def test_a_url_with_options_is_read_through_sqlalchemy_and_says_the_same(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'reconciler.db'}"
    engine = TestDatabase(backend="sqlite", url=url).engine()
    schema.upgrade(engine)
    _fill(engine)
    engine.dispose()
    plain = _documents(reading.Reading(_config(tmp_path, url)))
    optioned = _config(tmp_path, f"{url}?timeout=5")
    assert urls.parse(optioned.database) is None
    assert _documents(reading.Reading(optioned)) == plain


def test_no_database_yet_reads_as_empty_and_makes_no_file(tmp_path: Path) -> None:
    settings = _config(tmp_path, f"sqlite:///{tmp_path / 'none.db'}")
    document = reading.Reading(settings).status([], now=NOW)
    assert [w["observed"] for w in document["watches"]] == [None, None, None]
    assert reading.Reading(settings).history([], limit=5)["events"] == []
    assert not (tmp_path / "none.db").exists()


def test_a_database_at_an_older_schema_is_one_line_naming_the_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'reconciler.db'}"
    engine = TestDatabase(backend="sqlite", url=url).engine()
    schema.upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0005'")
    engine.dispose()
    _config(tmp_path, url)
    for command in (["status"], ["history", "--json"]):
        done = run_cli(tmp_path / "config.toml", *command)
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr.strip().splitlines() == [
            f"reconciler: the database {url} is at an older schema; run `reconciler db upgrade`"
        ]


def test_a_database_that_cannot_be_reached_is_one_line_without_its_password(tmp_path: Path) -> None:
    _config(tmp_path, "postgresql+psycopg://reader:s3cr3t-pw@127.0.0.1:1/nowhere")
    done = run_cli(tmp_path / "config.toml", "status", "--json")
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "s3cr3t-pw" not in done.stderr, done.stderr
    assert lines[0].startswith(
        "reconciler: cannot connect to the database postgresql+psycopg://reader:***@127.0.0.1:1/nowhere:"
    )


def test_an_unreachable_database_is_a_store_error_through_the_pool_too(tmp_path: Path) -> None:
    """What the daemon's passes read (the engine's pool) fails as one StoreError, which it reports once a
    minute, never as an internal error; and the password is in no message."""
    engine = database.database_engine("postgresql+psycopg://reader:s3cr3t-pw@127.0.0.1:1/nowhere")
    try:
        for read in (
            lambda: queries.Store(engine).states(["w"]),
            lambda: outbox.Outbox(engine).last_actions(["w"]),
            lambda: notices.NoticeBox(engine).backlog(["chat"]),
        ):
            with pytest.raises(errors.StoreError) as failed:
                read()
            assert str(failed.value).startswith("cannot connect to the database postgresql+psycopg://reader:***@")
            assert "s3cr3t-pw" not in str(failed.value)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_pooled_connection_that_dies_while_reading_is_dropped_quietly(
    plain_postgres_db: TestDatabase, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = plain_postgres_db.engine()
    schema.upgrade(engine)
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with pytest.raises(errors.StoreError), glance.borrowed(engine) as reading:
            with admin.connect() as conn:  # the server ends this connection, as a failover would
                pid = reading._rows("SELECT pg_backend_pid()", doing="read the pid")[0][0]
                conn.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
            reading.states()
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
        assert queries.Store(engine).states() == {}  # the pool gives a live one next
    finally:
        admin.dispose()
        engine.dispose()


def test_each_sqlite_connection_of_the_engine_keeps_a_small_page_cache(tmp_path: Path) -> None:
    """The daemon's pooled connections live as long as it does: their page caches are what its memory grows by
    as the file grows (bench/sqlite_cache_memory.py), so each is kept small, the borrowed ones included."""
    engine = database.database_engine(f"sqlite:///{tmp_path / 'reconciler.db'}")
    try:
        schema.upgrade(engine)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -database.SQLITE_CACHE_KIB
        with glance.borrowed(engine) as reading:
            assert reading._rows("PRAGMA cache_size", doing="read the cache size") == [(-database.SQLITE_CACHE_KIB,)]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_on_postgresql_times_are_read_in_utc_whatever_the_databases_zone(
    tmp_path: Path, plain_postgres_db: TestDatabase, postgres_url: str
) -> None:
    """Each connection, the driver's own and the engine's, reads in a UTC session (psycopg and the rows then convert
    no time), so a database set to another zone changes nothing that is shown, and a session of another program
    still has that zone: the setting is the session's."""
    name = make_url(plain_postgres_db.url).database
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"ALTER DATABASE \"{name}\" SET timezone = 'Pacific/Chatham'")  # +13:45
        engine = database.database_engine(plain_postgres_db.url)
        schema.upgrade(engine)
        _fill(engine)
        settings = _config(tmp_path, plain_postgres_db.url)
        plain = urls.parse(settings.database)
        assert plain is not None
        bare = _documents(reading.Reading(settings))
        assert bare == _documents(reading.Reading(settings, lambda: glance.borrowed(engine)))
        staging = bare["status"]["watches"][0]
        assert staging["observed"]["since"] == "2026-11-28T09:30:15Z"
        assert staging["deployed"]["at"] == "2026-11-28T09:33:15Z"
        for opened in (glance.connect(plain, "shown"), glance.borrowed(engine), glance.borrowed(engine)):
            with opened as found:
                assert found is not None and found._rows("SHOW TimeZone", doing="read the zone") == [("UTC",)]
        with engine.begin() as conn:  # a write through the pool, after its reads: still in UTC, still right
            assert conn.exec_driver_sql("SHOW TimeZone").scalar() == "UTC"
        assert queries.Store(engine).states(["staging"])["staging"].observed.since == T0  # type: ignore[union-attr]
        engine.dispose()
        other = create_engine(plain_postgres_db.url)
        with other.connect() as conn:
            assert conn.exec_driver_sql("SHOW TimeZone").scalar() == "Pacific/Chatham"
        other.dispose()
    finally:
        admin.dispose()


def test_an_action_row_is_read_in_the_tables_order_by_the_plain_sql_and_through_sqlalchemy_alike() -> None:
    """`rows.action_of` reads by position: the plain SQL selects ACTION_COLUMNS, and `select(tables.actions)` gives
    the table's columns, so the two orders must be one (a new column goes in both)."""
    assert tuple(c.name for c in tables.actions.columns) == rows.ACTION_COLUMNS
    assert set(rows.STATE_COLUMNS) <= {c.name for c in tables.watch_state.columns}
    assert set(rows.HISTORY_COLUMNS) <= {c.name for c in tables.observations.columns}

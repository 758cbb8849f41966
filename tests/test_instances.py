"""Daemons over time and side by side: the daemon prunes when it takes the lease, and two instances
(`[reconciler].instance`) with disjoint watches share one PostgreSQL database, each acting for its own watches
while a second daemon of the same instance stands by. Real processes, the real registry, the fake AWX; tests wait
for conditions, never sleep."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, insert, select

from reconciler import model
from reconciler.store import notices, tables
from tests.fakes.awx import FakeAwx
from tests.support.cli import run_cli
from tests.support.daemon import AWX_TOKEN, Daemon, configure, repo_of, wait_until
from tests.support.databases import TestDatabase
from tests.support.registry import LocalRegistry, push_schema2


@pytest.fixture
def awx() -> Iterator[FakeAwx]:
    with FakeAwx(token=AWX_TOKEN) as fake:
        fake.add_template("Staging Fragalysis Stack")
        yield fake


def _instance(d: Daemon, instance: str, suffix: str = "") -> Daemon:
    """This daemon's configuration as instance `instance`; `suffix` renames its watches and images apart."""
    text = d.config.read_text().replace("[reconciler]\n", f'[reconciler]\ninstance = "{instance}"\n', 1)
    if suffix:
        repo = repo_of(d)
        text = text.replace(repo, f"{repo}-{suffix}").replace('name = "staging"', f'name = "staging-{suffix}"')
        text = text.replace('name = "frontend"', f'name = "frontend-{suffix}"')
    d.config.write_text(text)
    return d


def _stop_all(*daemons: Daemon) -> None:
    for d in daemons:
        if d.proc and d.proc.poll() is None:
            d.stop(signal.SIGKILL)


def _watch(d: Daemon, name: str) -> dict[str, object]:
    code, body = d.get("/status")
    return next((w for w in json.loads(body)["watches"] if w["name"] == name), {}) if code == 200 else {}


@pytest.mark.postgres
def test_two_instances_share_one_database_each_acting_for_its_own_watches(
    tmp_path: Path, registry: LocalRegistry, awx: FakeAwx, postgres_db: TestDatabase
) -> None:
    europe = _instance(configure(tmp_path, registry, awx, database=postgres_db.url, name="europe"), "europe")
    americas = _instance(
        configure(tmp_path, registry, awx, database=postgres_db.url, name="americas"), "americas", suffix="am"
    )
    spare = _instance(configure(tmp_path, registry, awx, database=postgres_db.url, name="spare"), "europe")
    try:
        for d in (europe, americas):
            push_schema2(registry.base, repo_of(d), "latest", label="one")
            push_schema2(registry.base, f"{repo_of(d)}-frontend", "latest", label="front")
        europe.start()
        americas.start()
        wait_until("both instances to act", lambda: europe.get("/readyz")[0] == americas.get("/readyz")[0] == 200)
        spare.start()  # a second daemon of europe: it stands by
        wait_until(
            "the spare to stand by", lambda: spare.get("/readyz") == (503, b"standby: another instance holds the lease")
        )
        wait_until("europe's baseline", lambda: _watch(europe, "staging").get("deployed"))
        wait_until("americas' baseline", lambda: _watch(americas, "staging-am").get("deployed"))

        new_eu = push_schema2(registry.base, repo_of(europe), "latest", label="two")
        new_am = push_schema2(registry.base, repo_of(americas), "latest", label="two")
        wait_until("both launches", lambda: len(awx.launches) == 2, timeout=30)
        wait_until(
            "both to succeed",
            lambda: (
                sorted((a["watch"], a["status"], a["digest"]) for a in europe.actions())
                == [("staging", "succeeded", new_eu), ("staging-am", "succeeded", new_am)]
            ),
            timeout=30,
        )
        assert "staging-am" not in europe.logs() and '"watch": "staging"' not in americas.logs()
        assert "launching" not in spare.logs()
        engine = create_engine(postgres_db.url)
        try:
            with engine.connect() as conn:
                leases = sorted(conn.execute(select(tables.leases.c.name)).scalars())
                instances = set(conn.execute(select(tables.runs_hourly.c.instance)).scalars())
        finally:
            engine.dispose()
        assert leases == ["actions:americas", "actions:europe"]
        assert instances == {"americas", "europe"}
        assert [w["name"] for w in json.loads(europe.get("/status")[1])["watches"]] == ["staging", "frontend"]
    finally:
        _stop_all(europe, americas, spare)


def test_the_daemon_prunes_when_it_takes_the_lease(tmp_path: Path, registry: LocalRegistry, awx: FakeAwx) -> None:
    d = configure(tmp_path, registry, awx, interval="1h")
    done = run_cli(d.config, "db", "upgrade")
    assert done.returncode == 0, done.stderr
    old = datetime.now(UTC) - timedelta(days=120)
    engine = create_engine(d.database)
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(tables.observations),
                [
                    {"watch": "staging", "at": old + timedelta(minutes=n), "verdict": "follow", "reason": f"#{n}"}
                    for n in range(3)
                ]
                + [{"watch": "staging", "at": datetime.now(UTC), "verdict": "follow", "reason": "recent"}],
            )

        def left() -> list[str]:
            with engine.connect() as conn:
                o = tables.observations
                return list(conn.execute(select(o.c.reason).where(o.c.reason.like("#%")).order_by(o.c.id)).scalars())

        push_schema2(registry.base, repo_of(d), "latest", label="one")
        push_schema2(registry.base, f"{repo_of(d)}-frontend", "latest", label="front")
        d.start()
        wait_until("the old observations to go", lambda: left() == [] and "pruned what is older than 90d" in d.logs())
        line = next(json.loads(x) for x in d.logs().splitlines() if "pruned what is older" in x)
        assert line["message"].endswith(": 3 observations")
    finally:
        engine.dispose()
        _stop_all(d)


# --- what an instance reads and delivers of a shared database --------------------------------------------------


def test_each_instance_delivers_counts_and_drops_only_its_own_notifications(migrated_engine: Engine) -> None:
    """Two instances may both name a target "slack" (with different URLs): a notice goes out through the instance
    that recorded it, and only its `status` counts it."""
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    europe, americas = (
        notices.NoticeBox(migrated_engine, [model.Route(target="slack")], instance=name)
        for name in ("europe", "americas")
    )
    with migrated_engine.begin() as conn:
        europe.record(conn, [model.Notice(event=model.Event.STARTED, at=now, message="eu", watch="eu-web")], now)
    hold = {"hold": lambda _target: timedelta(minutes=1)}
    assert americas.claim(now, targets=["slack"], **hold) == []
    assert americas.backlog(["slack"])["slack"].undelivered == 0
    assert americas.expired(now + timedelta(days=2), now + timedelta(days=2)) == []
    assert europe.backlog(["slack"])["slack"].undelivered == 1
    [mine] = europe.claim(now, targets=["slack"], **hold)
    assert mine.watch == "eu-web"


@pytest.mark.parametrize("watches", [2, 150])  # named in the query; picked out from the newest rows
def test_history_shows_the_watches_of_its_configuration_only(tmp_path: Path, watches: int) -> None:
    config = tmp_path / "config.toml"
    lines = ["[reconciler]", f'database = "sqlite:///{tmp_path}/r.db"']
    for n in range(watches):
        lines += ["[[watch]]", f'name = "w{n}"', f'image = "example/app{n}"', 'tag = "latest"']
    config.write_text("\n".join(lines) + "\n")
    assert run_cli(config, "db", "upgrade").returncode == 0
    engine = create_engine(f"sqlite:///{tmp_path}/r.db")
    at = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(tables.observations),
                [{"watch": "w1", "at": at, "verdict": "follow", "reason": "mine"}]
                + [
                    {"watch": f"other{n}", "at": at + timedelta(seconds=n), "verdict": "follow", "reason": "theirs"}
                    for n in range(1, 700)  # newer than ours: more than one chunk of them
                ],
            )
            conn.execute(
                insert(tables.actions),
                [
                    {
                        "watch": watch,
                        "kind": "awx",
                        "status": "succeeded",
                        "tag": "latest",
                        "digest": "sha256:" + "a" * 64,
                    }
                    | {"created_at": at, "finished_at": at}
                    for watch in ("w1", *(f"other{n}" for n in range(1, 700)))
                ],
            )
    finally:
        engine.dispose()
    done = run_cli(config, "history", "--json", "--limit", "5")
    assert done.returncode == 0, done.stderr
    events = json.loads(done.stdout)["events"]
    assert {e["watch"] for e in events} == {"w1"} and len(events) == 2  # its change and its action

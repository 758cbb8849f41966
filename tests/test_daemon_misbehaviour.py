"""The daemon when the world misbehaves: triggers that arrive while a pass runs, a standby asked to act, and the
database going away and coming back (PostgreSQL behind a TCP proxy the test cuts). Real subprocesses, the real
registry and databases, the fake AWX; tests wait for the daemon to do something, never for time to pass."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.fakes.awx import FakeAwx
from tests.support.daemon import API_TOKEN, AWX_TOKEN, HOOK_SECRET, Daemon, configure, repo_of, wait_until
from tests.support.databases import TestDatabase
from tests.support.registry import LocalRegistry, push_schema2
from tests.support.tcpproxy import TcpProxy

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
def awx() -> Iterator[FakeAwx]:
    with FakeAwx(token=AWX_TOKEN) as fake:
        fake.add_template("Staging Fragalysis Stack")
        yield fake


def _stop_all(*daemons: Daemon) -> None:
    for d in daemons:
        if d.proc and d.proc.poll() is None:
            d.stop(signal.SIGKILL)


def test_a_push_announced_while_the_watch_is_deploying_is_deployed_right_after(
    tmp_path: Path, registry: LocalRegistry, awx: FakeAwx
) -> None:
    """The webhook (or POST /reconcile) arrives while that watch's pass waits for AWX: it must not be answered
    "queued" and then skipped; another pass runs as soon as the first ends, long before the next interval."""
    d = configure(tmp_path, registry, awx, interval="1h")
    push_schema2(registry.base, repo_of(d), "latest", label="one")
    d.start()
    try:
        wait_until("the start-up pass", lambda: d.status().get("state") == "in_sync")
        awx.script(outcome="successful", polls=10**6)  # the first deployment keeps running
        push_schema2(registry.base, repo_of(d), "latest", label="two")
        assert d.request("POST", "/reconcile?watch=staging", headers=AUTH)[0] == 202
        wait_until("the first launch", lambda: len(awx.launches) == 1)
        wait_until("it to be waited for", lambda: d.status().get("state") == "deploying")
        third = push_schema2(registry.base, repo_of(d), "latest", label="three")
        payload = json.dumps({"repository": {"repo_name": repo_of(d)}}).encode()
        code, body = d.request("POST", f"/hooks/dockerhub/{HOOK_SECRET}", body=payload)
        assert (code, json.loads(body)["queued"]) == (202, ["staging"])
        awx.script(outcome="successful", polls=1)
        first_job = max(awx.jobs)
        awx.set_job_status(first_job, "successful")
        wait_until("the push announced meanwhile to be launched", lambda: len(awx.launches) == 2, timeout=10)
        wait_until("and deployed", lambda: d.status()["deployed"]["digest"] == third, timeout=10)
        assert len(awx.launches) == 2
    finally:
        _stop_all(d)


def test_a_standby_answers_triggers_with_503_and_runs_nothing(
    tmp_path: Path, registry: LocalRegistry, awx: FakeAwx
) -> None:
    first = configure(tmp_path, registry, awx, name="first")
    second = configure(tmp_path, registry, awx, name="second")  # the same SQLite file: one lease
    second.config.write_text(second.config.read_text().replace(repo_of(second), repo_of(first)))
    push_schema2(registry.base, repo_of(first), "latest", label="one")
    try:
        first.start()
        wait_until("the first to act", lambda: first.get("/readyz")[0] == 200)
        second.start()
        wait_until("the second to stand by", lambda: second.get("/readyz")[0] == 503)
        code, body = second.request("POST", "/reconcile?watch=staging", headers=AUTH)
        assert code == 503 and "standby" in json.loads(body)["error"]
        payload = json.dumps({"repository": {"repo_name": repo_of(first)}}).encode()
        code, body = second.request("POST", f"/hooks/dockerhub/{HOOK_SECRET}", body=payload)
        assert code == 503 and "standby" in json.loads(body)["error"]
        assert first.request("POST", "/reconcile?watch=staging", headers=AUTH)[0] == 202
    finally:
        _stop_all(first, second)


def _through(proxy: TcpProxy, url: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.mark.postgres
def test_a_database_outage_is_weather_one_warning_a_minute_then_the_lease_by_the_rules(
    tmp_path: Path, registry: LocalRegistry, awx: FakeAwx, postgres_db: TestDatabase
) -> None:
    parts = urlsplit(postgres_db.url)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        d = configure(tmp_path, registry, awx, database=_through(proxy, postgres_db.url))
        push_schema2(registry.base, repo_of(d), "latest", label="one")
        d.start()
        try:
            wait_until("the start-up pass", lambda: d.status().get("state") == "in_sync")
            proxy.cut()
            wait_until("the lease to be given up (3s)", lambda: "standing by" in d.logs(), timeout=15)
            wait_until("a standby attempt or two more", lambda: d.logs().count('"level": "warning"') >= 1)
            during = d.logs()
            proxy.restore()
            wait_until("the lease taken again", lambda: during.count("acting") < d.logs().count("acting"), 15)
            second = push_schema2(registry.base, repo_of(d), "latest", label="two")
            wait_until("the push to be deployed once", lambda: d.status().get("deployed", {}).get("digest") == second)
            assert len(awx.launches) == 1
        finally:
            _stop_all(d)
    logs = d.logs()
    assert "Traceback" not in logs
    outage = [line for line in during.splitlines() if "database" in line and '"level": "warning"' in line]
    assert 1 <= len(outage) <= 2, outage  # one a minute (and the recovery may fall in the same minute)
    assert "the lease expired while the database did not answer" in during


@pytest.mark.postgres
def test_a_stalled_database_link_makes_the_daemon_stand_by_and_still_stop_within_seconds(
    tmp_path: Path, registry: LocalRegistry, awx: FakeAwx, postgres_db: TestDatabase
) -> None:
    """The link stalls instead of resetting (nothing answers, nothing fails): the renewal hangs, but the lease's
    end is watched by the process's clock, so the daemon stands by after 3s, and SIGTERM still ends it."""
    parts = urlsplit(postgres_db.url)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        d = configure(tmp_path, registry, awx, database=_through(proxy, postgres_db.url))
        push_schema2(registry.base, repo_of(d), "latest", label="one")
        d.start()
        try:
            wait_until("the start-up pass", lambda: d.status().get("state") == "in_sync")
            proxy.hold()
            wait_until("it to stand by", lambda: "standing by" in d.logs(), timeout=15)
            code, seconds = d.stop()
            assert code == 0 and seconds < 10, (code, seconds)
        finally:
            proxy.release()
            _stop_all(d)
    logs = d.logs()
    assert "Traceback" not in logs and "maximum number of running instances" not in logs
    assert "has not confirmed the lease" in logs

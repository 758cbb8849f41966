"""`reconciler reconcile` when it is interrupted or outpaced: Ctrl-C or SIGTERM while it waits for AWX or for the
registry, a lease lost while the registry answers slowly, an open action whose watch lost its action in the
configuration. Real processes, the real registry and databases, the fake AWX and the fake hub; the tests wait for
the other process to do something, never for time to pass."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, update

from reconciler import errors, lease, model
from reconciler.store import leases, tables
from tests.fakes.hub import FakeHub
from tests.support.awx_scenario import Scenario, baseline
from tests.support.daemon import wait_until
from tests.support.registry import LocalRegistry
from tests.support.tcpproxy import TcpProxy


def _interrupt(proc: subprocess.Popen[str], sig: int) -> tuple[int, float, str]:
    sent = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, time.monotonic() - sent, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_waiting_for_awx_stops_within_seconds_and_the_next_run_resumes(
    scenario: Scenario, sig: int
) -> None:
    s = scenario
    baseline(s)
    s.push("two")
    s.awx.script(outcome="successful", polls=10**6)  # the job keeps running
    proc = s.spawn("reconcile")
    wait_until("the launch to be recorded", lambda: [a["status"] for a in s.actions()] == ["launched"])
    code, seconds, err = _interrupt(proc, sig)
    assert seconds < 10, f"took {seconds:.1f}s"
    assert code == 128 + sig, err
    assert "interrupted" in err and "action #1 of watch staging is left launched" in err
    assert "resumes it" in err and "Traceback" not in err
    assert [a["status"] for a in s.actions()] == ["launched"]
    job = int(s.actions()[0]["external_ref"])
    s.awx.set_job_status(job, "successful")
    resumed = s.cli("reconcile")
    assert resumed.returncode == 0, resumed.stderr
    assert [a["status"] for a in s.actions()] == ["succeeded"] and len(s.awx.launches) == 1


HUB_CONFIG = """
[reconciler]
database = "sqlite:///{database}"

[registries."docker.io"]
url = "{hub}"

[[watch]]
name = "slow"
image = "xchem/slow"
tag = "latest"
"""


def test_sigterm_while_the_registry_asks_to_retry_in_a_minute_stops_within_seconds(tmp_path: Path) -> None:
    with FakeHub() as hub:
        hub.set_tag("xchem/slow", "latest", "sha256:" + "a" * 64)
        hub.fail_next(10, status=429, retry_after="60")
        config = tmp_path / "config.toml"
        config.write_text(HUB_CONFIG.format(database=tmp_path / "r.db", hub=hub.base))
        proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler.cli", "--config", str(config), "reconcile"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until("the first 429", lambda: hub.count(path_prefix="/v2/xchem/slow/manifests") >= 1)
        code, seconds, err = _interrupt(proc, signal.SIGTERM)
    assert seconds < 10, f"took {seconds:.1f}s"
    assert code == 128 + signal.SIGTERM and "interrupted" in err and "Traceback" not in err


LEASE_CONFIG = """
[reconciler]
database = "sqlite:///{database}"
lease = "3s"

[registries."docker.io"]
url = "http://127.0.0.1:{port}"

[awx.production]
url = "{awx}"
token_env = "TEST_AWX_TOKEN"

[[watch]]
name = "staging"
image = "{repo}"
tag = "latest"
[watch.action]
kind = "awx"
awx = "production"
template = "Staging Fragalysis Stack"
extra_vars = {{ stack_image_tag = "{{tag}}" }}
"""


def _lease(database: str) -> tuple[str, object] | None:
    engine = create_engine(database)
    with engine.connect() as conn:
        row = conn.execute(select(tables.leases.c.holder, tables.leases.c.expires_at)).first()
    engine.dispose()
    return None if row is None else (row.holder, row.expires_at)


def test_a_pass_renews_the_lease_while_the_registry_is_slow_and_plans_nothing_once_it_is_lost(
    scenario: Scenario, registry: LocalRegistry
) -> None:
    s = scenario
    baseline(s)
    s.push("two")
    port = int(registry.base.rsplit(":", 1)[1])
    with TcpProxy("127.0.0.1", port) as proxy:
        s.path.write_text(
            LEASE_CONFIG.format(
                database=s.database.removeprefix("sqlite:///"), port=proxy.port, awx=s.awx.base, repo=s.repo
            )
        )
        proxy.hold()
        proc = s.spawn("reconcile")
        wait_until("the registry request to be held", lambda: proxy.held_connections() >= 1)
        first = wait_until("the lease", lambda: _lease(s.database))
        # The registry stays silent past the lease (3s): the pass keeps renewing it.
        wait_until("a renewal", lambda: (_lease(s.database) or first)[1] > first[1], timeout=10)  # type: ignore[index]
        engine = create_engine(s.database)
        with engine.begin() as conn:  # another instance takes it (as after a pause longer than the lease)
            conn.execute(update(tables.leases).values(holder="elsewhere:1:cafe"))
        engine.dispose()
        proxy.release()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 4, err
    assert "lease" in err and "nothing more was planned" in err and "Traceback" not in err
    assert s.actions() == [] and s.awx.launches == []


def test_an_open_action_whose_watch_lost_its_action_is_closed_with_the_reason(scenario: Scenario) -> None:
    s = scenario
    baseline(s)
    s.push("two")
    s.awx.script(outcome="successful", polls=10**6)
    proc = s.spawn("reconcile")
    wait_until("the launch to be recorded", lambda: [a["status"] for a in s.actions()] == ["launched"])
    proc.kill()
    proc.wait()
    text = s.path.read_text()
    s.path.write_text(text[: text.index("[watch.action]")])  # the watch is only observed now
    done = s.cli("reconcile", "--json")
    assert done.returncode == 0, done.stderr
    action = s.actions()[0]
    assert action["status"] == "superseded"
    assert "no longer has an action of kind awx in the configuration" in action["detail"]
    assert s.cli("status", "--json").stdout.count('"deploying"') == 0
    assert model.ActionStatus(action["status"]) is model.ActionStatus.SUPERSEDED


def test_a_process_whose_clock_runs_years_ahead_cannot_take_a_live_lease(scenario: Scenario) -> None:
    """Lease times are the database's: a host whose clock is wrong sees the lease as it really is."""
    s = scenario
    baseline(s)
    s.push("two")
    engine = create_engine(s.database)
    assert leases.Leases(engine).acquire(name=lease.NAME, holder="elsewhere:1:cafe", ttl=timedelta(seconds=60))
    engine.dispose()
    s.time.now = datetime(2031, 1, 1, tzinfo=UTC)  # by this process's clock, that lease ended long ago
    with pytest.raises(errors.LockHeld):
        s.reconcile()
    assert s.actions() == [] and s.awx.launches == []


def test_sigterm_while_a_registry_request_hangs_stops_within_seconds(
    scenario: Scenario, registry: LocalRegistry
) -> None:
    """A request in flight (its answer may take the whole 30 s timeout) does not hold the exit."""
    s = scenario
    baseline(s)
    port = int(registry.base.rsplit(":", 1)[1])
    with TcpProxy("127.0.0.1", port) as proxy:
        s.path.write_text(s.path.read_text().replace(registry.base, f"http://127.0.0.1:{proxy.port}"))
        proxy.hold()
        proc = s.spawn("reconcile")
        wait_until("the registry request to be held", lambda: proxy.held_connections() >= 1)
        code, seconds, err = _interrupt(proc, signal.SIGTERM)
        proxy.release()
    assert seconds < 10, f"took {seconds:.1f}s"
    assert code == 128 + signal.SIGTERM and "interrupted" in err and "Traceback" not in err

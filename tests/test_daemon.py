"""`reconciler run` as a real subprocess: scheduled polls against the real registry, actions through the fake
AWX, the endpoints, SIGTERM, and two daemons sharing one PostgreSQL database. These tests wait for another
process to do something (polling its endpoints with a deadline); none sleeps to let time pass."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.awx import FakeAwx
from tests.support.daemon import API_TOKEN, AWX_TOKEN, HOOK_SECRET, Daemon, configure, repo_of, wait_until
from tests.support.databases import TestDatabase
from tests.support.registry import LocalRegistry, push_schema2


@pytest.fixture
def awx() -> Iterator[FakeAwx]:
    with FakeAwx(token=AWX_TOKEN) as fake:
        fake.add_template("Staging Fragalysis Stack")
        yield fake


@pytest.fixture
def running(tmp_path: Path, registry: LocalRegistry, awx: FakeAwx) -> Iterator[Daemon]:
    d = configure(tmp_path, registry, awx)
    first = push_schema2(registry.base, repo_of(d), "latest", label="one")
    push_schema2(registry.base, f"{repo_of(d)}-frontend", "latest", label="front")  # two watches: concurrent passes
    d.start()
    wait_until(
        "the start-up pass", lambda: d.status().get("deployed", {}) and d.status()["deployed"]["digest"] == first
    )
    yield d
    if d.proc and d.proc.poll() is None:
        d.stop(signal.SIGKILL)


def test_a_repushed_tag_is_noticed_within_an_interval_and_acted_on_once(
    running: Daemon, registry: LocalRegistry, awx: FakeAwx
) -> None:
    d = running
    second = push_schema2(registry.base, repo_of(d), "latest", label="two")
    pushed = time.monotonic()
    wait_until("the launch", lambda: len(awx.launches) == 1, timeout=10)
    noticed = time.monotonic() - pushed
    assert noticed < 1.0 + 0.0 + 1.5, f"noticed after {noticed:.2f}s; interval 1s, jitter 0s"
    wait_until("the roll-out to be recorded", lambda: d.status()["deployed"]["digest"] == second)
    passes = _polls(d)
    wait_until("two more polls", lambda: _polls(d) >= passes + 2, timeout=10)
    assert len(awx.launches) == 1, "an in-sync watch must not be deployed again"
    code, seconds = d.stop()
    assert code == 0 and seconds < 10
    assert "Traceback" not in d.logs()
    assert all(json.loads(line) for line in d.logs().splitlines()), "one JSON object per line"
    assert AWX_TOKEN not in d.logs() and API_TOKEN not in d.logs() and HOOK_SECRET not in d.logs()


def _polls(d: Daemon, watch: str = "staging") -> float:
    code, body = d.get("/metrics")
    assert code == 200
    for family in text_string_to_metric_families(body.decode()):
        if family.name == "reconciler_polls":
            return sum(
                s.value for s in family.samples if s.name == "reconciler_polls_total" and s.labels["watch"] == watch
            )
    return 0.0


def test_metrics_parse_and_count_the_polls(running: Daemon) -> None:
    wait_until("two polls", lambda: _polls(running) >= 2, timeout=10)
    code, body = running.get("/metrics")
    assert code == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    for name in (
        "reconciler_polls",
        "reconciler_poll_duration_seconds",
        "reconciler_last_success_timestamp_seconds",
        "reconciler_watch_in_sync",
        "reconciler_registry_requests",
        "reconciler_drift",
        "reconciler_actions",
        "reconciler_action_duration_seconds",
        "reconciler_registry_ratelimit_remaining",
    ):
        assert name in families, name
    ok = [
        s
        for s in families["reconciler_polls"].samples
        if s.labels == {"watch": "staging", "result": "ok"} and s.name.endswith("_total")
    ]
    assert ok and ok[0].value >= 2
    heads = [
        s
        for s in families["reconciler_registry_requests"].samples
        if s.labels.get("method") == "HEAD" and s.labels.get("code") == "200"
    ]
    assert heads and heads[0].value >= 2
    assert running.get("/readyz")[0] == 200 and running.get("/healthz") == (200, b"ok")


def test_post_reconcile_needs_the_bearer_token(running: Daemon) -> None:
    assert running.request("POST", "/reconcile")[0] == 401
    assert running.request("POST", "/reconcile", headers={"Authorization": "Bearer wrong"})[0] == 403
    code, body = running.request("POST", "/reconcile?watch=staging", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert (code, json.loads(body)) == (202, {"queued": ["staging"]})
    code, body = running.request("POST", "/reconcile?watch=nope", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert code == 404 and "no watch named 'nope'" in json.loads(body)["error"]


def test_a_webhook_with_the_right_secret_triggers_a_check_at_once(
    tmp_path: Path, registry: LocalRegistry, awx: FakeAwx
) -> None:
    d = configure(tmp_path, registry, awx, interval="1h")  # only the webhook can make it look again soon
    push_schema2(registry.base, repo_of(d), "latest", label="one")
    d.start()
    try:
        wait_until("the start-up pass", lambda: d.status().get("state") == "in_sync")
        second = push_schema2(registry.base, repo_of(d), "latest", label="two")
        payload = json.dumps({"repository": {"repo_name": repo_of(d)}, "push_data": {"tag": "anything"}}).encode()
        assert d.request("POST", "/hooks/dockerhub/wrong-secret", body=payload)[0] == 403
        assert d.request("POST", f"/hooks/dockerhub/{HOOK_SECRET}", body=b"{not json")[0] == 400
        assert awx.launches == []
        sent = time.monotonic()
        code, body = d.request("POST", f"/hooks/dockerhub/{HOOK_SECRET}", body=payload)
        assert (code, json.loads(body)["queued"]) == (202, ["staging"])
        wait_until("the launch", lambda: len(awx.launches) == 1, timeout=5)
        assert time.monotonic() - sent < 1.0, "the webhook must trigger a check within a second"
        wait_until("the roll-out", lambda: d.status()["deployed"]["digest"] == second)
    finally:
        d.stop(signal.SIGKILL)


def test_sigterm_during_an_awx_wait_leaves_a_resumable_action_and_exits_cleanly(
    running: Daemon, registry: LocalRegistry, awx: FakeAwx
) -> None:
    d = running
    awx.script(outcome="successful", polls=10**6)  # a job that keeps running
    second = push_schema2(registry.base, repo_of(d), "latest", label="two")
    wait_until("the launch", lambda: len(awx.launches) == 1, timeout=10)
    wait_until("the launch to be recorded", lambda: [a["status"] for a in d.actions()] == ["launched"])
    code, seconds = d.stop()
    assert code == 0 and seconds < 10, (code, seconds)
    assert [a["status"] for a in d.actions()] == ["launched"]
    job = int(d.actions()[0]["external_ref"])
    awx.set_job_status(job, "successful")
    d.start()
    wait_until("the resumed action to finish", lambda: [a["status"] for a in d.actions()] == ["succeeded"])
    assert len(awx.launches) == 1 and d.status()["deployed"]["digest"] == second
    d.stop()


@pytest.mark.postgres
def test_two_daemons_on_one_database_only_one_acts_and_the_other_takes_over(
    tmp_path: Path, registry: LocalRegistry, awx: FakeAwx, postgres_db: TestDatabase
) -> None:
    first = configure(tmp_path, registry, awx, database=postgres_db.url, name="first")
    second = configure(tmp_path, registry, awx, database=postgres_db.url, name="second")
    second.config.write_text(second.config.read_text().replace(repo_of(second), repo_of(first)))
    try:
        push_schema2(registry.base, repo_of(first), "latest", label="one")
        push_schema2(registry.base, f"{repo_of(first)}-frontend", "latest", label="front")
        first.start()
        second.start()
        wait_until("one daemon to act", lambda: first.get("/readyz")[0] == 200 or second.get("/readyz")[0] == 200)
        active, standby = (first, second) if first.get("/readyz")[0] == 200 else (second, first)
        assert standby.get("/readyz") == (503, b"standby: another instance holds the lease")
        push_schema2(registry.base, repo_of(first), "latest", label="two")
        wait_until("the launch", lambda: len(awx.launches) == 1)
        wait_until("it to be recorded", lambda: [a["status"] for a in active.actions()] == ["succeeded"])
        assert len(awx.launches) == 1

        active.stop(signal.SIGKILL)
        killed = time.monotonic()
        wait_until("the standby to take over", lambda: standby.get("/readyz")[0] == 200, timeout=10)
        assert time.monotonic() - killed < 3.0 + 1.5, "takeover within one lease period (3s)"
        push_schema2(registry.base, repo_of(first), "latest", label="three")
        wait_until("the new instance to act", lambda: len(awx.launches) == 2)
        standby.stop()
    finally:
        for d in (first, second):
            if d.proc and d.proc.poll() is None:
                d.stop(signal.SIGKILL)

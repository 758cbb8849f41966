"""Approvals through the running daemon: `POST /approve` and `/reject` with the API token, the metric, and two
daemons on one PostgreSQL database, where an approval given to the standby (its HTTP or the CLI) is acted on once,
by the holder of the lease. Real processes, the real registry, the fake AWX; tests wait for conditions, never sleep.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.awx import FakeAwx
from tests.support.daemon import API_TOKEN, AWX_TOKEN, Daemon, configure, repo_of, wait_until
from tests.support.databases import TestDatabase
from tests.support.registry import LocalRegistry, push_schema2

BEARER = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
def awx() -> Iterator[FakeAwx]:
    with FakeAwx(token=AWX_TOKEN) as fake:
        fake.add_template("Staging Fragalysis Stack")
        yield fake


def _gated(d: Daemon) -> Daemon:
    """The `staging` watch needs approval."""
    text = d.config.read_text()
    d.config.write_text(text.replace('name = "staging"\n', 'name = "staging"\napprove = true\n', 1))
    return d


def _post(d: Daemon, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    code, body = d.request("POST", path, headers=BEARER if headers is None else headers)
    try:
        return code, json.loads(body)
    except ValueError:
        return code, body.decode()


def _awaiting_gauge(d: Daemon) -> float | None:
    _, body = d.get("/metrics")
    for family in text_string_to_metric_families(body.decode()):
        if family.name == "reconciler_awaiting_approval":
            return next((s.value for s in family.samples if s.labels.get("watch") == "staging"), None)
    return None


def _staging(d: Daemon) -> dict[str, Any]:
    code, body = d.get("/status")
    return next(w for w in json.loads(body)["watches"] if w["name"] == "staging") if code == 200 else {}


@pytest.fixture
def running(tmp_path: Path, registry: LocalRegistry, awx: FakeAwx) -> Iterator[Daemon]:
    d = _gated(configure(tmp_path, registry, awx))
    first = push_schema2(registry.base, repo_of(d), "latest", label="one")
    push_schema2(registry.base, f"{repo_of(d)}-frontend", "latest", label="front")
    d.start()
    wait_until("the baseline", lambda: (_staging(d).get("deployed") or {}).get("digest") == first)
    yield d
    if d.proc and d.proc.poll() is None:
        d.stop(signal.SIGKILL)


def test_approve_and_reject_over_http(running: Daemon, registry: LocalRegistry, awx: FakeAwx) -> None:
    d = running
    second = push_schema2(registry.base, repo_of(d), "latest", label="two")
    wait_until("the approval to be asked", lambda: _staging(d).get("state") == "awaiting_approval")
    assert _staging(d)["approval"] == {"state": "waiting", "by": None, "at": None}
    assert _awaiting_gauge(d) == 1.0
    assert awx.launches == []

    query = f"/approve?watch=staging&digest={second}&by=alice"
    assert _post(d, query, headers={})[0] == 401
    assert _post(d, query, headers={"Authorization": "Bearer wrong"})[0] == 403
    code, answer = _post(d, "/approve?watch=staging&digest=sha256:" + "e" * 64)
    assert code == 409 and "has no action" in answer["error"]
    assert _post(d, "/approve?watch=nosuch")[0] == 404
    assert _post(d, "/approve?watch=staging&digest=latest")[0] == 400
    assert _post(d, "/approve")[0] == 400
    assert d.get(query)[0] == 405  # GET never changes anything
    assert awx.launches == [] and _staging(d)["state"] == "awaiting_approval"

    code, answer = _post(d, query)
    assert code == 200, answer
    assert answer["action"]["approval"]["state"] == "approved" and answer["action"]["approval"]["by"] == "alice"
    wait_until("the launch", lambda: len(awx.launches) == 1, timeout=10)
    wait_until("the roll-out", lambda: (_staging(d).get("deployed") or {}).get("digest") == second)
    assert _staging(d)["last_action"]["approval"]["by"] == "alice"
    assert _awaiting_gauge(d) == 0.0
    code, answer = _post(d, query)
    assert code == 409 and "does not wait for approval" in answer["error"]

    third = push_schema2(registry.base, repo_of(d), "latest", label="three")
    wait_until("the next approval", lambda: (_staging(d).get("observed") or {}).get("digest") == third)
    wait_until("it to wait", lambda: _staging(d).get("state") == "awaiting_approval")
    code, answer = _post(d, "/reject?watch=staging&by=bob")
    assert code == 200 and answer["action"]["status"] == "rejected"
    polls = _polls(d)
    wait_until("two more passes", lambda: _polls(d) >= polls + 2, timeout=10)
    assert len(awx.launches) == 1
    assert _staging(d)["approval"] == {"state": "rejected", "by": "bob", "at": _staging(d)["approval"]["at"]}
    assert _staging(d)["state"] == "drifted"
    assert API_TOKEN not in d.logs() and "Traceback" not in d.logs()


def _polls(d: Daemon) -> float:
    _, body = d.get("/metrics")
    return sum(
        s.value
        for family in text_string_to_metric_families(body.decode())
        if family.name == "reconciler_polls"
        for s in family.samples
        if s.name == "reconciler_polls_total" and s.labels.get("watch") == "staging"
    )


@pytest.mark.postgres
@pytest.mark.parametrize("given_by", ["http", "cli"])
def test_an_approval_given_to_the_standby_is_acted_on_once_by_the_holder(
    tmp_path: Path, registry: LocalRegistry, awx: FakeAwx, postgres_db: TestDatabase, given_by: str
) -> None:
    first = _gated(configure(tmp_path, registry, awx, database=postgres_db.url, name="first"))
    second = _gated(configure(tmp_path, registry, awx, database=postgres_db.url, name="second"))
    second.config.write_text(second.config.read_text().replace(repo_of(second), repo_of(first)))
    try:
        push_schema2(registry.base, repo_of(first), "latest", label="one")
        push_schema2(registry.base, f"{repo_of(first)}-frontend", "latest", label="front")
        first.start()
        second.start()
        wait_until("one daemon to act", lambda: first.get("/readyz")[0] == 200 or second.get("/readyz")[0] == 200)
        active, standby = (first, second) if first.get("/readyz")[0] == 200 else (second, first)
        digest = push_schema2(registry.base, repo_of(first), "latest", label="two")
        wait_until("the approval to be asked", lambda: _staging(standby).get("state") == "awaiting_approval")
        code, page = standby.get("/")
        assert code == 200 and "standby" in page.decode().lower()

        if given_by == "http":
            code, answer = _post(standby, f"/approve?watch=staging&digest={digest}&by=carol")
            assert code == 200, answer
        else:
            done = subprocess.run(
                [sys.executable, "-m", "reconciler.cli", "--config", str(standby.config), "approve", "staging"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
        wait_until("the launch", lambda: len(awx.launches) == 1, timeout=15)
        wait_until("it to be recorded", lambda: [a["status"] for a in active.actions()] == ["succeeded"])
        polls = _polls(active)
        wait_until("two more passes of the holder", lambda: _polls(active) >= polls + 2, timeout=10)
        assert len(awx.launches) == 1
        assert "approved by" in active.logs() and "launching" in active.logs()
        assert "launching" not in standby.logs()
    finally:
        for d in (first, second):
            if d.proc and d.proc.poll() is None:
                d.stop(signal.SIGKILL)

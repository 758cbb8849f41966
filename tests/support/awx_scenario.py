"""The end-to-end harness of the AWX deployment tests: a configuration with one AWX-deployed watch on the real
registry, the fake AWX, a database, and a fake clock whose sleeps move time on instantly; the CLI as a real process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, insert

from reconciler import app, config, model
from reconciler.store import tables
from tests.fakes.awx import FakeAwx
from tests.support import rows
from tests.support.registry import LocalRegistry, push_schema2

TOKEN = "awx-token-secret-4f9a"
STAGING = "Staging Fragalysis Stack"
PRODUCTION = "Production Fragalysis Stack"

CONFIG = """
[reconciler]
database = "{database}"
max_attempts = 3

[registries."docker.io"]
url = "{registry}"

[awx.production]
url = "{awx}"
token_env = "TEST_AWX_TOKEN"
poll = "{poll}"
timeout = "10m"

[[watch]]
name = "staging"
image = "{repo}"
tag = "latest"
[watch.action]
kind = "awx"
awx = "production"
template = {template}
extra_vars = {{ stack_image_tag = "{{tag}}", stack_digest = "{{digest}}" }}
"""


class FakeTime:
    """The clock and sleep handed to the engine: sleeping moves time on, instantly."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Scenario:
    registry: LocalRegistry
    awx: FakeAwx
    time: FakeTime
    path: Path
    repo: str
    database: str

    def settings(self, token: str = TOKEN) -> config.Settings:
        return config.load(self.path, env={"TEST_AWX_TOKEN": token})

    def reconcile(self, token: str = TOKEN) -> model.RunReport:
        application = app.App(self.settings(token), backoff=0)  # AWX asked again at once: no wall-clock wait
        try:
            return application.reconcile([], dry_run=False, clock=self.time, sleep=self.time.sleep)
        finally:
            application.close()

    def push(self, label: str) -> str:
        return push_schema2(self.registry.base, self.repo, "latest", label=label)

    def outcome(self, token: str = TOKEN) -> model.WatchOutcome:
        return self.reconcile(token).outcomes[0]

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reconciler.cli", "--config", str(self.path), *args],
            capture_output=True,
            text=True,
            env={**os.environ, "TEST_AWX_TOKEN": TOKEN},
            timeout=timeout,
        )

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "reconciler.cli", "--config", str(self.path), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "TEST_AWX_TOKEN": TOKEN},
        )

    def left_planned(self, *, digest: str, created_at: datetime) -> None:
        """The row a process leaves when it dies between writing its launch request and sending it."""
        staging_id = next(t["id"] for t in self.awx.templates.values() if t["name"] == STAGING)
        request = {
            "method": "POST",
            "url": f"{self.awx.base}/api/v2/job_templates/{staging_id}/launch/",
            "body": {"extra_vars": {"stack_image_tag": "latest", "stack_digest": digest}},
        }
        engine = create_engine(self.database)
        with engine.begin() as conn:
            conn.execute(
                insert(tables.actions).values(
                    watch="staging",
                    kind="awx",
                    status="planned",
                    tag="latest",
                    digest=digest,
                    attempt=1,
                    created_at=created_at,
                    request=json.dumps(request),
                )
            )
        engine.dispose()

    def actions(self) -> list[dict[str, Any]]:
        return rows.actions(self.database)


def make_scenario(
    tmp_path: Path,
    registry: LocalRegistry,
    awx: FakeAwx,
    database: str,
    *,
    template: str | int = STAGING,
    poll: str = "5s",
    approve: bool = False,
) -> Scenario:
    time = FakeTime()
    awx.clock = time
    repo = f"deploy/{tmp_path.name.lower().replace('_', '-')}"[:60]
    path = tmp_path / "config.toml"
    text = CONFIG.format(
        database=database, registry=registry.base, awx=awx.base, repo=repo, poll=poll, template=json.dumps(template)
    )
    path.write_text(text.replace('tag = "latest"\n', 'tag = "latest"\napprove = true\n') if approve else text)
    return Scenario(registry=registry, awx=awx, time=time, path=path, repo=repo, database=database)


def baseline(s: Scenario) -> str:
    first = s.push("one")
    assert s.outcome().decision.verdict is model.Verdict.BASELINE
    return first


@pytest.fixture
def awx() -> Iterator[FakeAwx]:
    """The fake AWX with both Fragalysis templates, answering the scenario's token."""
    with FakeAwx(token=TOKEN) as fake:
        fake.add_template(STAGING)
        fake.add_template(PRODUCTION)
        yield fake


@pytest.fixture
def scenario(tmp_path: Path, registry: LocalRegistry, awx: FakeAwx) -> Scenario:
    return make_scenario(tmp_path, registry, awx, f"sqlite:///{tmp_path}/reconciler.db")

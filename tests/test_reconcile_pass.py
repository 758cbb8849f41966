"""`reconcile`, `status` and `history` end to end: the real registry, the real databases (SQLite and PostgreSQL),
the real command line (in-process for speed; in a subprocess where the exit path itself is under test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select

from reconciler import app, cli, config, model
from reconciler.store import tables
from tests.fakes.awx import FakeAwx
from tests.support.databases import TestDatabase
from tests.support.registry import LocalRegistry, push_many, push_oci_index, push_schema2

AWX_SECRET = "awx-token-that-must-never-show-0123"

CONFIG = """
[reconciler]
database = "{database}"
first_seen = "{first_seen}"

[registries."docker.io"]
url = "{registry}"

[awx.production]
url = "{awx}"
token_env = "TEST_AWX_TOKEN"
poll = "10ms"

[[watch]]
name = "staging"
image = "{repo}"
tag = "latest"
[watch.action]
kind = "awx"
awx = "production"
template = "Staging Fragalysis Stack"
extra_vars = {{ stack_image_tag = "{{tag}}" }}

[[watch]]
name = "production"
image = "{repo}"
tags = "release"
[watch.action]
kind = "awx"
awx = "production"
template = "Production Fragalysis Stack"
extra_vars = {{ stack_image_tag = "{{tag}}" }}

[[watch]]
name = "frontend"
image = "{repo}-frontend"
tag = "latest"
"""

Run = Callable[..., tuple[int, Any, str]]


def _write_config(
    tmp_path: Path,
    *,
    registry: str,
    database: str,
    repo: str,
    first_seen: str = "baseline",
    awx: str = "http://127.0.0.1:9",
) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(registry=registry, database=database, repo=repo, first_seen=first_seen, awx=awx))
    return path


@pytest.fixture
def awx() -> Iterator[FakeAwx]:
    with FakeAwx(token=AWX_SECRET) as fake:
        fake.add_template("Staging Fragalysis Stack")
        fake.add_template("Production Fragalysis Stack")
        yield fake


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    monkeypatch.setenv("TEST_AWX_TOKEN", AWX_SECRET)

    def run(config_path: Path, *args: str) -> tuple[int, Any, str]:
        code = cli.main(["--config", str(config_path), *args])
        out, err = capsys.readouterr()
        document = json.loads(out) if "--json" in args and out.strip() else out
        return code, document, err

    return run


def _seed(registry: LocalRegistry, repo: str) -> str:
    """What every watch of CONFIG needs: `latest` and a release in `repo`, `latest` in `repo`-frontend."""
    push_schema2(registry.base, f"{repo}-frontend", "latest", label="front")
    push_schema2(registry.base, repo, "1.0.0", label="rel")
    return push_schema2(registry.base, repo, "latest", label="one")


def _by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {w["name"]: w for w in document["watches"]}


@pytest.mark.parametrize("kind", ["schema2", "oci-index"])
def test_a_repushed_tag_is_drift_and_an_unchanged_tag_is_in_sync(
    kind: str,
    registry: LocalRegistry,
    db: TestDatabase,
    runner: Run,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    awx: FakeAwx,
) -> None:
    push = push_schema2 if kind == "schema2" else push_oci_index
    repo = f"e2e/{kind}-{request.node.callspec.id.replace('[', '').replace(']', '').replace('-', '')}".lower()
    first = push(registry.base, repo, "latest", label="one")
    push(registry.base, f"{repo}-frontend", "latest", label="front")
    push_many(registry.base, repo, ["1.0.9", "1.0.10", "2.6.6.1", "v3.0.0"], label="rel")
    path = _write_config(tmp_path, registry=registry.base, database=db.url, repo=repo, awx=awx.base)

    code, doc, _ = runner(path, "reconcile", "--json")
    assert code == 0
    watches = _by_name(doc)
    assert watches["staging"]["decision"]["verdict"] == "baseline"
    assert watches["staging"]["deployed"]["digest"] == first
    assert watches["production"]["observed"]["tag"] == "1.0.10"

    code, doc, _ = runner(path, "reconcile", "--json")
    assert code == 0
    assert {w["decision"]["verdict"] for w in doc["watches"]} == {"in_sync"}

    assert awx.launches == []

    second = push(registry.base, repo, "latest", label="two")
    code, doc, _ = runner(path, "reconcile", "--json")
    assert code == 0
    staging = _by_name(doc)["staging"]
    assert staging["decision"]["verdict"] == "drift"
    assert staging["observed"]["digest"] == second
    assert staging["action"]["status"] == "succeeded"
    assert staging["deployed"]["digest"] == second
    assert staging["state"] == "in_sync"
    assert _by_name(doc)["production"]["decision"]["verdict"] == "in_sync"
    assert [vars_["stack_image_tag"] for _, vars_ in awx.launches] == ["latest"]

    code, status, _ = runner(path, "status", "--json")
    assert code == 0
    assert _by_name(status)["staging"]["state"] == "in_sync"
    assert _by_name(status)["staging"]["deployed"]["digest"] == second
    assert _by_name(status)["staging"]["last_action"]["ref"] == awx.ui_link(
        int(staging["action"]["ref"].split("/")[-1])
    )
    assert _by_name(status)["frontend"]["state"] == "in_sync"


def test_a_new_release_tag_is_drift_and_other_tags_are_ignored(
    registry: LocalRegistry, runner: Run, tmp_path: Path, awx: FakeAwx
) -> None:
    repo = "e2e/release"
    push_schema2(registry.base, repo, "latest", label="one")
    push_schema2(registry.base, f"{repo}-frontend", "latest", label="front")
    push_many(registry.base, repo, ["2026.08.2", "2026.08.3"], label="rel")
    path = _write_config(
        tmp_path, registry=registry.base, database=f"sqlite:///{tmp_path}/r.db", repo=repo, awx=awx.base
    )
    assert runner(path, "reconcile")[0] == 0

    push_many(registry.base, repo, ["2026.08.10", "2.6.6.1", "2026.9.1-rc.1", "v2027.1.1", "2023.11.1-1"], label="more")
    code, doc, _ = runner(path, "reconcile", "--json", "--watch", "production")
    assert code == 0
    production = _by_name(doc)["production"]
    assert production["decision"]["verdict"] == "drift"
    assert production["observed"]["tag"] == "2026.08.10"
    assert production["deployed"]["tag"] == "2026.08.10"
    assert production["action"]["status"] == "succeeded"
    assert [w["name"] for w in doc["watches"]] == ["production"]
    production_template = next(t["id"] for t in awx.templates.values() if t["name"] == "Production Fragalysis Stack")
    assert awx.launches == [
        (production_template, {"stack_image_tag": "2026.08.10", "reconciler_action": "production#1"})
    ]


def test_a_repushed_release_is_drift_too(registry: LocalRegistry, runner: Run, tmp_path: Path, awx: FakeAwx) -> None:
    repo = "e2e/rerelease"
    push_schema2(registry.base, repo, "latest", label="one")
    push_schema2(registry.base, f"{repo}-frontend", "latest", label="front")
    push_schema2(registry.base, repo, "1.2.3", label="first")
    path = _write_config(
        tmp_path, registry=registry.base, database=f"sqlite:///{tmp_path}/r.db", repo=repo, awx=awx.base
    )
    assert runner(path, "reconcile")[0] == 0
    rebuilt = push_schema2(registry.base, repo, "1.2.3", label="rebuilt")
    code, doc, _ = runner(path, "reconcile", "--json", "--watch", "production")
    assert code == 0
    assert _by_name(doc)["production"]["decision"]["verdict"] == "drift"
    assert _by_name(doc)["production"]["observed"]["digest"] == rebuilt
    assert [vars_ for _, vars_ in awx.launches] == [{"stack_image_tag": "1.2.3", "reconciler_action": "production#1"}]


def _row_counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        counts = {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (tables.watch_state, tables.observations, tables.runs_hourly)
        }
    engine.dispose()
    return counts


def test_dry_run_writes_nothing_and_prints_what_it_would_do(
    registry: LocalRegistry, runner: Run, tmp_path: Path, awx: FakeAwx
) -> None:
    repo = "e2e/dryrun"
    _seed(registry, repo)
    db_file = tmp_path / "r.db"
    path = _write_config(tmp_path, registry=registry.base, database=f"sqlite:///{db_file}", repo=repo, awx=awx.base)

    code, doc, _ = runner(path, "reconcile", "--dry-run", "--json")
    assert code == 0 and doc["dry_run"] is True
    assert not db_file.exists(), "a dry run on a new database must not even create it"

    assert runner(path, "reconcile")[0] == 0
    before = _row_counts(f"sqlite:///{db_file}")
    push_schema2(registry.base, repo, "latest", label="two")
    code, text, _ = runner(path, "reconcile", "--dry-run")
    assert code == 5  # an action would be taken (`git diff --exit-code` style)
    staging_template = next(t["id"] for t in awx.templates.values() if t["name"] == "Staging Fragalysis Stack")
    launch_url = f"{awx.base}/api/v2/job_templates/{staging_template}/launch/"
    assert "would act: awx production: Staging Fragalysis Stack" in text
    assert f"staging would send: POST {launch_url}" in text
    assert '"stack_image_tag": "latest"' in text
    assert "dry run, nothing written" in text
    code, doc, _ = runner(path, "reconcile", "--dry-run", "--json")
    assert _by_name(doc)["staging"]["action"]["request"] == {
        "method": "POST",
        "url": launch_url,
        "body": {"extra_vars": {"stack_image_tag": "latest", "reconciler_action": "staging#<id>"}},
    }
    assert _row_counts(f"sqlite:///{db_file}") == before
    assert awx.count(method="POST") == 0 and awx.launches == []
    assert _by_name(runner(path, "status", "--json")[1])["staging"]["state"] == "in_sync"  # nothing recorded


def test_first_seen_deploy_acts_on_the_first_observation(
    registry: LocalRegistry, runner: Run, tmp_path: Path, awx: FakeAwx
) -> None:
    repo = "e2e/firstdeploy"
    latest = _seed(registry, repo)
    path = _write_config(
        tmp_path,
        registry=registry.base,
        database=f"sqlite:///{tmp_path}/r.db",
        repo=repo,
        first_seen="deploy",
        awx=awx.base,
    )
    code, doc, _ = runner(path, "reconcile", "--json")
    assert code == 0
    watches = _by_name(doc)
    assert watches["staging"]["decision"]["verdict"] == "drift"
    assert watches["staging"]["action"]["status"] == "succeeded"
    assert watches["staging"]["deployed"]["digest"] == latest
    assert watches["frontend"]["decision"]["verdict"] == "baseline"  # nothing to deploy: deployed follows observed
    assert sorted(v["stack_image_tag"] for _, v in awx.launches) == ["1.0.0", "latest"]


def test_a_failing_watch_does_not_stop_the_others_and_exits_3(
    registry: LocalRegistry, runner: Run, tmp_path: Path
) -> None:
    repo = "e2e/isolated"
    push_schema2(registry.base, repo, "latest", label="one")  # no frontend repository, no release tag
    path = _write_config(tmp_path, registry=registry.base, database=f"sqlite:///{tmp_path}/r.db", repo=repo)
    code, doc, err = runner(path, "reconcile", "--json")
    assert code == 3
    watches = _by_name(doc)
    assert watches["staging"]["decision"]["verdict"] == "baseline"
    assert watches["frontend"]["state"] == "error"
    assert "docker.io/e2e/isolated-frontend: repository not found or private" in watches["frontend"]["last_error"]
    assert "no tag of docker.io/e2e/isolated matches tags:release" in watches["production"]["last_error"]
    assert err.count("\n") == 2 and "Traceback" not in err

    push_schema2(registry.base, f"{repo}-frontend", "latest", label="front")
    push_schema2(registry.base, repo, "1.0.0", label="rel")
    code, doc, _ = runner(path, "reconcile", "--json")
    assert code == 0
    assert _by_name(doc)["frontend"]["last_error"] is None


def test_status_answers_from_the_database_alone(registry: LocalRegistry, runner: Run, tmp_path: Path) -> None:
    repo = "e2e/status"
    _seed(registry, repo)
    database = f"sqlite:///{tmp_path}/r.db"
    path = _write_config(tmp_path, registry=registry.base, database=database, repo=repo)
    code, status, _ = runner(path, "status", "--json")
    assert code == 0 and {w["state"] for w in status["watches"]} == {"unknown"}
    assert runner(path, "reconcile")[0] == 0

    unreachable = _write_config(tmp_path, registry="http://127.0.0.1:9", database=database, repo=repo)
    code, status, err = runner(unreachable, "status", "--json")
    assert code == 0 and err == ""
    assert {w["state"] for w in status["watches"]} == {"in_sync"}
    code, table, _ = runner(unreachable, "status")
    assert code == 0 and "staging" in table and "in_sync" in table


def test_history_lists_changes_and_actions_newest_first(
    registry: LocalRegistry, runner: Run, tmp_path: Path, awx: FakeAwx
) -> None:
    repo = "e2e/history"
    _seed(registry, repo)
    path = _write_config(
        tmp_path, registry=registry.base, database=f"sqlite:///{tmp_path}/r.db", repo=repo, awx=awx.base
    )
    runner(path, "reconcile")
    runner(path, "reconcile")  # nothing changed: no new history
    new = push_schema2(registry.base, repo, "latest", label="two")
    runner(path, "reconcile")
    code, doc, _ = runner(path, "history", "--json", "--watch", "staging")
    assert code == 0
    assert [e.get("verdict") or e["action"]["status"] for e in doc["events"]] == ["succeeded", "drift", "baseline"]
    assert doc["events"][0]["type"] == "action" and doc["events"][0]["digest"] == new
    assert doc["events"][0]["action"]["ref"].startswith(f"{awx.base}/#/jobs/playbook/")
    code, text, _ = runner(path, "history", "--watch", "staging")
    assert "action #1 succeeded" in text
    code, doc, _ = runner(path, "history", "--json", "--limit", "2")
    assert len(doc["events"]) == 2
    code, _, err = runner(path, "history", "--watch", "nope")
    assert code == 2 and "no watch named 'nope'" in err


def test_settle_waits_for_a_digest_to_stay_unchanged(registry: LocalRegistry, tmp_path: Path, awx: FakeAwx) -> None:
    repo = "e2e/settle"
    _seed(registry, repo)
    path = _write_config(
        tmp_path, registry=registry.base, database=f"sqlite:///{tmp_path}/r.db", repo=repo, awx=awx.base
    )
    path.write_text(path.read_text().replace('first_seen = "baseline"', 'settle = "60s"'))
    settings = config.load(path, env={"TEST_AWX_TOKEN": AWX_SECRET})
    application = app.App(settings)
    t0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)

    def at(seconds: int) -> Callable[[], datetime]:
        return lambda: t0 + timedelta(seconds=seconds)

    def verdict(seconds: int) -> model.Verdict:
        result = application.reconcile(["staging"], dry_run=False, clock=at(seconds))
        return result.outcomes[0].decision.verdict

    assert verdict(0) is model.Verdict.BASELINE
    push_schema2(registry.base, repo, "latest", label="two")
    assert verdict(10) is model.Verdict.SETTLING
    assert verdict(69) is model.Verdict.SETTLING
    assert verdict(70) is model.Verdict.DRIFT
    push_schema2(registry.base, repo, "latest", label="three")  # changed again: the wait starts over
    assert verdict(80) is model.Verdict.SETTLING
    application.close()


def test_an_unreachable_registry_exits_3_with_one_line_per_watch_and_no_traceback(tmp_path: Path) -> None:
    path = _write_config(
        tmp_path, registry="http://127.0.0.1:9", database=f"sqlite:///{tmp_path}/r.db", repo="e2e/unreachable"
    )
    env = {**os.environ, "TEST_AWX_TOKEN": AWX_SECRET}
    done = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "--config", str(path), "reconcile"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 3
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 3  # one per watch: the pass's warning, said once
    assert all(
        " WARNING reconciler.engine: watch " in line
        and "cannot reach registry docker.io" in line
        and "connection refused" in line
        for line in lines
    )


def test_secrets_appear_nowhere(
    registry: LocalRegistry, runner: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, awx: FakeAwx
) -> None:
    repo = "e2e/secrets"
    _seed(registry, repo)
    database = f"sqlite:///{tmp_path}/r.db"
    path = _write_config(tmp_path, registry=registry.base, database=database, repo=repo, awx=awx.base)
    registry_secret = "registry-password-never-shown-42"
    path.write_text(
        path.read_text().replace(
            'url = "' + registry.base + '"',
            'url = "' + registry.base + '"\nusername_env = "TEST_REG_USER"\npassword_env = "TEST_REG_PASSWORD"',
        )
    )
    monkeypatch.setenv("TEST_REG_USER", "alice")
    monkeypatch.setenv("TEST_REG_PASSWORD", registry_secret)
    outputs = []
    for args in (
        ["--log-level", "debug", "reconcile"],
        ["push"],
        ["--log-level", "debug", "reconcile", "--dry-run"],
        ["--log-level", "debug", "reconcile"],  # launches, waits, succeeds
        ["push"],
        ["--log-level", "debug", "--log-format", "json", "reconcile", "--json"],
        ["status"],
        ["status", "--json"],
        ["history", "--json"],
        ["config", "check"],
        ["--log-format", "json", "--log-level", "debug", "reconcile", "--dry-run", "--json"],
    ):
        if args == ["push"]:
            push_schema2(registry.base, repo, "latest", label=f"new-{len(outputs)}")
            continue
        code, out, err = runner(path, *args)  # logs go to stderr, captured here too
        assert code == (5 if "--dry-run" in args and len(awx.launches) < 2 else 0), err
        outputs.append(json.dumps(out) + err)
    assert "DEBUG" in outputs[0]  # the debug log really was captured and searched
    assert len(awx.launches) == 2 and all(r.headers["authorization"] == f"Bearer {AWX_SECRET}" for r in awx.requests)
    outputs.append((tmp_path / "r.db").read_bytes().decode("latin-1"))
    for text in outputs:
        assert AWX_SECRET not in text
        assert registry_secret not in text

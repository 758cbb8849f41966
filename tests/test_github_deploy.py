"""Dispatching a GitHub Actions workflow through the outbox, against the fake GitHub over real HTTP and the real
registry: the exact dispatch, waiting for the run, GitHub's refusals and rate limits, an older GitHub Enterprise's
204, a lost answer found again, a run cancelled past its timeout, and the token kept out of the database and logs.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from reconciler import app, config, model
from tests.fakes.github import FakeGitHub
from tests.support import rows
from tests.support.awx_scenario import FakeTime
from tests.support.registry import LocalRegistry, push_schema2

TOKEN = "ghp_test_token_5e7a91"
STACK = "xchem/fragalysis-stack"
CONFIG = """
[reconciler]
database = "{database}"
max_attempts = 3

[registries."docker.io"]
url = "{registry}"

[github.default]
url = "{github}"
token_env = "TEST_GITHUB_TOKEN"
poll = "5s"
timeout = "{timeout}"

[[watch]]
name = "frontend"
image = "{repo}"
tag = "latest"
[watch.action]
kind = "github"
github = "default"
repository = "xchem/fragalysis-stack"
workflow = {workflow}
ref = "master"
inputs = {{ fe_image_tag = "{{tag}}", fe_namespace = "xchem" }}
"""


@dataclass
class Hub:
    registry: LocalRegistry
    github: FakeGitHub
    time: FakeTime
    path: Path
    repo: str
    database: str
    workflow_id: int

    def configure(self, *, workflow: str | int = "build main", timeout: str = "45m") -> None:
        self.path.write_text(
            CONFIG.format(
                database=self.database,
                registry=self.registry.base,
                github=self.github.base,
                repo=self.repo,
                workflow=json.dumps(workflow),
                timeout=timeout,
            )
        )

    def reconcile(self, *, dry_run: bool = False) -> model.WatchOutcome:
        application = app.App(config.load(self.path, env={"TEST_GITHUB_TOKEN": TOKEN}))
        try:
            report = application.reconcile([], dry_run=dry_run, clock=self.time, sleep=self.time.sleep)
        finally:
            application.close()
        return report.outcomes[0]

    def push(self, label: str) -> str:
        return push_schema2(self.registry.base, self.repo, "latest", label=label)

    def actions(self) -> list[dict[str, object]]:
        return rows.actions(self.database)


@pytest.fixture
def hub(tmp_path: Path, registry: LocalRegistry) -> Iterator[Hub]:
    time = FakeTime()
    with FakeGitHub(TOKEN, clock=time) as github:
        github.add_repository(STACK)
        workflow_id = github.add_workflow(STACK, name="build main")
        github.add_workflow(STACK, name="build dev", path=".github/workflows/build-dev.yaml")
        repo = f"github/{tmp_path.name.lower().replace('_', '-')}"[:60]
        h = Hub(registry, github, time, tmp_path / "config.toml", repo, f"sqlite:///{tmp_path}/r.db", workflow_id)
        h.configure()
        yield h


def drifted(h: Hub) -> str:
    h.push("one")
    assert h.reconcile().decision.verdict is model.Verdict.BASELINE
    return h.push("two")


def test_a_new_digest_dispatches_the_workflow_once_and_waits_for_its_run(hub: Hub) -> None:
    second = drifted(hub)
    outcome = hub.reconcile()
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.SUCCEEDED
    [dispatch] = hub.github.dispatches
    assert (dispatch.workflow_id, dispatch.ref) == (hub.workflow_id, "master")
    assert dispatch.inputs == {"fe_image_tag": "latest", "fe_namespace": "xchem"}
    [action] = hub.actions()
    run = hub.github.runs[dispatch.run_id]
    assert action["external_ref"] == f"run:{dispatch.run_id}" and action["link"] == run["html_url"]
    assert action["digest"] == second
    assert hub.reconcile().decision.verdict is model.Verdict.IN_SYNC
    assert len(hub.github.dispatches) == 1


def test_the_dispatch_body_asks_for_the_run_and_is_recorded_exactly(hub: Hub) -> None:
    drifted(hub)
    preview = hub.reconcile(dry_run=True).preview
    assert preview is not None
    assert preview["method"] == "POST"
    assert preview["url"] == f"{hub.github.base}/repos/{STACK}/actions/workflows/{hub.workflow_id}/dispatches"
    assert preview["body"] == {
        "ref": "master",
        "inputs": {"fe_image_tag": "latest", "fe_namespace": "xchem"},
        "return_run_details": True,
    }
    assert hub.github.dispatches == []


def test_a_workflow_that_does_not_exist_names_the_closest(hub: Hub) -> None:
    hub.configure(workflow="build mian")
    drifted(hub)
    outcome = hub.reconcile()
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.FAILED
    assert outcome.action.failure is model.Failure.REFUSED
    assert "has no workflow named 'build mian'; closest: 'build main'" in (outcome.action.detail or "")


@pytest.mark.parametrize("workflow", ["build-main.yaml", "ID"])
def test_a_workflow_by_file_name_or_id(hub: Hub, workflow: str) -> None:
    hub.configure(workflow=hub.workflow_id if workflow == "ID" else workflow)
    drifted(hub)
    assert hub.reconcile().action.status is model.ActionStatus.SUCCEEDED  # type: ignore[union-attr]
    assert [d.workflow_id for d in hub.github.dispatches] == [hub.workflow_id]


def test_an_input_the_workflow_does_not_declare_fails_once_quoting_github_and_is_not_retried(hub: Hub) -> None:
    hub.path.write_text(hub.path.read_text().replace('fe_namespace = "xchem"', 'fe_colour = "blue"'))
    drifted(hub)
    outcome = hub.reconcile()
    assert outcome.action is not None and outcome.action.failure is model.Failure.REFUSED
    assert 'Unexpected inputs provided: ["fe_colour"]' in (outcome.action.detail or "")
    hub.time.advance(3600)
    assert hub.reconcile().decision.verdict is model.Verdict.GAVE_UP
    assert hub.github.dispatches == []


def test_a_failed_run_fails_the_action_saying_how(hub: Hub) -> None:
    drifted(hub)
    hub.github.script("failure", polls=1)
    outcome = hub.reconcile()
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.FAILED
    assert outcome.action.failure is model.Failure.DEPLOYMENT
    assert "failure (https://github.com/xchem/fragalysis-stack/actions/runs/" in (outcome.action.detail or "")


def test_an_older_github_enterprise_answering_204_has_its_run_looked_for(hub: Hub) -> None:
    drifted(hub)
    hub.github.old_enterprise()
    outcome = hub.reconcile()
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.SUCCEEDED
    [dispatch] = hub.github.dispatches
    assert outcome.action.external_ref == f"run:{dispatch.run_id}"


def test_a_dispatch_whose_answer_is_lost_is_found_not_sent_again(hub: Hub) -> None:
    drifted(hub)
    hub.github.fail_next(1, 504, "dispatch", creates=True)  # the run exists; a gateway answered 504
    outcome = hub.reconcile()
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.SUCCEEDED
    assert len(hub.github.dispatches) == 1


def test_a_dispatch_refused_by_a_rate_limit_waits_as_long_as_github_asked(hub: Hub) -> None:
    drifted(hub)
    hub.github.rate_limit_next("dispatch", secondary=True, wait=600)
    outcome = hub.reconcile()
    action = outcome.action
    assert action is not None and action.failure is model.Failure.OUTAGE and "rate-limited" in (action.detail or "")
    assert action.next_attempt_at is not None and action.finished_at is not None
    assert (action.next_attempt_at - action.finished_at).total_seconds() >= 600
    hub.time.advance(601)
    assert hub.reconcile().action.status is model.ActionStatus.SUCCEEDED  # type: ignore[union-attr]


def test_a_run_past_its_timeout_is_cancelled(hub: Hub) -> None:
    hub.configure(timeout="1m")
    drifted(hub)
    hub.github.script("success", polls=1000)
    outcome = hub.reconcile()
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.FAILED
    assert "ran past the timeout of 0:01:00; cancelled" in (outcome.action.detail or "")
    assert hub.github.count("POST", f"/repos/{STACK}/actions/runs/") == 1


def test_the_token_is_never_stored_nor_logged(hub: Hub, caplog: pytest.LogCaptureFixture) -> None:
    drifted(hub)
    with caplog.at_level(logging.DEBUG):
        hub.reconcile()
    engine = create_engine(hub.database)
    with engine.connect() as conn:
        stored = " ".join(
            repr(r) for t in inspect(engine).get_table_names() for r in conn.execute(text(f"SELECT * FROM {t}"))
        )
    engine.dispose()
    assert TOKEN not in stored and TOKEN not in caplog.text
    assert len(hub.github.dispatches) == 1


def test_a_lost_answer_with_a_run_dispatched_by_hand_beside_it_adopts_neither(hub: Hub) -> None:
    """Runs list no inputs: two dispatch runs on the branch since the action was planned cannot be told apart."""
    drifted(hub)
    hub.github.dispatch_by_hand(STACK, hub.workflow_id, "master", {"fe_image_tag": "latest"})
    hub.github.fail_next(1, 504, "dispatch", creates=True)
    outcome = hub.reconcile()
    action = outcome.action
    assert action is not None and action.status is model.ActionStatus.FAILED
    assert action.failure is model.Failure.OUTAGE and action.external_ref is None
    assert len(hub.github.runs) == 2 and len(hub.github.dispatches) == 1


def _cli(h: Hub, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler.cli", "--config", str(h.path), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TEST_GITHUB_TOKEN": TOKEN},
    )


@pytest.mark.parametrize("moment", ["after-the-dispatch-post", "after-recording-launched"])
def test_a_process_killed_mid_action_leads_to_exactly_one_run(hub: Hub, moment: str) -> None:
    hub.path.write_text(hub.path.read_text().replace('poll = "5s"', 'poll = "20ms"'))
    second = drifted(hub)
    hub.github.clock = lambda: datetime.now(UTC)  # the subprocesses run on the real clock; so must GitHub
    if moment == "after-the-dispatch-post":
        hub.github.hang_next("dispatch", after_create=True)  # the run exists; the answer never arrives
    else:
        hub.github.hang_next("run")  # the dispatch was answered and recorded; the first look at the run hangs
    proc = _cli(hub, "reconcile")
    try:
        assert hub.github.wait_hanging(timeout=30), "the reconcile process never reached the hanging request"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    hub.github.release()
    [left] = hub.actions()
    assert left["status"] == ("planned" if moment == "after-the-dispatch-post" else "launched")
    assert len(hub.github.runs) == 1

    again = _cli(hub, "reconcile", "--json")
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert len(hub.github.runs) == 1, "the restarted process must find the run, not dispatch another"
    [finished] = hub.actions()
    assert finished["status"] == "succeeded" and finished["digest"] == second
    assert TOKEN not in out + err


def test_a_github_enterprise_refusing_run_details_is_dispatched_once_without_them(hub: Hub) -> None:
    drifted(hub)
    hub.github.old_enterprise(refuses_run_details=True)  # GHES 3.19: 422, and nothing dispatched
    outcome = hub.reconcile()
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.SUCCEEDED
    [dispatch] = hub.github.dispatches
    assert outcome.action.external_ref == f"run:{dispatch.run_id}"


BACKEND = """
[[watch]]
name = "backend"
image = "{repo}-backend"
tag = "latest"
[watch.action]
kind = "github"
github = "default"
repository = "xchem/fragalysis-stack"
workflow = "build main"
ref = "master"
inputs = {{ be_image_tag = "{{tag}}" }}
"""


def test_a_lost_dispatch_never_adopts_the_run_another_watch_recorded(hub: Hub) -> None:
    hub.path.write_text(hub.path.read_text() + BACKEND.format(repo=hub.repo))
    push_schema2(hub.registry.base, f"{hub.repo}-backend", "latest", label="b1")
    drifted(hub)  # frontend drifts; backend's baseline
    push_schema2(hub.registry.base, f"{hub.repo}-backend", "latest", label="b2")
    hub.github.fail_next(1, 504, "dispatch", creates=False)  # whichever dispatches first: nothing created
    application = app.App(config.load(hub.path, env={"TEST_GITHUB_TOKEN": TOKEN}))
    try:
        report = application.reconcile([], dry_run=False, clock=hub.time, sleep=hub.time.sleep)
    finally:
        application.close()
    actions = {o.watch.name: o.action for o in report.outcomes}
    refs = [a.external_ref for a in actions.values() if a is not None and a.external_ref]
    assert len(refs) == len(set(refs)), f"one run adopted by two actions: {refs}"
    assert len(hub.github.dispatches) == 1  # the one that was created; the lost one is planned again later
    lost = [a for a in actions.values() if a is not None and a.status is model.ActionStatus.FAILED]
    assert [a.failure for a in lost] == [model.Failure.OUTAGE]


def test_an_unreadable_answer_is_one_error_not_a_traceback(hub: Hub) -> None:
    drifted(hub)
    hub.github.fail_next(1, 200, "workflows", body={"total_count": 1, "workflows": [{"id": "abc", "name": "x"}]})
    hub.configure(workflow="build-main.yaml")
    outcome = hub.reconcile()
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.FAILED
    assert "cannot be read" in (outcome.action.detail or "") or "without an id" in (outcome.action.detail or "")


def test_a_secondary_rate_limit_without_retry_after_is_an_outage_not_a_permission(hub: Hub) -> None:
    drifted(hub)
    hub.github.rate_limit_next("dispatch", secondary=True, wait=-1)
    action = hub.reconcile().action
    assert action is not None and action.failure is model.Failure.OUTAGE
    assert "actions:write" not in (action.detail or "") and "rate-limited" in (action.detail or "")
    assert action.next_attempt_at is not None and action.finished_at is not None
    assert (action.next_attempt_at - action.finished_at).total_seconds() >= 60


def test_a_run_that_cannot_be_read_for_a_rate_limit_is_followed_in_a_later_pass(hub: Hub) -> None:
    """Polling on while GitHub says to wait an hour would only anger it: the action stays open for a later pass."""
    hub.configure(timeout="2h")
    drifted(hub)
    hub.github.script("success", polls=2)
    hub.github.rate_limit_next("run", wait=3600)  # the first GET of the run: wait an hour
    outcome = hub.reconcile()
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.LAUNCHED
    assert "followed again in a later pass" in (outcome.action.detail or "")
    assert hub.github.count("GET", f"/repos/{STACK}/actions/runs/") == 1  # asked once, not polled on
    hub.time.advance(3600)
    assert hub.reconcile().action.status is model.ActionStatus.SUCCEEDED  # type: ignore[union-attr]
    assert len(hub.github.dispatches) == 1

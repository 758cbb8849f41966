"""Deploying through AWX exactly once: launch and wait, failures and back-off, crash recovery (SIGKILL in a
subprocess), two instances on one PostgreSQL database, the lease. The real registry and databases, the fake AWX
server over real HTTP, and an injected clock (the waits advance it instead of sleeping)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert

from reconciler import app, config, model
from reconciler.store import tables
from tests.fakes.awx import FakeAwx
from tests.support.awx_scenario import STAGING, TOKEN, Scenario, baseline, make_scenario
from tests.support.databases import TestDatabase
from tests.support.registry import LocalRegistry


def test_drift_launches_the_template_once_waits_and_records_success(
    tmp_path: Path, registry: LocalRegistry, awx: FakeAwx, db: TestDatabase
) -> None:
    s = make_scenario(tmp_path, registry, awx, db.url)
    first = baseline(s)
    second = s.push("two")
    outcome = s.outcome()
    assert outcome.decision.verdict is model.Verdict.DRIFT
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.SUCCEEDED
    assert outcome.state.deployed is not None and outcome.state.deployed.digest == second
    staging_id = next(t["id"] for t in awx.templates.values() if t["name"] == STAGING)
    assert awx.launches == [
        (staging_id, {"stack_image_tag": "latest", "stack_digest": second, "reconciler_action": "staging#1"})
    ]
    job_id = int(outcome.action.external_ref or 0)
    assert outcome.action.link == awx.ui_link(job_id)
    assert awx.jobs[job_id]["status"] == "successful"
    assert outcome.action.detail is not None and outcome.action.detail.startswith(f"job {job_id} successful")
    [row] = s.actions()
    assert (row["status"], row["digest"], row["previous_digest"], row["attempt"]) == ("succeeded", second, first, 1)

    again = s.outcome()
    assert again.decision.verdict is model.Verdict.IN_SYNC and not again.acted
    assert len(awx.launches) == 1


def test_the_template_can_be_given_by_numeric_id(tmp_path: Path, registry: LocalRegistry, awx: FakeAwx) -> None:
    template_id = awx.add_template("Numbered")
    s = make_scenario(tmp_path, registry, awx, f"sqlite:///{tmp_path}/r.db", template=template_id)
    baseline(s)
    s.push("two")
    assert s.outcome().action.status is model.ActionStatus.SUCCEEDED  # type: ignore[union-attr]
    assert [t for t, _ in awx.launches] == [template_id]
    assert awx.count(method="GET", path_prefix="/api/v2/job_templates/?") == 0  # no lookup by name


@pytest.mark.parametrize("ending", ["failed", "error", "canceled"])
def test_a_job_that_does_not_succeed_is_retried_with_backoff_up_to_max_attempts(
    scenario: Scenario, ending: str
) -> None:
    s = scenario
    first = baseline(s)
    second = s.push("two")
    s.awx.script(outcome=ending, polls=1)
    outcome = s.outcome()
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.FAILED
    assert f"job {outcome.action.external_ref} {ending}" in (outcome.action.detail or "")
    assert outcome.state.deployed is not None and outcome.state.deployed.digest == first  # still drifted
    retry_at = outcome.action.next_attempt_at
    assert retry_at is not None and retry_at - s.time() <= timedelta(seconds=30)

    s.time.advance(5)
    waiting = s.outcome()
    assert waiting.decision.verdict is model.Verdict.RETRY_LATER and not waiting.acted
    assert f"job {outcome.action.external_ref} {ending}" in waiting.decision.reason
    assert len(s.awx.launches) == 1

    for attempt in (2, 3):
        s.time.advance(31 * 2 ** (attempt - 2))
        retried = s.outcome()
        assert retried.action is not None and retried.action.attempt == attempt
        assert retried.action.status is model.ActionStatus.FAILED
    s.time.advance(3600)
    gave_up = s.outcome()
    assert gave_up.decision.verdict is model.Verdict.GAVE_UP and not gave_up.acted
    assert "all 3 attempts" in gave_up.decision.reason
    assert len(s.awx.launches) == 3
    assert [a["attempt"] for a in s.actions()] == [1, 2, 3]

    s.awx.script(outcome="successful", polls=1)
    third = s.push("three")  # a newer image starts over
    fresh = s.outcome()
    assert (
        fresh.action is not None and fresh.action.attempt == 1 and fresh.action.status is model.ActionStatus.SUCCEEDED
    )
    assert fresh.state.deployed is not None and fresh.state.deployed.digest == third
    assert second != third


def test_the_cli_shows_a_failed_action_and_exits_1(scenario: Scenario) -> None:
    s = scenario
    baseline(s)
    s.push("two")
    s.awx.script(outcome="failed", polls=0)
    done = s.cli("reconcile")
    assert done.returncode == 1, done.stderr
    said = [line for line in done.stderr.splitlines() if "job 4242 failed" in line]
    assert len(said) == 1 and "WARNING" in said[0] and "action #1 failed" in said[0], done.stderr  # said once
    assert "Traceback" not in done.stderr
    status = json.loads(s.cli("status", "--json").stdout)["watches"][0]
    assert status["state"] == "failed"
    assert status["last_action"]["status"] == "failed"
    assert status["last_action"]["ref"].startswith(f"{s.awx.base}/#/jobs/playbook/")
    assert "failed" in status["last_action"]["detail"]
    table = s.cli("status").stdout
    assert "failed" in table and "action #1 failed" in table


def _fails_then_recovers(s: Scenario, expected: str, *, token: str = TOKEN, attempt: int = 2) -> None:
    """The first attempt fails with `expected` in its reason; after the back-off the next one succeeds, as
    `attempt` (1 when the failure was an outage that used none up)."""
    baseline(s)
    s.push("two")
    failed = s.outcome(token)
    assert failed.action is not None and failed.action.status is model.ActionStatus.FAILED, failed
    assert expected in (failed.action.detail or ""), failed.action.detail
    assert failed.state.deployed is not None and failed.decision.verdict is model.Verdict.DRIFT
    assert TOKEN not in (failed.action.detail or "") and "\n" not in (failed.action.detail or "")
    s.time.advance(31)
    recovered = s.outcome()
    assert recovered.action is not None and recovered.action.attempt == attempt
    assert recovered.action.status is model.ActionStatus.SUCCEEDED


def test_awx_answering_its_own_500_on_launch_launched_nothing_and_uses_no_attempt(scenario: Scenario) -> None:
    """AWX answers its own errors on /api/ with JSON and rolls the request back (awx/main/views.py handle_500,
    ATOMIC_REQUESTS): nothing was created, so it is an outage, retried without using up an attempt."""
    scenario.awx.fail_next(1, status=500, path_kind="launch")
    _fails_then_recovers(scenario, "AWX production answered 500 while launching job template", attempt=1)
    assert len(scenario.awx.launches) == 1


def test_awx_not_answering_is_retried(tmp_path: Path, registry: LocalRegistry, awx: FakeAwx) -> None:
    s = make_scenario(tmp_path, registry, awx, f"sqlite:///{tmp_path}/r.db")
    reachable = s.path.read_text()
    s.path.write_text(reachable.replace(awx.base, "http://127.0.0.1:9"))
    baseline(s)
    s.push("two")
    failed = s.outcome()
    assert failed.action is not None and failed.action.status is model.ActionStatus.FAILED
    assert "cannot reach AWX production at http://127.0.0.1:9" in (failed.action.detail or "")
    s.path.write_text(reachable)
    s.time.advance(31)
    assert s.outcome().action.status is model.ActionStatus.SUCCEEDED  # type: ignore[union-attr]


def test_a_wrong_token_is_a_clear_failure_without_the_token(scenario: Scenario) -> None:
    _fails_then_recovers(scenario, "AWX production refused the credentials", token="wrong-token-xyz")
    assert all("wrong-token-xyz" not in json.dumps(a, default=str) for a in scenario.actions())


def test_ignored_extra_vars_are_a_failure_that_says_to_prompt_on_launch(
    tmp_path: Path, registry: LocalRegistry, awx: FakeAwx
) -> None:
    template = awx.add_template("Not Prompted", ask_variables_on_launch=False)
    s = make_scenario(tmp_path, registry, awx, f"sqlite:///{tmp_path}/r.db", template="Not Prompted")
    baseline(s)
    s.push("two")
    failed = s.outcome()
    assert failed.action is not None and failed.action.status is model.ActionStatus.FAILED
    assert 'enable "Prompt on launch" for variables' in (failed.action.detail or "")
    # "latest" equals the saved value, so only the others are reported ignored
    assert "ignored the extra vars reconciler_action, stack_digest," in (failed.action.detail or "")
    awx.templates[template]["ask_variables_on_launch"] = True
    s.time.advance(3600)
    assert s.outcome().decision.verdict is model.Verdict.GAVE_UP  # a retry cannot succeed: not retried alone
    application = app.App(s.settings())
    try:
        assert application.retry("staging", now=s.time()) is not None  # the operator fixed AWX and says so
    finally:
        application.close()
    assert s.outcome().action.status is model.ActionStatus.SUCCEEDED  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        pytest.param(
            "Staging Fragalysis Stak",
            "no job template named 'Staging Fragalysis Stak'; closest: 'Staging Fragalysis Stack'",
            id="missing-with-closest",
        ),
        pytest.param("Twice", "2 job templates named 'Twice'", id="ambiguous"),
    ],
)
def test_a_template_name_must_match_exactly_one(
    tmp_path: Path, registry: LocalRegistry, awx: FakeAwx, template: str, message: str
) -> None:
    awx.add_template("Twice", organization="One")
    awx.add_template("Twice", organization="Two")
    s = make_scenario(tmp_path, registry, awx, f"sqlite:///{tmp_path}/r.db", template=template)
    baseline(s)
    s.push("two")
    failed = s.outcome()
    assert failed.action is not None and message in (failed.action.detail or "")
    assert awx.launches == []


def test_a_job_that_outlives_the_timeout_fails_with_its_link(scenario: Scenario) -> None:
    s = scenario
    baseline(s)
    s.push("two")
    s.awx.script(outcome="successful", polls=10_000)
    failed = s.outcome()
    assert failed.action is not None and failed.action.status is model.ActionStatus.FAILED
    assert "ran past the timeout of 0:10:00; canceled" in (failed.action.detail or "")
    job = int(failed.action.external_ref or 0)
    assert s.awx.ui_link(job) in (failed.action.detail or "")
    assert s.awx.jobs[job]["status"] == "canceled", "a retry must never run beside a job still going"
    assert s.awx.count(method="POST", path_prefix=f"/api/v2/jobs/{job}/cancel/") == 1


def test_dry_run_sends_nothing_that_changes_awx(scenario: Scenario) -> None:
    s = scenario
    baseline(s)
    s.push("two")
    done = s.cli("reconcile", "--dry-run", "--json")
    assert done.returncode == 5, done.stderr  # an action would be taken
    action = json.loads(done.stdout)["watches"][0]["action"]
    assert action["status"] == "would_act" and action["request"]["method"] == "POST"
    assert {r.method for r in s.awx.requests} == {"GET"}
    assert s.actions() == []


def _wait_for(proc: subprocess.Popen[str], awx: FakeAwx) -> None:
    if not awx.wait_hanging(timeout=30):
        proc.kill()
        _out, err = proc.communicate()
        pytest.fail(f"the reconcile process never reached the hanging request: {err}")


@pytest.mark.parametrize("moment", ["after-the-launch-post", "after-recording-launched"])
def test_a_process_killed_mid_action_leads_to_exactly_one_job(scenario: Scenario, moment: str) -> None:
    s = scenario
    s.path.write_text(s.path.read_text().replace('poll = "5s"', 'poll = "10ms"'))
    baseline(s)
    second = s.push("two")
    s.awx.clock = lambda: datetime.now(UTC)  # the subprocesses run on the real clock; so must AWX
    if moment == "after-the-launch-post":
        s.awx.hang_next("launch", after_create=True)  # the job exists; the answer never arrives
    else:
        s.awx.hang_next("job")  # the launch was answered and recorded; the first status check hangs
    proc = s.spawn("reconcile")
    _wait_for(proc, s.awx)
    status = json.loads(s.cli("status", "--json").stdout)["watches"][0]
    assert status["state"] == "deploying"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    s.awx.release()
    [left] = s.actions()
    assert left["status"] == ("planned" if moment == "after-the-launch-post" else "launched")
    assert len(s.awx.launches) == 1

    done = s.cli("reconcile", "--json")
    assert done.returncode == 0, done.stderr
    assert len(s.awx.launches) == 1, "the restarted process must find the job, not launch another"
    [finished] = s.actions()
    assert finished["status"] == "succeeded" and finished["digest"] == second
    assert json.loads(s.cli("status", "--json").stdout)["watches"][0]["deployed"]["digest"] == second


@pytest.mark.postgres
def test_two_processes_on_one_postgresql_database_launch_exactly_one_job(
    tmp_path: Path, registry: LocalRegistry, awx: FakeAwx, postgres_db: TestDatabase
) -> None:
    s = make_scenario(tmp_path, registry, awx, postgres_db.url, poll="10ms")
    baseline(s)
    s.push("two")
    awx.clock = lambda: datetime.now(UTC)  # the subprocesses run on the real clock
    awx.hang_next("job")  # whoever acts holds the lease while it waits
    first, second = s.spawn("reconcile"), s.spawn("reconcile")
    _wait_for(first, awx)
    procs = (first, second)
    for _ in range(600):  # until one of them has exited (at most 30 s)
        if any(p.poll() is not None for p in procs):
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            first.wait(timeout=0.05)
    codes = [p.poll() for p in procs]
    assert 4 in codes, codes
    loser = procs[codes.index(4)]
    assert "another instance" in (loser.stderr.read() if loser.stderr else "")
    awx.release()
    winner = procs[1 - codes.index(4)]
    assert winner.wait(timeout=30) == 0
    assert len(awx.launches) == 1
    assert [a["status"] for a in s.actions()] == ["succeeded"]


def test_reconcile_exits_4_and_does_nothing_while_another_instance_holds_the_lease(scenario: Scenario) -> None:
    s = scenario
    baseline(s)
    s.push("two")
    engine = create_engine(s.database)
    with engine.begin() as conn:
        conn.execute(
            insert(tables.leases).values(
                name="actions",
                holder="elsewhere:1:abcd",
                acquired_at=datetime.now(UTC),
                expires_at=datetime.now(UTC) + timedelta(minutes=5),
            )
        )
    engine.dispose()
    done = s.cli("reconcile")
    assert done.returncode == 4
    assert done.stderr.strip() == ("reconciler: another instance (elsewhere:1:abcd) holds the lease; nothing was done")
    assert s.awx.launches == [] and s.actions() == []


def test_a_planned_action_never_launched_is_superseded_and_planned_again(scenario: Scenario) -> None:
    s = scenario
    baseline(s)
    second = s.push("two")
    # what a crash just before the launch POST leaves behind, older than the grace for a launch still in flight
    s.left_planned(digest=second, created_at=s.time() - timedelta(minutes=3))
    outcome = s.outcome()
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.SUCCEEDED
    assert [(a["status"], a["attempt"]) for a in s.actions()] == [("superseded", 1), ("succeeded", 1)]
    assert len(s.awx.launches) == 1


def test_basic_credentials_work_and_every_awx_url_ends_with_a_slash(tmp_path: Path, registry: LocalRegistry) -> None:
    with FakeAwx(token=None, users={"deployer": "basic-secret-pw"}) as fake:
        fake.add_template(STAGING)
        s = make_scenario(tmp_path, registry, fake, f"sqlite:///{tmp_path}/r.db")
        s.path.write_text(
            s.path.read_text().replace(
                'token_env = "TEST_AWX_TOKEN"', 'username_env = "TEST_AWX_USER"\npassword_env = "TEST_AWX_PASSWORD"'
            )
        )
        settings = config.load(s.path, env={"TEST_AWX_USER": "deployer", "TEST_AWX_PASSWORD": "basic-secret-pw"})
        application = app.App(settings)
        s.push("one")
        application.reconcile([], dry_run=False, clock=s.time, sleep=s.time.sleep)
        s.push("two")
        report = application.reconcile([], dry_run=False, clock=s.time, sleep=s.time.sleep)
        application.close()
        assert report.outcomes[0].action.status is model.ActionStatus.SUCCEEDED  # type: ignore[union-attr]
        assert len(fake.launches) == 1
        paths = [r.path.split("?")[0] for r in fake.requests]
        assert paths and all(p.endswith("/") for p in paths), paths  # a 301 would turn the POST into a GET
        assert all(r.headers["authorization"].startswith("Basic ") for r in fake.requests)


@pytest.mark.parametrize(
    ("path_kind", "body", "expected"),
    [
        pytest.param("templates", "<html>proxy error</html>", "sent a malformed answer while looking up", id="html"),
        pytest.param("templates", {"count": 1, "results": "x"}, "sent a malformed list", id="results-not-a-list"),
        pytest.param("templates", '{"count": 1, "resu', "sent a malformed answer", id="truncated"),
        pytest.param("launch", {"ignored_fields": {}}, "answered the launch without a job id", id="launch-no-job-id"),
        pytest.param("launch", '["a", "list"]', "sent a malformed answer while launching", id="launch-a-list"),
    ],
)
def test_malformed_awx_answers_fail_the_attempt_with_a_clear_reason(
    scenario: Scenario, path_kind: str, body: object, expected: str
) -> None:
    s = scenario
    baseline(s)
    s.push("two")
    s.awx.fail_next(1, status=201 if path_kind == "launch" else 200, path_kind=path_kind, body=body)  # type: ignore[arg-type]
    failed = s.outcome()
    assert failed.action is not None and failed.action.status is model.ActionStatus.FAILED
    assert expected in (failed.action.detail or ""), failed.action.detail
    assert "\n" not in (failed.action.detail or "")


def test_a_job_detail_blip_while_waiting_is_not_a_failure(scenario: Scenario) -> None:
    s = scenario
    baseline(s)
    s.push("two")
    s.awx.fail_next(2, status=500, path_kind="job")
    assert s.outcome().action.status is model.ActionStatus.SUCCEEDED  # type: ignore[union-attr]


def test_a_lost_launch_answer_never_adopts_the_job_of_an_earlier_action(scenario: Scenario) -> None:
    """With only `{tag}` in the extra vars, every deployment of `latest` carries the same vars: recovery must not
    take the previous deployment's job for this one."""
    s = scenario
    s.path.write_text(s.path.read_text().replace(', stack_digest = "{digest}"', ""))
    baseline(s)
    s.push("two")
    assert s.outcome().action.status is model.ActionStatus.SUCCEEDED  # type: ignore[union-attr]
    third = s.push("three")
    s.awx.fail_next(1, status=502, path_kind="launch")  # a proxy: nothing reached AWX
    failed = s.outcome()
    assert failed.action is not None and failed.action.status is model.ActionStatus.FAILED, failed.action
    assert "nothing was launched" in (failed.action.detail or "")
    assert failed.state.deployed is not None and failed.state.deployed.digest != third
    s.time.advance(31)
    retried = s.outcome()
    assert retried.action is not None and retried.action.status is model.ActionStatus.SUCCEEDED
    assert len(s.awx.launches) == 2 and retried.state.deployed.digest == third  # type: ignore[union-attr]


def test_an_illegible_launch_answer_is_looked_for_then_failed_and_retried(scenario: Scenario) -> None:
    s = scenario
    baseline(s)
    second = s.push("two")
    s.awx.fail_next(1, status=200, path_kind="launch", body="")  # AWX answered, but with nothing legible
    first = s.outcome()
    assert first.action is not None and first.action.status is model.ActionStatus.FAILED
    assert "malformed answer while launching" in (first.action.detail or "")
    s.time.advance(31)
    assert s.outcome().action.status is model.ActionStatus.SUCCEEDED  # type: ignore[union-attr]
    assert len(s.awx.launches) == 1
    assert json.loads(s.cli("status", "--json").stdout)["watches"][0]["deployed"]["digest"] == second


def test_a_recent_planned_action_with_no_job_yet_is_looked_for_until_the_grace_then_planned_again(
    scenario: Scenario,
) -> None:
    """A launch whose answer never came may still be acted on by AWX: it is looked for until two minutes after
    it was planned, never replaced before; then it is superseded and planned again."""
    s = scenario
    baseline(s)
    second = s.push("two")
    planned_at = s.time() - timedelta(seconds=20)
    s.left_planned(digest=second, created_at=planned_at)
    done = s.outcome()
    assert done.action is not None and done.action.status is model.ActionStatus.SUCCEEDED
    assert [a["status"] for a in s.actions()] == ["superseded", "succeeded"] and len(s.awx.launches) == 1
    assert s.actions()[1]["created_at"] >= planned_at + timedelta(minutes=2)  # not replaced before the grace
    assert s.awx.count(method="GET", path_prefix="/api/v2/jobs/?") >= 2  # looked again while waiting

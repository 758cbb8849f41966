"""AWX as it really behaves (the fake checked against AWX 24.6.1's source), and exactly once all the
same: the marker on every launch, gateways that answer 502/503/504 while AWX goes on, look-alike jobs launched by
hand, ignored variables, cancels that take effect later, workflows and sliced templates, odd records, outages
that are not failed deployments, and the ways a person steers a watch that gave up (`retry`, a changed action).
The real registry and database, the fake AWX over real HTTP, a fake clock whose sleeps move time on instantly."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler import model
from tests.fakes.awx import FakeAwx
from tests.support.awx_scenario import PRODUCTION, STAGING, Scenario, baseline, make_scenario
from tests.support.daemon import wait_until
from tests.support.registry import LocalRegistry


def _template_id(awx: FakeAwx, name: str) -> int:
    return next(t["id"] for t in awx.templates.values() if t["name"] == name)


def _edit(s: Scenario, old: str, new: str) -> None:
    text = s.path.read_text()
    assert old in text, old
    s.path.write_text(text.replace(old, new))


def _vars(s: Scenario, digest: str) -> dict[str, str]:
    return {"stack_image_tag": "latest", "stack_digest": digest}


# --- the marker -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("setting", "key"), [("", "reconciler_action"), ('marker = "deployed_by"', "deployed_by")])
def test_every_launch_carries_a_marker_naming_its_action(scenario: Scenario, setting: str, key: str) -> None:
    s = scenario
    _edit(s, 'timeout = "10m"', f'timeout = "10m"\n{setting}')
    baseline(s)
    s.push("two")
    done = s.outcome()
    assert done.action is not None and done.action.status is model.ActionStatus.SUCCEEDED
    assert s.awx.launches[0][1][key] == f"staging#{done.action.id}"


def test_the_marker_can_be_switched_off(scenario: Scenario) -> None:
    s = scenario
    _edit(s, 'timeout = "10m"', 'timeout = "10m"\nmarker = ""')
    baseline(s)
    second = s.push("two")
    assert s.outcome().action.status is model.ActionStatus.SUCCEEDED  # type: ignore[union-attr]
    assert s.awx.launches == [(_template_id(s.awx, STAGING), _vars(s, second))]


def test_a_lost_answer_adopts_our_own_job_never_a_look_alike_launched_just_after(scenario: Scenario) -> None:
    s = scenario
    baseline(s)
    second = s.push("two")
    s.time.advance(5)  # an operator launches the same template with the same vars by hand, just after ours
    look_alike = s.awx.launch_by_hand(_template_id(s.awx, STAGING), _vars(s, second))
    s.time.advance(-5)
    s.awx.gateway_error_next(504, creates=True)  # the gateway gave up; AWX created our job all the same
    done = s.outcome()
    assert done.action is not None and done.action.status is model.ActionStatus.SUCCEEDED, done.action
    ours = int(done.action.external_ref or 0)
    assert ours != look_alike and s.awx.jobs[ours]["extra_vars"].count("staging#1") == 1
    assert s.awx.count(method="POST", path_prefix="/api/v2/job_templates/") == 1  # never launched again


def test_a_lost_answer_never_adopts_a_look_alike_launched_just_before(scenario: Scenario) -> None:
    s = scenario
    baseline(s)
    second = s.push("two")
    s.time.advance(-5)
    look_alike = s.awx.launch_by_hand(_template_id(s.awx, STAGING), _vars(s, second))
    s.time.advance(5)
    s.awx.gateway_error_next(502, creates=False)  # nothing reached AWX behind the gateway
    failed = s.outcome()
    assert failed.action is not None and failed.action.status is model.ActionStatus.FAILED, failed.action
    assert failed.action.external_ref is None and failed.action.failure is model.Failure.OUTAGE
    assert "nothing was launched" in (failed.action.detail or "")
    s.time.advance(31)
    retried = s.outcome()
    assert retried.action is not None and retried.action.status is model.ActionStatus.SUCCEEDED
    assert int(retried.action.external_ref or 0) != look_alike and retried.action.attempt == 1


# --- gateways -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [502, 503, 504])
def test_a_gateway_error_while_awx_creates_the_job_later_is_looked_for_never_relaunched(
    scenario: Scenario, status: int
) -> None:
    s = scenario
    baseline(s)
    s.push("two")
    s.awx.gateway_error_next(status, creates=True, after_requests=3)  # the job appears a few requests later
    done = s.outcome()
    assert done.action is not None and done.action.status is model.ActionStatus.SUCCEEDED, done.action
    assert len(s.awx.jobs) == 1 and s.awx.count(method="POST", path_prefix="/api/v2/job_templates/") == 1


def test_a_gateway_error_with_no_job_is_not_relaunched_before_the_grace(scenario: Scenario) -> None:
    s = scenario
    baseline(s)
    s.push("two")
    planned_at = s.time()
    s.awx.gateway_error_next(504, creates=False)
    failed = s.outcome()
    assert failed.action is not None and failed.action.status is model.ActionStatus.FAILED
    assert failed.action.finished_at is not None and failed.action.finished_at - planned_at >= timedelta(minutes=2)
    assert s.awx.count(method="POST", path_prefix="/api/v2/job_templates/") == 1 and s.awx.jobs == {}


# --- ignored variables ----------------------------------------------------------------------------------------


def test_a_job_started_with_ignored_vars_is_canceled_at_once_and_not_retried_until_the_action_changes(
    tmp_path: Path, registry: LocalRegistry, awx: FakeAwx
) -> None:
    awx.add_template("Not Prompted", ask_variables_on_launch=False)
    s = make_scenario(tmp_path, registry, awx, f"sqlite:///{tmp_path}/r.db", template="Not Prompted")
    baseline(s)
    s.push("two")
    failed = s.outcome()
    assert failed.action is not None and failed.action.status is model.ActionStatus.FAILED
    job = int(failed.action.external_ref or 0)
    assert job in awx.jobs and awx.jobs[job]["status"] == "canceled"  # it ran with the saved vars: stopped
    assert awx.count(method="POST", path_prefix=f"/api/v2/jobs/{job}/cancel/") == 1
    assert failed.action.failure is model.Failure.REFUSED and 'enable "Prompt on launch"' in (
        failed.action.detail or ""
    )
    s.time.advance(24 * 3600)
    held = s.outcome()
    assert held.decision.verdict is model.Verdict.GAVE_UP and "until the watch's action changes" in held.decision.reason
    assert len(awx.launches) == 1
    _edit(s, 'template = "Not Prompted"', f'template = "{STAGING}"')  # the operator points it at a prompting one
    fixed = s.outcome()
    assert fixed.action is not None and fixed.action.status is model.ActionStatus.SUCCEEDED
    assert fixed.action.attempt == 1 and len(awx.launches) == 2


# --- cancels ----------------------------------------------------------------------------------------------------


def test_a_timed_out_job_keeps_its_action_open_until_the_cancel_took_effect(scenario: Scenario) -> None:
    s = scenario
    baseline(s)
    s.push("two")
    s.awx.script(outcome="successful", polls=10**6)
    s.awx.cancel_delay = None  # the dispatcher has not acted on the cancel yet
    first = s.outcome()
    assert first.action is not None and first.action.status is model.ActionStatus.LAUNCHED, first.action
    assert "after its cancel was requested" in (first.action.detail or "")
    job = int(first.action.external_ref or 0)
    assert s.awx.count(method="POST", path_prefix=f"/api/v2/jobs/{job}/cancel/") >= 1
    s.time.advance(3600)
    still = s.outcome()
    assert still.action is not None and still.action.status is model.ActionStatus.LAUNCHED
    assert still.decision.verdict is model.Verdict.BUSY and len(s.awx.launches) == 1  # nothing beside it
    s.awx.set_job_status(job, "canceled")
    ended = s.outcome()
    assert ended.action is not None and ended.action.status is model.ActionStatus.FAILED
    assert len(s.awx.launches) == 1
    s.awx.script(outcome="successful", polls=1)
    s.time.advance(31)
    assert s.outcome().action.status is model.ActionStatus.SUCCEEDED  # type: ignore[union-attr]
    assert len(s.awx.launches) == 2


# --- workflows ------------------------------------------------------------------------------------------------


def test_a_workflow_job_template_is_launched_and_its_workflow_job_followed(scenario: Scenario) -> None:
    s = scenario
    workflow = s.awx.add_workflow_template("Deploy Stack", ask_variables_on_launch=True)
    _edit(s, f'template = "{STAGING}"', 'workflow_template = "Deploy Stack"')
    baseline(s)
    s.push("two")
    done = s.outcome()
    assert done.action is not None and done.action.status is model.ActionStatus.SUCCEEDED, done.action
    assert done.action.external_ref is not None and done.action.external_ref.startswith("workflow_job:")
    run = int(done.action.external_ref.removeprefix("workflow_job:"))
    assert done.action.link == f"{s.awx.base}/#/jobs/workflow/{run}"
    assert [t for t, _ in s.awx.workflow_launches] == [workflow] and s.awx.launches == []
    assert s.awx.count(method="GET", path_prefix=f"/api/v2/workflow_jobs/{run}/") >= 1


def test_a_sliced_job_template_answering_workflow_job_is_followed_there(scenario: Scenario) -> None:
    s = scenario
    s.awx.add_template("Sliced", job_slice_count=2)
    _edit(s, f'template = "{STAGING}"', 'template = "Sliced"')
    baseline(s)
    s.push("two")
    done = s.outcome()
    assert done.action is not None and done.action.status is model.ActionStatus.SUCCEEDED, done.action
    assert (done.action.external_ref or "").startswith("workflow_job:")


def test_a_lost_answer_of_a_sliced_template_adopts_its_workflow_job(scenario: Scenario) -> None:
    s = scenario
    s.awx.add_template("Sliced", job_slice_count=2)
    _edit(s, f'template = "{STAGING}"', 'template = "Sliced"')
    baseline(s)
    s.push("two")
    s.awx.gateway_error_next(504, creates=True)
    done = s.outcome()
    assert done.action is not None and done.action.status is model.ActionStatus.SUCCEEDED, done.action
    assert (done.action.external_ref or "").startswith("workflow_job:")
    assert s.awx.count(method="POST", path_prefix="/api/v2/job_templates/") == 1


# --- bounded and isolated -------------------------------------------------------------------------------------


def test_a_list_whose_next_link_repeats_forever_is_read_once(scenario: Scenario) -> None:
    s = scenario
    baseline(s)
    second = s.push("two")
    s.awx.launch_by_hand(_template_id(s.awx, PRODUCTION), _vars(s, second))  # something in the list
    s.awx.repeat_next_link("jobs")
    s.awx.gateway_error_next(504, creates=False)
    outcomes: list[model.WatchOutcome] = []
    worker = threading.Thread(target=lambda: outcomes.append(s.outcome()), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert outcomes, "the pass never ended: paging followed the same next link forever"
    assert outcomes[0].action is not None and outcomes[0].action.status is model.ActionStatus.FAILED


def test_an_odd_job_record_fails_no_pass_and_no_other_recovery(scenario: Scenario) -> None:
    s = scenario
    text = s.path.read_text()
    block = text[text.index("[[watch]]") :]
    s.path.write_text(text + "\n" + block.replace('name = "staging"', 'name = "staging-2"'))
    baseline(s)
    s.push("two")
    s.awx.script(outcome="successful", polls=10**6)
    proc = s.spawn("reconcile")  # killed while both wait: both actions are left launched
    wait_until("both launches", lambda: [a["status"] for a in s.actions()] == ["launched", "launched"])
    proc.kill()
    proc.wait()
    odd, plain = (int(a["external_ref"]) for a in s.actions())
    for job in (odd, plain):
        s.awx.set_job_status(job, "successful")
    s.awx.corrupt("job", odd, elapsed=10**330)  # 331 digits: no float holds it
    s.awx.broken_body_next("job")  # and one illegible answer while following them
    report = s.reconcile()
    assert [a["status"] for a in s.actions()] == ["succeeded", "succeeded"], [a["detail"] for a in s.actions()]
    assert all(o.decision.verdict is model.Verdict.IN_SYNC for o in report.outcomes)
    assert len(s.awx.launches) == 2


# --- outages, retry, a changed action -------------------------------------------------------------------------


def test_an_awx_outage_backs_off_without_using_up_attempts(scenario: Scenario) -> None:
    s = scenario
    reachable = s.path.read_text()
    baseline(s)
    s.push("two")
    s.path.write_text(reachable.replace(s.awx.base, "http://127.0.0.1:9"))  # nothing listens there
    waits = []
    for _ in range(5):  # more than max_attempts (3)
        outcome = s.outcome()
        action = outcome.action
        assert outcome.decision.verdict is not model.Verdict.GAVE_UP, outcome.decision
        assert action is not None and action.failure is model.Failure.OUTAGE and action.attempt == 1
        assert action.next_attempt_at is not None and action.finished_at is not None
        waits.append(action.next_attempt_at - action.finished_at)
        s.time.now = action.next_attempt_at
    assert waits == sorted(waits) and waits[-1] > waits[0]  # the back-off grows
    s.path.write_text(reachable)
    done = s.outcome()
    assert done.action is not None and done.action.status is model.ActionStatus.SUCCEEDED
    assert done.action.attempt == 1


def _give_up(s: Scenario) -> None:
    baseline(s)
    s.push("two")
    s.awx.script(outcome="failed", polls=1)
    for _ in range(3):
        s.outcome()
        s.time.advance(3600)
    assert s.outcome().decision.verdict is model.Verdict.GAVE_UP


def test_reconciler_retry_clears_gave_up(scenario: Scenario) -> None:
    s = scenario
    _give_up(s)
    s.awx.script(outcome="successful", polls=1)
    result = s.cli("retry", "staging")
    assert result.returncode == 0 and "acts again" in result.stdout, result.stderr
    done = s.outcome()
    assert done.action is not None and done.action.status is model.ActionStatus.SUCCEEDED
    assert done.action.attempt == 1
    assert s.cli("retry", "nope").returncode == 2


def test_status_tells_an_outage_from_a_failed_deployment(scenario: Scenario) -> None:
    s = scenario
    reachable = s.path.read_text()
    baseline(s)
    s.push("two")
    s.path.write_text(reachable.replace(s.awx.base, "http://127.0.0.1:9"))
    s.outcome()
    result = s.cli("status", "--json")
    s.path.write_text(reachable)
    action = json.loads(result.stdout)["watches"][0]["last_action"]
    assert action["status"] == "failed" and action["failure"] == "outage" and action["attempt"] == 1


def test_a_changed_action_clears_gave_up(scenario: Scenario) -> None:
    s = scenario
    _give_up(s)
    s.awx.script(outcome="successful", polls=1)
    _edit(s, 'stack_digest = "{digest}"', 'stack_digest = "{digest}", verbose = true')
    done = s.outcome()
    assert done.action is not None and done.action.status is model.ActionStatus.SUCCEEDED
    assert done.action.attempt == 1


# --- found in review ---------------------------------------------------------------------------------------------


def test_a_lost_launch_that_cannot_be_looked_for_stays_open_and_is_never_relaunched(scenario: Scenario) -> None:
    """Only a look that worked can say a launch never happened: while AWX cannot list jobs, it stays open."""
    s = scenario
    baseline(s)
    s.push("two")
    s.awx.gateway_error_next(504, creates=True)  # our job exists...
    s.awx.fail_next(10_000, 500, "jobs")  # ...but no list of jobs can be read
    s.awx.fail_next(10_000, 500, "workflow_jobs")
    for _ in range(3):
        outcome = s.outcome()
        assert outcome.action is not None and outcome.action.status is model.ActionStatus.PLANNED, outcome.action
        s.time.advance(600)
    assert s.awx.count(method="POST", path_prefix="/api/v2/job_templates/") == 1 and len(s.awx.jobs) == 1
    assert outcome.decision.verdict is model.Verdict.BUSY


def test_nothing_is_launched_beside_an_action_still_open_even_for_a_newer_image(scenario: Scenario) -> None:
    s = scenario
    baseline(s)
    s.push("two")
    s.awx.script(outcome="successful", polls=10**6)
    s.awx.cancel_delay = None  # its cancel never takes effect by itself
    assert s.outcome().action.status is model.ActionStatus.LAUNCHED  # type: ignore[union-attr]
    s.push("three")
    s.time.advance(3600)
    held = s.outcome()
    assert held.decision.verdict is model.Verdict.BUSY and "waits for it" in held.decision.reason
    assert len(s.awx.launches) == 1


def test_an_awx_outage_during_the_template_lookup_uses_no_attempt(scenario: Scenario) -> None:
    s = scenario
    baseline(s)
    s.push("two")
    s.awx.fail_next(10_000, 500, "templates")  # AWX's own 500 on every read of the templates
    for _ in range(5):
        outcome = s.outcome()
        assert outcome.decision.verdict is not model.Verdict.GAVE_UP
        assert outcome.action is not None and outcome.action.failure is model.Failure.OUTAGE
        assert outcome.action.attempt == 1
        assert outcome.action.next_attempt_at is not None
        s.time.now = outcome.action.next_attempt_at


def test_a_job_that_cannot_be_read_hands_over_to_a_later_pass(scenario: Scenario) -> None:
    """A token rotated, a job deleted, AWX answering 404: the wait must end, leaving the action open."""
    s = scenario
    baseline(s)
    s.push("two")
    s.awx.script(outcome="successful", polls=10**6)
    s.awx.fail_next(10**6, 404, "job")  # every read of the job, once launched
    outcomes: list[model.WatchOutcome] = []
    worker = threading.Thread(target=lambda: outcomes.append(s.outcome()), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert outcomes, "the wait never ended"
    action = outcomes[0].action
    assert action is not None and action.status is model.ActionStatus.LAUNCHED
    assert "could not be read" in (action.detail or "") and len(s.awx.launches) == 1


def test_an_open_action_of_a_watch_another_configuration_owns_is_left_alone(scenario: Scenario) -> None:
    s = scenario
    baseline(s)
    s.push("two")
    s.awx.script(outcome="successful", polls=10**6)
    s.awx.cancel_delay = None
    assert s.outcome().action.status is model.ActionStatus.LAUNCHED  # type: ignore[union-attr]
    text = s.path.read_text()
    other = s.path.with_name("other.toml")
    other.write_text(text.replace('name = "staging"', 'name = "frontend"'))  # a configuration without it
    assert s.cli("--config", str(other), "reconcile").returncode in (0, 1)
    assert s.actions()[0]["status"] == "launched"

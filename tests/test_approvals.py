"""Approvals end to end: a watch with `approve = true` records its action awaiting approval, with the exact request,
and launches it only once a person approves it through the real CLI — exactly once; a rejected digest is not
offered again; a newer digest supersedes a waiting one. On the real registry, the fake AWX, SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from reconciler import app, errors, model
from reconciler.store import approvals, outbox
from tests.fakes.awx import FakeAwx
from tests.support.awx_scenario import STAGING, Scenario, baseline, make_scenario
from tests.support.daemon import wait_until
from tests.support.databases import TestDatabase
from tests.support.receiver import Receiver
from tests.support.registry import LocalRegistry


@pytest.fixture
def gated(tmp_path: Path, registry: LocalRegistry, awx: FakeAwx) -> Scenario:
    return make_scenario(tmp_path, registry, awx, f"sqlite:///{tmp_path}/reconciler.db", approve=True)


def waiting_for(s: Scenario) -> str:
    """A baseline, then a second digest pushed and recorded waiting for approval: that digest."""
    baseline(s)
    second = s.push("two")
    assert s.outcome().action.status is model.ActionStatus.AWAITING_APPROVAL  # type: ignore[union-attr]
    return second


def _staging(awx: FakeAwx) -> int:
    return next(t["id"] for t in awx.templates.values() if t["name"] == STAGING)


def _status(s: Scenario) -> dict[str, object]:
    done = s.cli("status", "--json")
    assert done.returncode == 0, done.stderr
    [watch] = json.loads(done.stdout)["watches"]
    return watch  # type: ignore[no-any-return]


def test_drift_waits_for_approval_with_the_exact_request_then_launches_once_approved(
    tmp_path: Path, registry: LocalRegistry, awx: FakeAwx, db: TestDatabase
) -> None:
    s = make_scenario(tmp_path, registry, awx, db.url, approve=True)
    baseline(s)
    second = s.push("two")
    outcome = s.outcome()
    assert outcome.decision.verdict is model.Verdict.DRIFT and "needs approval" in outcome.decision.reason
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.AWAITING_APPROVAL
    assert awx.launches == []
    [row] = s.actions()
    assert (row["status"], row["approval"], row["digest"], row["decided_by"]) == (
        "awaiting_approval",
        "waiting",
        second,
        None,
    )
    recorded = json.loads(row["request"])
    assert recorded["body"]["extra_vars"] == {
        "stack_image_tag": "latest",
        "stack_digest": second,
        "reconciler_action": f"staging#{row['id']}",
    }
    watch = _status(s)
    assert watch["state"] == "awaiting_approval"
    assert watch["approval"] == {"state": "waiting", "by": None, "at": None}

    for _ in range(2):  # passes go on; nothing is launched while it waits
        s.time.advance(60)
        waiting = s.outcome()
        assert waiting.decision.verdict is model.Verdict.AWAITING_APPROVAL, waiting.decision
        assert f"reconciler approve staging --digest {second[7:19]}" in waiting.decision.reason
    assert awx.launches == [] and len(s.actions()) == 1

    done = s.cli("approve", "staging", "--by", "alice")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"watch staging: action #{row['id']} (latest {second}) approved by alice")
    assert awx.launches == []  # approving launches nothing by itself: the holder of the lease does

    approved = s.outcome()
    assert approved.action is not None and approved.action.status is model.ActionStatus.SUCCEEDED
    assert awx.launches == [(_staging(awx), recorded["body"]["extra_vars"])]  # the request approved, exactly
    assert approved.state.deployed is not None and approved.state.deployed.digest == second
    assert s.outcome().decision.verdict is model.Verdict.IN_SYNC
    assert len(awx.launches) == 1
    [row] = s.actions()
    assert (row["status"], row["approval"], row["decided_by"]) == ("succeeded", "approved", "alice")
    assert _status(s)["approval"]["state"] == "approved"  # type: ignore[index]

    again = s.cli("approve", "staging", "--digest", second)
    assert again.returncode == 1
    assert again.stderr.strip().count("\n") == 0
    assert "does not wait for approval: it is succeeded, approved by alice" in again.stderr
    assert len(s.actions()) == 1 and len(awx.launches) == 1


def test_a_rejected_digest_is_not_offered_again_and_the_next_one_is(gated: Scenario) -> None:
    s = gated
    second = waiting_for(s)
    done = s.cli("reject", "staging", "--digest", second[:19], "--by", "bob", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["action"]["status"] == "rejected"
    assert document["action"]["approval"]["state"] == "rejected" and document["action"]["approval"]["by"] == "bob"
    for _ in range(3):
        s.time.advance(3600)
        outcome = s.outcome()
        assert outcome.decision.verdict is model.Verdict.REJECTED, outcome.decision
        assert "rejected by bob" in outcome.decision.reason
    assert s.awx.launches == []
    assert [a["status"] for a in s.actions()] == ["rejected"]
    assert _status(s)["state"] == "drifted"

    third = s.push("three")
    assert s.outcome().action.status is model.ActionStatus.AWAITING_APPROVAL  # type: ignore[union-attr]
    assert s.cli("approve", "staging", "--by", "carol").returncode == 0
    assert s.outcome().action.status is model.ActionStatus.SUCCEEDED  # type: ignore[union-attr]
    assert [extra["stack_digest"] for _, extra in s.awx.launches] == [third]

    history = s.cli("history", "--json")
    assert history.returncode == 0, history.stderr
    decided = {
        e["action"]["digest"]: e["action"]["approval"]
        for e in json.loads(history.stdout)["events"]
        if e["type"] == "action"
    }
    assert decided[second]["state"] == "rejected" and decided[second]["by"] == "bob"
    assert decided[third]["state"] == "approved" and decided[third]["by"] == "carol"


def test_retry_offers_a_rejected_digest_again(gated: Scenario) -> None:
    s = gated
    waiting_for(s)
    assert s.cli("reject", "staging").returncode == 0
    assert s.outcome().decision.verdict is model.Verdict.REJECTED
    done = s.cli("retry", "staging")
    assert done.returncode == 0 and "offers it for approval again" in done.stdout
    assert s.outcome().action.status is model.ActionStatus.AWAITING_APPROVAL  # type: ignore[union-attr]
    assert s.awx.launches == []


def test_a_newer_digest_supersedes_a_waiting_approval(gated: Scenario) -> None:
    s = gated
    second = waiting_for(s)
    third = s.push("three")
    outcome = s.outcome()
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.AWAITING_APPROVAL
    assert outcome.action.digest == third
    old, new = s.actions()
    assert (old["status"], old["digest"]) == ("superseded", second)
    assert "withdrawn before it was launched" in old["detail"] and "is observed now" in old["detail"]
    assert (new["status"], new["digest"]) == ("awaiting_approval", third)

    late = s.cli("approve", "staging", "--digest", second)
    assert late.returncode == 1
    assert "does not wait for approval: it is superseded" in late.stderr
    assert [a["status"] for a in s.actions()] == ["superseded", "awaiting_approval"]  # nothing changed
    assert s.awx.launches == []


def test_a_newer_digest_supersedes_an_approval_not_yet_acted_on(gated: Scenario) -> None:
    s = gated
    waiting_for(s)
    assert s.cli("approve", "staging").returncode == 0
    third = s.push("three")  # before any pass released the approved one
    outcome = s.outcome()
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.AWAITING_APPROVAL
    assert outcome.action.digest == third and outcome.action.approval is model.Approval.WAITING
    assert s.awx.launches == []


def test_a_retry_of_an_approved_digest_needs_no_new_approval(gated: Scenario) -> None:
    s = gated
    second = waiting_for(s)
    assert s.cli("approve", "staging", "--by", "alice").returncode == 0
    s.awx.script(outcome="failed", count=1)
    failed = s.outcome()
    assert failed.action is not None and failed.action.status is model.ActionStatus.FAILED
    assert failed.action.next_attempt_at is not None
    s.time.now = failed.action.next_attempt_at
    retried = s.outcome()
    assert retried.action is not None and retried.action.status is model.ActionStatus.SUCCEEDED
    assert retried.action.attempt == 2 and retried.action.decided_by == "alice"
    assert retried.action.released_at is not None  # planned under an approval: a crash before launching carries it
    assert [extra["stack_digest"] for _, extra in s.awx.launches] == [second, second]


def test_deciding_names_one_watch_and_one_digest(gated: Scenario) -> None:
    s = gated
    nothing = s.cli("approve", "staging")
    assert nothing.returncode == 1 and "nothing of watch staging waits for approval" in nothing.stderr
    early = s.cli("approve", "staging", "--digest", "latest")  # malformed: a usage error with or without a database
    assert early.returncode == 2 and "--digest: expected a digest" in early.stderr
    second = waiting_for(s)
    unknown = s.cli("approve", "staging", "--digest", "sha256:" + "f" * 64)
    assert unknown.returncode == 1 and "does not wait for approval" not in unknown.stdout
    assert "has no action" in unknown.stderr
    malformed = s.cli("approve", "staging", "--digest", "latest")
    assert malformed.returncode == 2 and "--digest: expected a digest" in malformed.stderr
    no_watch = s.cli("approve", "nosuch")
    assert no_watch.returncode == 2 and "nosuch" in no_watch.stderr
    for bad in (unknown, malformed, no_watch):
        assert "Traceback" not in bad.stderr and bad.stderr.strip().count("\n") == 0
    assert [(a["status"], a["approval"]) for a in s.actions()] == [("awaiting_approval", "waiting")]
    assert s.cli("approve", "staging", "--digest", second[7:19]).returncode == 0


def test_dry_run_says_the_action_needs_approval_and_records_nothing(gated: Scenario) -> None:
    s = gated
    baseline(s)
    s.push("two")
    done = s.cli("reconcile", "--dry-run")
    assert done.returncode == 5, done.stderr
    assert "needs approval" in done.stdout
    as_json = s.cli("reconcile", "--dry-run", "--json")
    [watch] = json.loads(as_json.stdout)["watches"]
    assert watch["decision"]["verdict"] == "drift" and "needs approval" in watch["decision"]["reason"]
    assert s.actions() == []


def test_an_approved_action_is_released_once(tmp_path: Path, registry: LocalRegistry, awx: FakeAwx) -> None:
    s = make_scenario(tmp_path, registry, awx, f"sqlite:///{tmp_path}/r.db", approve=True)
    waiting_for(s)
    assert s.cli("approve", "staging").returncode == 0
    [row] = s.actions()
    engine = create_engine(s.database)
    try:
        box = outbox.Outbox(engine)
        first, second = box.release(row["id"], s.time()), box.release(row["id"], s.time())
    finally:
        engine.dispose()
    assert first is not None and first.status is model.ActionStatus.PLANNED
    assert second is None


def test_sigkill_right_after_an_approval_launches_exactly_once(gated: Scenario) -> None:
    s = gated
    waiting_for(s)
    assert s.cli("approve", "staging").returncode == 0
    s.awx.clock = lambda: datetime.now(UTC)  # the process killed plans by the real clock: so does AWX
    s.awx.hang_next("launch", after_create=True)  # AWX creates the job; its answer never comes
    proc = s.spawn("reconcile")
    assert s.awx.wait_hanging(timeout=30)
    proc.kill()  # SIGKILL between the launch and recording it: the row is left planned
    proc.wait()
    s.awx.release()
    assert [a["status"] for a in s.actions()] == ["planned"]
    wait_until("the job AWX created", lambda: len(s.awx.jobs) == 1)
    s.time.now = datetime.now(UTC)
    s.reconcile()  # resumes: finds the job by its marker, never launches again
    assert [(a["status"], a["decided_by"] is not None) for a in s.actions()] == [("succeeded", True)]
    assert len(s.awx.launches) == 1


def test_a_waiting_action_is_withdrawn_when_the_deployed_digest_is_observed_again(gated: Scenario) -> None:
    s = gated
    first = baseline(s)
    second = s.push("two")
    s.outcome()
    assert s.cli("approve", "staging").returncode == 0  # approved, but not yet acted on
    assert s.push("one") == first  # the tag goes back to what is deployed
    back = s.outcome()
    assert back.decision.verdict is model.Verdict.IN_SYNC
    assert back.action is not None and back.action.status is model.ActionStatus.SUPERSEDED
    assert "deployed digest is observed again" in (back.action.detail or "")
    watch = _status(s)
    assert watch["state"] == "in_sync" and watch["approval"]["state"] == "approved"  # type: ignore[index]

    assert s.push("two") == second  # and comes back: its old approval does not launch it
    again = s.outcome()
    assert again.action is not None and again.action.status is model.ActionStatus.AWAITING_APPROVAL
    assert s.awx.launches == []


def test_a_rejected_digest_is_not_offered_again_even_after_another_one(gated: Scenario) -> None:
    s = gated
    second = waiting_for(s)
    assert s.cli("reject", "staging").returncode == 0
    s.push("three")
    assert s.outcome().action.status is model.ActionStatus.AWAITING_APPROVAL  # type: ignore[union-attr]
    assert s.push("two") == second  # the rejected digest comes back
    outcome = s.outcome()
    assert outcome.decision.verdict is model.Verdict.REJECTED, outcome.decision
    statuses = [(a["status"], a["detail"]) for a in s.actions()]
    assert statuses[0][0] == "rejected"  # three, no longer observed, is withdrawn: it waits for nothing
    assert statuses[1][0] == "superseded" and "is observed now" in statuses[1][1]
    assert len(statuses) == 2 and s.awx.launches == []
    assert _status(s)["state"] == "drifted"
    assert s.outcome().decision.verdict is model.Verdict.REJECTED  # and stays so, exit 0, nothing stuck


def test_retry_offers_every_rejected_digest_again(gated: Scenario) -> None:
    s = gated
    second = waiting_for(s)
    assert s.cli("reject", "staging").returncode == 0
    s.push("three")
    s.outcome()  # three waits: the newest action is not the rejection
    done = s.cli("retry", "staging")
    assert done.returncode == 0 and "offers it for approval again" in done.stdout, done.stdout
    assert s.push("two") == second
    again = s.outcome()
    assert again.action is not None and again.action.status is model.ActionStatus.AWAITING_APPROVAL
    assert again.action.digest == second


def test_a_lost_launch_answer_after_a_late_approval_is_looked_for_not_launched_again(gated: Scenario) -> None:
    s = gated
    waiting_for(s)
    s.time.advance(3600)  # approved an hour after it was recorded: its lookups count from its release
    assert s.cli("approve", "staging").returncode == 0
    s.awx.gateway_error_next(504, creates=True, after_requests=3)  # AWX creates the job a little later
    done = s.outcome()
    assert done.action is not None and done.action.status is model.ActionStatus.SUCCEEDED, done.action
    s.time.advance(3600)
    s.outcome()
    assert len(s.awx.jobs) == 1


def test_an_approval_not_yet_acted_on_can_still_be_rejected(gated: Scenario) -> None:
    s = gated
    waiting_for(s)
    assert s.cli("approve", "staging", "--by", "alice").returncode == 0
    done = s.cli("reject", "staging", "--by", "bob")
    assert done.returncode == 0, done.stderr
    assert s.outcome().decision.verdict is model.Verdict.REJECTED
    assert s.awx.launches == []
    [row] = s.actions()
    assert (row["status"], row["approval"], row["decided_by"]) == ("rejected", "rejected", "bob")
    approve = s.cli("approve", "staging")
    assert approve.returncode == 1 and "rejected by bob" in approve.stderr


def test_an_approval_names_the_action_it_was_shown(gated: Scenario) -> None:
    s = gated
    waiting_for(s)
    [row] = s.actions()
    application = app.App(s.settings())
    try:
        with pytest.raises(errors.NotWaiting, match="not wait for approval|no longer waits"):
            application.decide("staging", None, approve=True, by="alice", now=s.time(), action_id=row["id"] + 1)
        decided = application.decide("staging", None, approve=True, by="alice", now=s.time(), action_id=row["id"])
    finally:
        application.close()
    assert decided.approved and decided.id == row["id"]


@pytest.mark.parametrize(
    "by",
    [
        "",
        "   ",
        "a\nb",
        "a\u2028b",
        "a\x85b",
        "\u202eevil",
        "\u200b",
        "\u3164",
        "\u2800",
        "\u034f\u034f",
        "a\ue000",
        "a\udcff",
        "x" * 201,
    ],
)
def test_the_name_recorded_is_one_visible_line(by: str) -> None:
    with pytest.raises(errors.ConfigError, match="--by: expected a name of 1 to 200 visible characters"):
        approvals.checked_name(by)


def test_a_name_that_is_not_one_line_is_refused_before_the_database_is_read(gated: Scenario) -> None:
    done = gated.cli("approve", "staging", "--by", "alice\nroot")
    assert done.returncode == 2 and "--by: expected a name" in done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert approvals.checked_name("  Zoë O'Brien (on call) ") == "Zoë O'Brien (on call)"


def test_waiting_for_approval_is_notified_once(gated: Scenario, tmp_path: Path) -> None:
    s = gated
    (tmp_path / "hook-secret").write_text("notify-secret-9")
    with Receiver() as hook:
        notify = f'\n[[notify]]\nname = "audit"\nkind = "webhook"\nurl = "{hook.url}"\nsecret_file = "hook-secret"\n'
        s.path.write_text(s.path.read_text().replace("\n[[watch]]", notify + "\n[[watch]]", 1))
        baseline(s)
        second = s.push("two")
        s.outcome()
        s.time.advance(60)
        s.outcome()  # still waiting: not told again
        [waiting] = hook.wait_for(1)  # (drift is not among a target's default events)
        assert waiting.json()["event"] == "awaiting_approval"
        body = waiting.json()
        assert (body["watch"], body["digest"], body["action"]["status"]) == ("staging", second, "awaiting_approval")
        assert "reconciler approve staging --digest" in body["message"]
        assert s.cli("approve", "staging").returncode == 0
        s.outcome()
        told = [r.json()["event"] for r in hook.wait_for(3)]
        assert told == ["awaiting_approval", "started", "succeeded"]

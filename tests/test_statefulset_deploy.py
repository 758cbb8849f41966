"""Rolling a StatefulSet directly: the exact patches (asserted on what the fake API server received, through the
real `kubernetes` client), the roll-out predicate with partitions and OnDelete, digest verification, Kubernetes
errors, dry runs, and the outbox's crash-resume guarantees. The test plays the StatefulSet controller: each
poll's sleep advances the injected clock and takes one controller step."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time as wall
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, insert, select

from reconciler import app, config, model
from reconciler.progress import Progress
from reconciler.store import tables
from tests.fakes.kube import FakeKube
from tests.support.registry import LocalRegistry, push_schema2

NS, STS = "staging-stack", "stack"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
PATCH_PATH = f"/apis/apps/v1/namespaces/{NS}/statefulsets/{STS}"

CONFIG = """
[reconciler]
database = "sqlite:///{db}"

[registries."docker.io"]
url = "{registry}"

[kubernetes]
poll = "{poll}"

[[watch]]
name = "staging"
image = "{repo}"
tag = "latest"
[watch.action]
kind = "statefulset"
namespace = "staging-stack"
name = "stack"
container = "stack"
mode = "{mode}"
timeout = "15m"
{extra}
"""


class Controller:
    """Clock and sleep for the engine: every sleep moves time on and lets the StatefulSet controller take a step."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube
        self.now = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.kube.controller_step(NS, STS)


@dataclass
class Rollout:
    registry: LocalRegistry
    kube: FakeKube
    controller: Controller
    path: Path
    repo: str
    db: Path

    def push(self, label: str) -> str:
        digest = push_schema2(self.registry.base, self.repo, "latest", label=label)
        self.kube.set_image_digest(NS, STS, digest)  # what a pod started from now on would pull
        return digest

    def reconcile(self, *, dry_run: bool = False) -> model.WatchOutcome:
        application = app.App(config.load(self.path, env={}))
        try:
            report = application.reconcile([], dry_run=dry_run, clock=self.controller, sleep=self.controller.sleep)
        finally:
            application.close()
        return report.outcomes[0]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reconciler.cli", "--config", str(self.path), *args],
            capture_output=True,
            text=True,
            env=dict(os.environ),
            timeout=60,
        )

    def actions(self) -> list[dict[str, Any]]:
        engine = create_engine(f"sqlite:///{self.db}")
        with engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(select(tables.actions).order_by(tables.actions.c.id))]
        engine.dispose()
        return rows


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKube]:
    with FakeKube() as fake:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": {"server": fake.base}}],
                    "users": [{"name": "fake", "user": {"token": "kube-test-token"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                }
            )
        )
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))  # the real loading path: kubeconfig, not in-cluster
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield fake


def _rollout(
    tmp_path: Path,
    registry: LocalRegistry,
    kube: FakeKube,
    *,
    mode: str = "restart",
    extra: str = "",
    poll: str = "5s",
    **sts: Any,
) -> Rollout:
    repo = f"sts/{tmp_path.name.lower().replace('_', '-')}"[:60]
    first = push_schema2(registry.base, repo, "latest", label="one")
    kube.add_statefulset(NS, STS, image=f"docker.io/{repo}:latest", digest=first, **sts)
    path = tmp_path / "config.toml"
    db = tmp_path / "r.db"
    path.write_text(CONFIG.format(db=db, registry=registry.base, repo=repo, mode=mode, extra=extra, poll=poll))
    r = Rollout(registry=registry, kube=kube, controller=Controller(kube), path=path, repo=repo, db=db)
    assert r.reconcile().decision.verdict is model.Verdict.BASELINE
    return r


def test_restart_patches_only_the_restarted_at_annotation_and_waits_for_the_rollout(
    tmp_path: Path, registry: LocalRegistry, kube: FakeKube
) -> None:
    r = _rollout(tmp_path, registry, kube, replicas=3)
    new = r.push("two")
    outcome = r.reconcile()
    assert [(p[0].split("?")[0], p[1], p[2], p[3]) for p in kube.patches] == [
        (
            PATCH_PATH,
            "application/strategic-merge-patch+json",
            {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: "2026-11-26T09:00:00Z"}}}}},
            "reconciler",
        ),
    ]
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.SUCCEEDED, outcome.action
    assert outcome.action.detail == f"rolled out: stack-0, stack-1, stack-2 run {new}"
    assert outcome.state.deployed is not None and outcome.state.deployed.digest == new
    sts = kube.statefulset(NS, STS)
    assert sts["status"]["currentRevision"] == sts["status"]["updateRevision"]
    status = json.loads(r.cli("status", "--json").stdout)["watches"][0]
    assert status["running"] == {"digest": new, "verified_at": status["last_action"]["finished_at"]}


def test_pin_sets_the_named_container_to_the_observed_digest_and_nothing_else(
    tmp_path: Path, registry: LocalRegistry, kube: FakeKube
) -> None:
    r = _rollout(tmp_path, registry, kube, mode="pin", replicas=2)
    new = r.push("two")
    outcome = r.reconcile()
    [(path, content_type, body, manager)] = kube.patches
    assert (path.split("?")[0], content_type, manager) == (
        PATCH_PATH,
        "application/strategic-merge-patch+json",
        "reconciler",
    )
    assert body == {
        "spec": {"template": {"spec": {"containers": [{"name": "stack", "image": f"docker.io/{r.repo}@{new}"}]}}}
    }
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.SUCCEEDED
    [container] = kube.statefulset(NS, STS)["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"docker.io/{r.repo}@{new}" and container["imagePullPolicy"] == "Always"


def test_a_stalled_rollout_times_out_with_the_last_status_seen(
    tmp_path: Path, registry: LocalRegistry, kube: FakeKube
) -> None:
    r = _rollout(tmp_path, registry, kube, replicas=2)
    r.push("two")
    kube.stall(NS, STS)
    outcome = r.reconcile()
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.FAILED
    detail = outcome.action.detail or ""
    assert detail.startswith(f"roll-out of StatefulSet {NS}/{STS} did not finish within 0:15:00: generation 2, ")
    assert "/2 ready" in detail and "revision" in detail
    assert outcome.state.deployed is not None and outcome.decision.verdict is model.Verdict.DRIFT


def test_pods_running_another_digest_fail_the_action_naming_them(
    tmp_path: Path, registry: LocalRegistry, kube: FakeKube
) -> None:
    r = _rollout(tmp_path, registry, kube, replicas=2)
    new = push_schema2(registry.base, r.repo, "latest", label="two")
    stale = "sha256:" + "0" * 64  # the node pulled something else (e.g. a cached image under IfNotPresent)
    kube.set_image_digest(NS, STS, stale)
    outcome = r.reconcile()
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.FAILED
    assert outcome.action.detail == (
        f"roll-out of {NS}/{STS} finished but not on {new}: stack-0 runs {stale}; stack-1 runs {stale}"
    )


def test_a_partitioned_rollout_updates_and_verifies_only_the_pods_above_the_partition(
    tmp_path: Path, registry: LocalRegistry, kube: FakeKube
) -> None:
    r = _rollout(tmp_path, registry, kube, replicas=3, partition=2)
    new = r.push("two")
    outcome = r.reconcile()
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.SUCCEEDED, outcome.action
    assert outcome.action.detail == f"rolled out: stack-2 run {new}"
    pods = {p["metadata"]["name"]: p for p in kube.pods(NS)}
    revisions = {n: p["metadata"]["labels"]["controller-revision-hash"] for n, p in pods.items()}
    status = kube.statefulset(NS, STS)["status"]
    assert revisions["stack-2"] == status["updateRevision"] != revisions["stack-0"] == revisions["stack-1"]
    assert status["currentRevision"] != status["updateRevision"]  # the controller never completes a partition


def test_an_on_delete_statefulset_is_reported_without_patching(
    tmp_path: Path, registry: LocalRegistry, kube: FakeKube
) -> None:
    r = _rollout(tmp_path, registry, kube, replicas=2, update_strategy="OnDelete", partition=None)
    r.push("two")
    outcome = r.reconcile()
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.FAILED
    assert "uses the OnDelete update strategy: its pods must be deleted" in (outcome.action.detail or "")
    assert 'on_delete = "delete-pods"' in (outcome.action.detail or "")
    assert kube.patches == []


def test_on_delete_delete_pods_deletes_them_one_at_a_time_highest_first(
    tmp_path: Path, registry: LocalRegistry, kube: FakeKube
) -> None:
    r = _rollout(
        tmp_path,
        registry,
        kube,
        replicas=3,
        update_strategy="OnDelete",
        partition=None,
        extra='on_delete = "delete-pods"',
    )
    new = r.push("two")
    outcome = r.reconcile()
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.SUCCEEDED, outcome.action
    deletes = [path.rsplit("/", 1)[-1] for method, path, *_ in kube.requests if method == "DELETE"]
    assert deletes == ["stack-2", "stack-1", "stack-0"]
    assert outcome.action.detail == f"rolled out: stack-0, stack-1, stack-2 run {new}"


def test_a_pod_someone_else_deleted_first_does_not_fail_an_on_delete_rollout(
    tmp_path: Path, registry: LocalRegistry, kube: FakeKube
) -> None:
    r = _rollout(
        tmp_path, registry, kube, replicas=2, update_strategy="OnDelete", partition=None,
        extra='on_delete = "delete-pods"',
    )  # fmt: skip
    new = r.push("two")
    kube.before_next("DELETE", "pods", lambda: kube.delete_pod(NS, "stack-1"))  # our DELETE answers 404 for the pod
    outcome = r.reconcile()
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.SUCCEEDED, outcome.action
    assert outcome.action.detail == f"rolled out: stack-0, stack-1 run {new}"


def test_throttling_and_5xx_never_fail_a_rollout_nor_restart_it_twice(
    tmp_path: Path, registry: LocalRegistry, kube: FakeKube
) -> None:
    """The overload filters' 429 (plain text, Retry-After: 1) on the PATCH and 5xx while waiting: asked again."""
    r = _rollout(tmp_path, registry, kube, replicas=2)
    new = r.push("two")
    kube.fail_next(2, 429, resource="statefulsets", method="PATCH")
    kube.fail_next(2, 500, resource="pods", method="GET")
    outcome = r.reconcile()
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.SUCCEEDED, outcome.action
    assert outcome.action.detail == f"rolled out: stack-0, stack-1 run {new}"
    assert [m for m, *_ in kube.requests].count("PATCH") == 3
    assert len(kube.patches) == 1 and kube.statefulset(NS, STS)["metadata"]["generation"] == 2  # restarted once
    assert [(a["status"], a["attempt"]) for a in r.actions()] == [("succeeded", 1)]


def test_a_patch_applied_but_unseen_within_the_launch_budget_is_found_later_not_sent_again(
    tmp_path: Path, registry: LocalRegistry, kube: FakeKube
) -> None:
    """A 500 after the PATCH was applied, then reads failing past the launch's 30 s: the launch's outcome is unknown,
    and the deployer looks for it (find) until it shows, rather than patching again."""
    r = _rollout(tmp_path, registry, kube, replicas=2)
    new = r.push("two")
    kube.fail_next(1, 500, resource="statefulsets", method="PATCH", after=True)
    kube.before_next("PATCH", "statefulsets", lambda: kube.fail_next(6, 503, resource="statefulsets", method="GET"))
    outcome = r.reconcile()
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.SUCCEEDED, outcome.action
    assert outcome.action.detail == f"rolled out: stack-0, stack-1 run {new}"
    assert [m for m, *_ in kube.requests].count("PATCH") == 1 and len(kube.patches) == 1


def test_a_restart_warns_when_the_pull_policy_would_not_pull_the_new_digest(
    tmp_path: Path, registry: LocalRegistry, kube: FakeKube
) -> None:
    r = _rollout(tmp_path, registry, kube, pull_policy="IfNotPresent")
    r.push("two")
    outcome = r.reconcile()
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.SUCCEEDED
    assert "warning: container 'stack' has imagePullPolicy IfNotPresent" in (outcome.action.detail or "")


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        pytest.param(
            "forbid-patch",
            "Kubernetes forbids patch on statefulsets in namespace staging-stack (403): "
            "grant the ServiceAccount the 'patch' verb on statefulsets in API group apps",
            id="403-patch",
        ),
        pytest.param("forbid-list-pods", "grant the ServiceAccount the 'list' verb on pods", id="403-list-pods"),
        pytest.param("missing", f'StatefulSet {NS}/nope not found (404): statefulsets.apps "nope" not found', id="404"),
        pytest.param("422", "Kubernetes rejected the patch of statefulsets in namespace staging-stack (422)", id="422"),
        pytest.param("conflicts", "Kubernetes reported a conflict on statefulsets", id="409-persisting"),
    ],
)
def test_kubernetes_errors_are_one_clear_line(
    tmp_path: Path, registry: LocalRegistry, kube: FakeKube, fault: str, expected: str
) -> None:
    r = _rollout(tmp_path, registry, kube)
    r.push("two")
    if fault == "forbid-patch":
        kube.forbid("patch", "statefulsets")
    elif fault == "forbid-list-pods":
        kube.forbid("list", "pods")
    elif fault == "missing":
        r.path.write_text(r.path.read_text().replace('name = "stack"', 'name = "nope"'))
    elif fault == "422":
        kube.fail_next(
            1,
            status=422,
            resource="statefulsets",
            method="PATCH",
            body={
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": 'StatefulSet.apps "stack" is invalid: spec.template.metadata.annotations: Invalid value',
                "reason": "Invalid",
                "code": 422,
            },
        )
    else:
        kube.conflict_next(3)
    outcome = r.reconcile()
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.FAILED, outcome.action
    assert expected in (outcome.action.detail or ""), outcome.action.detail
    assert "\n" not in (outcome.action.detail or "")


def test_one_conflict_is_retried_and_the_rollout_succeeds(
    tmp_path: Path, registry: LocalRegistry, kube: FakeKube
) -> None:
    r = _rollout(tmp_path, registry, kube)
    r.push("two")
    kube.conflict_next(1)
    outcome = r.reconcile()
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.SUCCEEDED
    first, second = kube.patches  # the one answered 409, and the same patch again
    assert first.body == second.body


def test_dry_run_prints_the_patch_path_content_type_and_body(
    tmp_path: Path, registry: LocalRegistry, kube: FakeKube
) -> None:
    r = _rollout(tmp_path, registry, kube, mode="pin")
    new = r.push("two")
    done = r.cli("reconcile", "--dry-run")
    assert done.returncode == 5, done.stderr  # an action would be taken
    assert (
        f"staging would send: PATCH {PATCH_PATH}?fieldManager=reconciler (application/strategic-merge-patch+json)"
    ) in done.stdout
    assert f'"image": "docker.io/{r.repo}@{new}"' in done.stdout
    assert kube.patches == [] and r.actions() == []
    assert {m for m, *_ in kube.requests} <= {"GET"}


def test_a_patch_applied_before_a_crash_is_found_not_sent_again(
    tmp_path: Path, registry: LocalRegistry, kube: FakeKube
) -> None:
    """What a process killed right after its PATCH (before recording `launched`) leaves: a planned row, and the
    patch already on the StatefulSet."""
    r = _rollout(tmp_path, registry, kube, replicas=2)
    new = r.push("two")
    stamp = "2026-11-26T08:59:00Z"
    body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
    from kubernetes import client as k8s

    k8s.AppsV1Api(kube.api_client()).patch_namespaced_stateful_set(STS, NS, body, field_manager="reconciler")
    engine = create_engine(f"sqlite:///{r.db}")
    with engine.begin() as conn:
        conn.execute(
            insert(tables.actions).values(
                watch="staging",
                kind="statefulset",
                status="planned",
                tag="latest",
                digest=new,
                attempt=1,
                created_at=r.controller(),
                request=json.dumps(
                    {
                        "method": "PATCH",
                        "path": f"{PATCH_PATH}?fieldManager=reconciler",
                        "content_type": "application/strategic-merge-patch+json",
                        "body": body,
                    }
                ),
            )
        )
    engine.dispose()
    outcome = r.reconcile()
    assert len(kube.patches) == 1, "the restarted process must find its patch, not send another"
    assert [(a["status"], a["digest"]) for a in r.actions()] == [("succeeded", new)]
    assert outcome.state.deployed is not None and outcome.state.deployed.digest == new


def test_a_process_killed_while_waiting_for_the_rollout_resumes_the_wait(
    tmp_path: Path, registry: LocalRegistry, kube: FakeKube
) -> None:
    r = _rollout(tmp_path, registry, kube, replicas=2, poll="20ms")
    new = r.push("two")
    kube.stall(NS, STS)  # nobody plays the controller for the subprocess: the roll-out cannot finish yet
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler.cli", "--config", str(r.path), "reconcile"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    deadline = wall.monotonic() + 30
    while wall.monotonic() < deadline and not (r.db.exists() and any(a["status"] == "launched" for a in r.actions())):
        try:
            proc.wait(timeout=0.05)
            pytest.fail(f"reconcile ended before it was killed: {proc.stderr.read() if proc.stderr else ''}")
        except subprocess.TimeoutExpired:
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert [a["status"] for a in r.actions()] == ["launched"] and len(kube.patches) == 1
    kube.stall(NS, STS, stalled=False)
    kube.settle(NS, STS)
    outcome = r.reconcile()
    assert len(kube.patches) == 1, "a launched roll-out is waited for, never patched again"
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.SUCCEEDED
    assert [(a["status"], a["digest"]) for a in r.actions()] == [("succeeded", new)]


def test_an_api_server_blip_while_waiting_is_not_a_failure(
    tmp_path: Path, registry: LocalRegistry, kube: FakeKube
) -> None:
    r = _rollout(tmp_path, registry, kube, replicas=2)
    r.push("two")
    kube.fail_next(2, status=503, resource="pods", method="GET")
    outcome = r.reconcile()
    assert outcome.action is not None and outcome.action.status is model.ActionStatus.SUCCEEDED, outcome.action


def test_a_rollout_wait_says_how_it_goes(
    tmp_path: Path, registry: LocalRegistry, kube: FakeKube, caplog: pytest.LogCaptureFixture
) -> None:
    r = _rollout(tmp_path, registry, kube, replicas=3)
    r.push("two")
    application = app.App(config.load(r.path, env={}), progress=Progress(r.controller))
    with caplog.at_level(logging.INFO, logger="reconciler.progress"):
        try:
            report = application.reconcile([], dry_run=False, clock=r.controller, sleep=r.controller.sleep)
        finally:
            application.close()
    assert report.outcomes[0].action is not None and report.outcomes[0].action.status is model.ActionStatus.SUCCEEDED
    said = [rec.getMessage() for rec in caplog.records if rec.name == "reconciler.progress"]
    assert said and said[0].startswith(f"waiting for the roll-out of StatefulSet {NS}/{STS} ("), said


def test_an_unreachable_api_server_is_warned_of_once_per_pass(
    tmp_path: Path, registry: LocalRegistry, kube: FakeKube, caplog: pytest.LogCaptureFixture
) -> None:
    """It is asked again and again within the launch's budget; that is said at info, the outcome once, at warning."""
    r = _rollout(tmp_path, registry, kube)
    r.push("two")
    kubeconfig = Path(os.environ["KUBECONFIG"])
    kubeconfig.write_text(kubeconfig.read_text().replace(kube.base, "http://127.0.0.1:1"))
    with caplog.at_level(logging.INFO):
        outcome = r.reconcile()
    assert outcome.action is not None and outcome.action.failure is model.Failure.OUTAGE, outcome.action
    asked = [rec for rec in caplog.records if rec.name == "reconciler.actuators.kube" and "asking" in rec.getMessage()]
    assert asked and all(rec.levelno == logging.INFO for rec in asked)
    assert len(asked) == 1, [rec.getMessage() for rec in asked]  # the same failure is not said at every retry
    ours = [rec for rec in caplog.records if rec.name.startswith("reconciler")]  # the CLI quiets urllib3's own
    warnings = [rec.getMessage() for rec in ours if rec.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "action #1 failed (outage" in warnings[0], warnings

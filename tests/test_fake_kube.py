"""The Kubernetes fake answers like the real API server does, driven through the real `kubernetes`
37.x client (pydantic models): StatefulSet read/patch, Status errors, pods by label, the controller's rollout steps,
Leases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import urllib3
from kubernetes import client
from kubernetes.client import ApiException

from tests.fakes.kube import JSON_PATCH, MERGE, SMP, SPEC_FORBIDDEN, FakeKube

NS = "staging-stack"
OLD = "sha256:" + "1" * 64
NEW = "sha256:" + "2" * 64
RESTARTED_AT = {"kubectl.kubernetes.io/restartedAt": "2026-11-26T08:16:04Z"}
RESTART = {"spec": {"template": {"metadata": {"annotations": RESTARTED_AT}}}}


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube() as fake:
        yield fake


@pytest.fixture
def apps(kube: FakeKube) -> Iterator[client.AppsV1Api]:
    with kube.api_client() as api:
        yield client.AppsV1Api(api)


@pytest.fixture
def core(kube: FakeKube) -> Iterator[client.CoreV1Api]:
    with kube.api_client() as api:
        yield client.CoreV1Api(api)


def _sts(apps: client.AppsV1Api, name: str = "stack") -> Any:
    """The StatefulSet as the client deserializes it (Any: the pydantic fields are all Optional)."""
    return apps.read_namespaced_stateful_set(name, NS)


def _patch(apps: client.AppsV1Api, body: Any, **kw: Any) -> Any:
    return apps.patch_namespaced_stateful_set("stack", NS, body, **kw)


def _pod_items(core: client.CoreV1Api, selector: str | None = None) -> list[Any]:
    return list(core.list_namespaced_pod(NS, label_selector=selector).items)


def _status_error(exc: pytest.ExceptionInfo[ApiException], code: int) -> dict[str, Any]:
    assert exc.value.status == code
    body: dict[str, Any] = json.loads(exc.value.body or "")
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["code"] == code
    return body


def _pods(core: client.CoreV1Api, selector: str = "name=stack") -> list[tuple[str, str, bool, str]]:
    """(name, revision, ready, imageID) of each pod the selector picks, via the client."""
    rows = []
    for pod in _pod_items(core, selector):
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)
        cs = pod.status.container_statuses[0]
        rows.append((pod.metadata.name, pod.metadata.labels["controller-revision-hash"], ready, cs.image_id))
    return rows


def test_read_statefulset_deserializes_and_omits_zero_fields(kube: FakeKube, apps: client.AppsV1Api) -> None:
    kube.add_statefulset(NS, "stack", replicas=2, digest=OLD)
    sts = _sts(apps)
    assert sts.kind == "StatefulSet" and sts.metadata.generation == 1 and sts.metadata.uid
    assert sts.spec.selector.match_labels == {"name": "stack"} and sts.spec.service_name == "stack"
    container = sts.spec.template.spec.containers[0]
    assert (container.name, container.image, container.image_pull_policy) == (
        "stack", "docker.io/xchem/fragalysis-stack:latest", "Always")  # fmt: skip
    assert sts.spec.update_strategy.type == "RollingUpdate" and sts.spec.update_strategy.rolling_update.partition == 0
    assert sts.spec.pod_management_policy == "OrderedReady" and sts.spec.revision_history_limit == 10
    st = sts.status
    assert (st.observed_generation, st.replicas, st.ready_replicas, st.current_replicas, st.updated_replicas) == (
        1, 2, 2, 2, 2)  # fmt: skip
    assert st.current_revision == st.update_revision and st.current_revision.startswith("stack-")
    assert st.collision_count is None and st.available_replicas == 2  # zero omitempty → absent → None
    assert "collisionCount" not in kube.statefulset(NS, "stack")["status"]
    assert apps.read_namespaced_stateful_set_status("stack", NS).status == st  # the same object

    _patch(apps, RESTART)
    kube.controller_step(NS, "stack")  # observed: a new updateRevision, no pod updated yet
    st = _sts(apps).status
    assert st.updated_replicas is None and "updatedReplicas" not in kube.statefulset(NS, "stack")["status"]
    assert st.replicas == 2 and st.current_replicas == 2 and st.update_revision != st.current_revision


def test_no_rolling_update_and_zero_replicas_still_deserialize(kube: FakeKube, apps: client.AppsV1Api) -> None:
    kube.add_statefulset(NS, "stack", replicas=0, partition=None)
    sts = _sts(apps)
    assert sts.spec.update_strategy.rolling_update is None
    assert kube.statefulset(NS, "stack")["status"] == {
        "observedGeneration": 1, "replicas": 0, "currentRevision": sts.status.current_revision,
        "updateRevision": sts.status.current_revision, "availableReplicas": 0,
    }  # fmt: skip
    assert (sts.status.replicas, sts.status.ready_replicas, sts.status.available_replicas) == (0, None, 0)


def test_dict_patch_is_strategic_merge_and_bumps_generation(kube: FakeKube, apps: client.AppsV1Api) -> None:
    before = kube.add_statefulset(NS, "stack")
    done = _patch(apps, RESTART, field_manager="image-watcher")
    assert done.metadata.generation == 2 and done.status.observed_generation == 1  # the controller has not seen it
    assert int(done.metadata.resource_version) > int(before["metadata"]["resourceVersion"])
    assert done.spec.template.metadata.annotations == RESTARTED_AT
    assert done.spec.template.metadata.labels == {"name": "stack"}  # merged, not replaced
    sent = kube.requests[-1]
    assert sent.method == "PATCH" and sent.headers["content-type"] == SMP
    assert sent.path == f"/apis/apps/v1/namespaces/{NS}/statefulsets/stack?fieldManager=image-watcher"
    assert sent.headers["authorization"] == "Bearer kube-test-token" and json.loads(sent.body) == RESTART
    assert kube.patches[-1] == (f"/apis/apps/v1/namespaces/{NS}/statefulsets/stack", SMP, RESTART, "image-watcher")

    again = _patch(apps, RESTART)  # no change: no write, nothing bumped
    assert (again.metadata.generation, again.metadata.resource_version) == (2, done.metadata.resource_version)
    labelled = _patch(apps, {"metadata": {"labels": {"team": "xchem"}}})
    assert labelled.metadata.generation == 2 and labelled.metadata.resource_version != done.metadata.resource_version
    removed = _patch(apps, {"metadata": {"labels": {"team": None}}})
    assert removed.metadata.labels == {"name": "stack"}


def test_container_image_patch_touches_only_that_container(kube: FakeKube, apps: client.AppsV1Api) -> None:
    kube.add_statefulset(NS, "stack")
    sidecar = {"name": "proxy", "image": "nginx:1.27", "imagePullPolicy": "IfNotPresent"}
    _patch(apps, {"spec": {"template": {"spec": {"containers": [sidecar]}}}})
    image = "docker.io/xchem/fragalysis-stack:2026.08.3"
    body = {"spec": {"template": {"spec": {"containers": [{"name": "stack", "image": image}]}}}}
    done = _patch(apps, body)
    assert [c.to_dict() for c in done.spec.template.spec.containers] == [
        {**client.V1Container(name="stack").to_dict(), "image": image, "image_pull_policy": "Always"},
        {**client.V1Container(name="proxy").to_dict(), "image": "nginx:1.27", "image_pull_policy": "IfNotPresent"},
    ]
    assert done.metadata.generation == 3


def test_merge_patch_replaces_lists_and_json_patch_edits_paths(kube: FakeKube, apps: client.AppsV1Api) -> None:
    kube.add_statefulset(NS, "stack")
    annotations = "/spec/template/metadata/annotations"
    ops: list[dict[str, Any]] = [
        {"op": "add", "path": annotations, "value": {}},
        {"op": "add", "path": f"{annotations}/kubectl.kubernetes.io~1restartedAt", "value": "x"},  # ~1 is "/"
        {"op": "replace", "path": "/spec/replicas", "value": 2},
    ]
    done = _patch(apps, ops)
    assert kube.requests[-1].headers["content-type"] == JSON_PATCH
    assert done.spec.replicas == 2
    assert done.spec.template.metadata.annotations == {"kubectl.kubernetes.io/restartedAt": "x"}
    with pytest.raises(ApiException) as exc:
        _patch(apps, [{"op": "remove", "path": "/spec/template/metadata/nope"}])
    assert _status_error(exc, 422)["reason"] == "Invalid"

    body = {"spec": {"template": {"spec": {"containers": [{"name": "stack", "image": "busybox"}]}}}}
    done = _patch(apps, body, _content_type=MERGE)
    assert kube.patches[-1].content_type == MERGE
    assert [c.image_pull_policy for c in done.spec.template.spec.containers] == [None]  # RFC 7386: lists replaced


def test_patch_of_an_immutable_spec_field_is_422(kube: FakeKube, apps: client.AppsV1Api) -> None:
    kube.add_statefulset(NS, "stack")
    with pytest.raises(ApiException) as exc:
        _patch(apps, {"spec": {"serviceName": "other"}})
    assert _status_error(exc, 422) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f'StatefulSet.apps "stack" is invalid: spec: {SPEC_FORBIDDEN}', "reason": "Invalid",
        "details": {"name": "stack", "group": "apps", "kind": "StatefulSet",
                    "causes": [{"reason": "FieldValueForbidden", "message": SPEC_FORBIDDEN, "field": "spec"}]},
        "code": 422,
    }  # fmt: skip
    assert SPEC_FORBIDDEN.endswith("for fields other than 'replicas', 'template', and 'updateStrategy' are forbidden")
    assert kube.statefulset(NS, "stack")["metadata"]["generation"] == 1
    _patch(apps, {"spec": {"serviceName": "stack", "minReadySeconds": 5}})
    assert kube.statefulset(NS, "stack")["metadata"]["generation"] == 2


def test_not_found_is_a_status_with_code(apps: client.AppsV1Api, core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as exc:
        _sts(apps)
    assert exc.value.reason == "Not Found" and _status_error(exc, 404) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'statefulsets.apps "stack" not found', "reason": "NotFound",
        "details": {"name": "stack", "group": "apps", "kind": "statefulsets"}, "code": 404,
    }  # fmt: skip
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_pod("stack-0", NS)
    body = _status_error(exc, 404)  # group "" is omitempty
    assert body["message"] == 'pods "stack-0" not found' and body["details"] == {"name": "stack-0", "kind": "pods"}


def test_forbidden_names_the_service_account(kube: FakeKube, apps: client.AppsV1Api, core: client.CoreV1Api) -> None:
    kube.add_statefulset(NS, "stack")
    kube.forbid("patch", "statefulsets")
    with pytest.raises(ApiException) as exc:
        _patch(apps, RESTART)
    body = _status_error(exc, 403)
    assert body["message"] == (
        'statefulsets.apps "stack" is forbidden: User "system:serviceaccount:staging-stack:watcher" cannot patch '
        'resource "statefulsets" in API group "apps" in the namespace "staging-stack"'
    )
    assert body["reason"] == "Forbidden" and body["details"] == {
        "name": "stack",
        "group": "apps",
        "kind": "statefulsets",
    }
    kube.forbid("list", "pods")
    with pytest.raises(ApiException) as exc:
        _pod_items(core, "name=stack")
    assert _status_error(exc, 403)["message"] == (
        'pods is forbidden: User "system:serviceaccount:staging-stack:watcher" cannot list resource "pods" in API '
        'group "" in the namespace "staging-stack"'
    )
    assert _sts(apps).metadata.generation == 1  # only the forbidden verbs; the PATCH changed nothing


def test_conflict_faults_auth_and_media_type(kube: FakeKube, apps: client.AppsV1Api) -> None:
    kube.add_statefulset(NS, "stack")
    kube.conflict_next()
    with pytest.raises(ApiException) as exc:
        _patch(apps, RESTART)
    assert _status_error(exc, 409)["message"] == (
        'Operation cannot be fulfilled on statefulsets.apps "stack": the object has been modified; please '
        "apply your changes to the latest version and try again"
    )
    assert _patch(apps, RESTART).metadata.generation == 2  # the retry goes through
    kube.fail_next(1, 503)
    with pytest.raises(ApiException) as exc:
        _sts(apps)
    assert _status_error(exc, 503)["reason"] == "ServiceUnavailable"
    url = f"{kube.base}/apis/apps/v1/namespaces/{NS}/statefulsets/stack"
    assert requests.get(url, timeout=5).json() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized",
        "reason": "Unauthorized", "code": 401,
    }  # fmt: skip
    headers = {"Authorization": "Bearer kube-test-token", "Content-Type": "text/plain"}
    wrong = requests.patch(url, data=b"{}", headers=headers, timeout=5)
    assert wrong.status_code == 415 and wrong.json()["reason"] == "UnsupportedMediaType"
    assert requests.get(url + "/scale", headers=headers, timeout=5).status_code == 404


def test_pods_by_label_selector(kube: FakeKube, core: client.CoreV1Api) -> None:
    kube.add_statefulset(NS, "stack", replicas=2, digest=OLD)
    kube.add_statefulset(NS, "db", image="postgres:16", labels={"name": "db"})
    assert [row[0] for row in _pods(core)] == ["stack-0", "stack-1"]
    assert kube.requests[-1].path == f"/api/v1/namespaces/{NS}/pods?labelSelector=name%3Dstack"
    pod = _pod_items(core, "name=stack,apps.kubernetes.io/pod-index=1")[0]
    assert pod.metadata.labels["statefulset.kubernetes.io/pod-name"] == "stack-1"
    owner = pod.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("StatefulSet", "stack", True)
    cs = pod.status.container_statuses[0]
    assert (cs.name, cs.ready, cs.restart_count, cs.started) == ("stack", True, 0, True)
    assert cs.image == "docker.io/xchem/fragalysis-stack:latest"
    assert cs.image_id == f"docker.io/xchem/fragalysis-stack@{OLD}" and cs.state.running is not None
    assert pod.status.phase == "Running" and cs.container_id.startswith("containerd://")
    assert _pods(core, "name=db")[0][3].startswith("docker.io/library/postgres@sha256:")
    assert _pod_items(core, "name=nope") == [] and len(_pod_items(core)) == 3


def test_restart_rolls_pods_highest_ordinal_first(
    kube: FakeKube, apps: client.AppsV1Api, core: client.CoreV1Api
) -> None:
    kube.add_statefulset(NS, "stack", replicas=3, digest=OLD)
    old_rev = _sts(apps).status.current_revision
    generation = _patch(apps, RESTART).metadata.generation
    kube.set_image_digest(NS, "stack", NEW)  # `latest` moved; Always pulls it
    assert kube.controller_step(NS, "stack")
    st = _sts(apps).status
    new_rev = st.update_revision
    assert st.observed_generation == generation and new_rev != old_rev and st.current_revision == old_rev
    seen = []
    while kube.controller_step(NS, "stack"):
        st = _sts(apps).status
        seen.append((st.ready_replicas, st.updated_replicas, st.current_revision == new_rev))
        seen_pods = _pods(core)
        assert all(rev == new_rev for _, rev, _, _ in seen_pods if rev != old_rev)
    assert seen == [(2, 1, False), (3, 1, False), (2, 2, False), (3, 2, False), (2, 3, False), (3, 3, True)]
    assert _pods(core) == [(f"stack-{i}", new_rev, True, f"docker.io/xchem/fragalysis-stack@{NEW}") for i in range(3)]
    replaced = [r for r in kube.pods(NS) if r["metadata"]["labels"]["controller-revision-hash"] == new_rev]
    assert len(replaced) == 3
    st = _sts(apps).status
    assert (st.current_replicas, st.updated_replicas, st.ready_replicas, st.current_revision) == (3, 3, 3, new_rev)
    assert not kube.controller_step(NS, "stack") and kube.settle(NS, "stack") == 0


def test_replacement_order_and_pending_pod(kube: FakeKube, core: client.CoreV1Api) -> None:
    kube.add_statefulset(NS, "stack", replicas=3)
    body = {"spec": {"template": {"spec": {"containers": [{"name": "stack", "image": "busybox@" + NEW}]}}}}
    with kube.api_client() as api:
        _patch(client.AppsV1Api(api), body)
    kube.controller_step(NS, "stack")
    order = []
    for _ in range(6):
        kube.controller_step(NS, "stack")
        pending = [p for p in _pod_items(core) if p.status.phase == "Pending"]
        if pending:
            cs = pending[0].status.container_statuses[0]
            assert (cs.ready, cs.started, cs.image_id) == (False, False, "")
            assert cs.state.waiting.reason == "ContainerCreating"
            order.append(pending[0].metadata.name)
    assert order == ["stack-2", "stack-1", "stack-0"]
    assert {row[3] for row in _pods(core)} == {f"docker.io/library/busybox@{NEW}"}  # a pinned image runs its digest


def test_partition_updates_only_the_ordinals_above_it(
    kube: FakeKube, apps: client.AppsV1Api, core: client.CoreV1Api
) -> None:
    kube.add_statefulset(NS, "stack", replicas=3, partition=2)
    old_rev = _sts(apps).status.current_revision
    _patch(apps, RESTART)
    steps = 0
    while kube.controller_step(NS, "stack"):
        steps += 1
        assert _sts(apps).status.current_revision == old_rev
    st = _sts(apps).status
    assert steps == 3 and (st.updated_replicas, st.current_replicas, st.ready_replicas) == (1, 2, 3)
    assert [rev == st.update_revision for _, rev, _, _ in _pods(core)] == [False, False, True]
    core.delete_namespaced_pod("stack-0", NS)  # below the partition: re-created at the current revision
    kube.settle(NS, "stack")
    assert [rev for _, rev, _, _ in _pods(core)][:2] == [old_rev, old_rev]


def test_on_delete_replaces_only_deleted_pods(kube: FakeKube, apps: client.AppsV1Api, core: client.CoreV1Api) -> None:
    kube.add_statefulset(NS, "stack", replicas=2, update_strategy="OnDelete", digest=OLD)
    assert _sts(apps).spec.update_strategy.rolling_update is None
    _patch(apps, RESTART)
    kube.set_image_digest(NS, "stack", NEW)
    assert kube.settle(NS, "stack") == 1  # observed, nothing replaced
    st = _sts(apps).status
    assert st.observed_generation == 2 and st.updated_replicas is None and st.current_replicas == 2
    gone: Any = core.delete_namespaced_pod("stack-1", NS)
    assert gone.metadata.name == "stack-1" and gone.metadata.deletion_timestamp is not None
    assert [row[0] for row in _pods(core)] == ["stack-0"]
    kube.settle(NS, "stack")
    rows = _pods(core)
    assert [(n, rev == st.update_revision, ready) for n, rev, ready, _ in rows] == [("stack-0", False, True),
                                                                                   ("stack-1", True, True)]  # fmt: skip
    assert rows[1][3].endswith(NEW) and rows[0][3].endswith(OLD)
    st = _sts(apps).status
    assert st.current_revision != st.update_revision  # OnDelete never completes a rolling update


def test_stalled_rollout_stops_at_a_crash_looping_pod(
    kube: FakeKube, apps: client.AppsV1Api, core: client.CoreV1Api
) -> None:
    kube.add_statefulset(NS, "stack", replicas=2)
    kube.stall(NS, "stack")
    _patch(apps, RESTART)
    kube.settle(NS, "stack")
    st = _sts(apps).status
    assert (st.ready_replicas, st.updated_replicas) == (1, 1) and st.current_revision != st.update_revision
    pod: Any = core.read_namespaced_pod("stack-1", NS)
    assert pod.status.container_statuses[0].state.waiting.reason == "CrashLoopBackOff"
    kube.stall(NS, "stack", stalled=False)
    kube.settle(NS, "stack")
    st = _sts(apps).status
    assert st.current_revision == st.update_revision and st.ready_replicas == 2
    core.delete_namespaced_pod("stack-0", NS)
    assert kube.recreate_pod(NS, "stack-0")["metadata"]["labels"]["controller-revision-hash"] == st.update_revision


def test_leases_create_get_replace_conflict(kube: FakeKube) -> None:
    with kube.api_client() as api:
        leases = client.CoordinationV1Api(api)
        with pytest.raises(ApiException) as exc:
            leases.read_namespaced_lease("watcher", NS)
        assert json.loads(exc.value.body or "")["code"] == 404  # what LeaseLock checks
        now = datetime(2026, 11, 26, 8, 16, 4, 123456, tzinfo=UTC)
        spec = client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=15, acquire_time=now, renew_time=now)
        made: Any = leases.create_namespaced_lease(
            NS, client.V1Lease(metadata=client.V1ObjectMeta(name="watcher"), spec=spec)
        )
        assert made.metadata.resource_version and made.spec.renew_time == now
        assert kube.leases[(NS, "watcher")]["spec"]["renewTime"] == "2026-11-26T08:16:04.123456Z"
        with pytest.raises(ApiException) as exc:
            leases.create_namespaced_lease(NS, client.V1Lease(metadata=client.V1ObjectMeta(name="watcher"), spec=spec))
        body = _status_error(exc, 409)
        assert body["reason"] == "AlreadyExists"
        assert body["message"] == 'leases.coordination.k8s.io "watcher" already exists'
        got: Any = leases.read_namespaced_lease("watcher", NS)
        got.spec.holder_identity = "b"
        replaced: Any = leases.replace_namespaced_lease("watcher", NS, got)
        assert replaced.spec.holder_identity == "b" and replaced.metadata.uid == made.metadata.uid
        assert replaced.metadata.resource_version != made.metadata.resource_version
        with pytest.raises(ApiException) as exc:
            leases.replace_namespaced_lease("watcher", NS, got)  # got still carries the old resourceVersion
        body = _status_error(exc, 409)
        assert body["reason"] == "Conflict" and body["details"]["group"] == "coordination.k8s.io"
        final: Any = leases.read_namespaced_lease("watcher", NS)
        assert final.spec.holder_identity == "b"


def test_overload_429_is_plain_text_with_retry_after_and_not_processed(kube: FakeKube, apps: client.AppsV1Api) -> None:
    """As apiserver server/filters/maxinflight.go `tooManyRequests` answers: Go's http.Error, not a Status."""
    kube.add_statefulset(NS, "stack")
    kube.fail_next(1, 429, resource="statefulsets", method="PATCH")
    with pytest.raises(ApiException) as exc:
        _patch(apps, RESTART)
    assert (exc.value.status, exc.value.reason) == (429, "Too Many Requests")
    assert exc.value.body == "Too many requests, please try again later.\n"
    headers = exc.value.headers or {}
    assert headers["Retry-After"] == "1" and headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert kube.patches == [] and kube.statefulset(NS, "stack")["metadata"]["generation"] == 1  # not processed
    kube.fail_next(1, 429, retry_after="7")
    url = f"{kube.base}/apis/apps/v1/namespaces/{NS}/statefulsets/stack"
    raw = requests.get(url, headers={"Authorization": "Bearer kube-test-token"}, timeout=5)
    assert (raw.status_code, raw.headers["Retry-After"], raw.text) == (429, "7", exc.value.body)
    assert _patch(apps, RESTART).metadata.generation == 2  # the faults are used up


def test_a_fault_after_the_request_answers_once_the_patch_is_applied(kube: FakeKube, apps: client.AppsV1Api) -> None:
    """The timeout filter's 504 (server/filters/timeout.go) while the handler goes on and writes the patch."""
    kube.add_statefulset(NS, "stack")
    kube.fail_next(1, 504, resource="statefulsets", method="PATCH", after=True)
    with pytest.raises(ApiException) as exc:
        _patch(apps, RESTART)
    assert exc.value.status == 504 and json.loads(exc.value.body or "") == {
        "metadata": {}, "status": "Failure", "message": "Timeout: request did not complete within the allotted timeout",
        "reason": "Timeout", "details": {}, "code": 504,
    }  # fmt: skip
    assert [p.body for p in kube.patches] == [RESTART]
    assert _sts(apps).metadata.generation == 2  # applied despite the 504
    kube.fail_next(1, 500, method="PATCH")  # before: nothing applied
    with pytest.raises(ApiException) as exc:
        _patch(apps, {"metadata": {"labels": {"team": "xchem"}}})
    assert _status_error(exc, 500)["reason"] == "InternalError" and len(kube.patches) == 1


def test_a_dropped_connection_after_the_patch_leaves_it_applied(kube: FakeKube, apps: client.AppsV1Api) -> None:
    kube.add_statefulset(NS, "stack")
    kube.fail_next(1, 0, method="PATCH", after=True)
    with pytest.raises(urllib3.exceptions.ProtocolError):  # urllib3 does not re-send a PATCH
        _patch(apps, RESTART)
    assert _sts(apps).metadata.generation == 2 and len(kube.patches) == 1
    kube.fail_next(1, 0, method="GET")
    assert _sts(apps).metadata.generation == 2  # a GET urllib3 sends again by itself


def test_deleting_a_pod_that_is_gone_is_404_for_the_pod(kube: FakeKube, core: client.CoreV1Api) -> None:
    kube.add_statefulset(NS, "stack", replicas=2)
    kube.before_next("DELETE", "pods", lambda: kube.delete_pod(NS, "stack-1"))  # someone else was quicker
    with pytest.raises(ApiException) as exc:
        core.delete_namespaced_pod("stack-1", NS)
    assert _status_error(exc, 404) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'pods "stack-1" not found', "reason": "NotFound", "details": {"name": "stack-1", "kind": "pods"},
        "code": 404,
    }  # fmt: skip
    assert [p["metadata"]["name"] for p in kube.pods(NS)] == ["stack-0"]
    kube.settle(NS, "stack")
    assert [p["metadata"]["name"] for p in kube.pods(NS)] == ["stack-0", "stack-1"]  # re-created by the controller


def test_a_side_loaded_image_reports_its_bare_config_digest(kube: FakeKube, core: client.CoreV1Api) -> None:
    kube.add_statefulset(NS, "stack", replicas=1, digest=OLD)
    config = "sha256:" + "c" * 64
    kube.side_load(NS, "stack", config)
    kube.delete_pod(NS, "stack-0")
    kube.settle(NS, "stack")
    [(name, _, ready, image_id)] = _pods(core)
    assert (name, ready, image_id) == ("stack-0", True, config)  # no repository, no `@`

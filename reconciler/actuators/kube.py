"""Roll a StatefulSet directly and wait for the roll-out (protocols.md §3).

`restart` sends the strategic-merge patch `kubectl rollout restart` sends (the `restartedAt` annotation); `pin`
sets the named container's image to `repo@sha256:…` with a strategic-merge patch touching that container only.
The wait uses the strict predicate of §3.2 (observedGeneration, updated/ready replicas, current == update
revision, honouring `rollingUpdate.partition`); an `OnDelete` StatefulSet needs its pods deleted, which is done
one at a time in reverse ordinal order only when the action says `on_delete = "delete-pods"`. After the roll-out
every updated pod's `imageID` digest is compared with the expected one.
Receives its `kubernetes.client.ApiClient`; builds none. Kubernetes errors are mapped here, once.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Set
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from reconciler import errors, model

log = logging.getLogger(__name__)
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
FIELD_MANAGER = "reconciler"
SMP = "application/strategic-merge-patch+json"
CONFLICT_RETRIES = 3
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_VERBS = {"GET": "get", "PATCH": "patch", "DELETE": "delete", "LIST": "list"}


def running_digest(image_id: str | None) -> str | None:
    """The digest in a container's `imageID` (`docker.io/x/y@sha256:…`, `docker-pullable://…`), else None."""
    if not image_id:
        return None
    candidate = image_id.split("://", 1)[-1].rsplit("@", 1)[-1]
    return candidate if _DIGEST.match(candidate) else None


@dataclass(frozen=True, slots=True)
class Progress:
    """The roll-out as the predicate sees it; `done` only when every condition of §3.2 holds."""

    done: bool
    summary: str


def progress(sts: Mapping[str, Any], *, generation: int) -> Progress:
    """The §3.2 predicate on a StatefulSet as the API serves it (zero-valued status fields are omitted)."""
    spec, status = sts.get("spec") or {}, sts.get("status") or {}
    replicas = spec.get("replicas", 1)
    partition = _partition(sts)
    observed = status.get("observedGeneration") or 0
    updated = status.get("updatedReplicas") or 0
    ready = status.get("readyReplicas") or 0
    current, update = status.get("currentRevision"), status.get("updateRevision")
    summary = (
        f"generation {generation}, observed {observed}; {updated}/{replicas} updated, {ready}/{replicas} ready"
        f"{f', partition {partition}' if partition else ''}; revision {current} -> {update}"
    )
    done = (
        observed >= generation
        and updated >= replicas - partition
        and ready >= replicas
        # the controller completes a revision only for an unpartitioned RollingUpdate (completeRollingUpdate);
        # otherwise the pods' own revision labels are what tell (checked by the caller)
        and (partition > 0 or _strategy(sts) == "OnDelete" or current == update)
    )
    return Progress(done=done, summary=summary)


class StatefulSetActuator:
    """Carries out `kind = "statefulset"` actions."""

    def __init__(
        self,
        *,
        api: k8s.ApiClient,
        clock: Callable[[], datetime],
        sleep: Callable[[float], object] = time.sleep,
        poll: float = 5.0,
    ) -> None:
        self._api = api
        self._apps = k8s.AppsV1Api(api)
        self._core = k8s.CoreV1Api(api)
        self._host = str(api.configuration.host)
        self._clock = clock
        self._sleep = sleep
        self._poll = poll

    # --- requests -------------------------------------------------------------------------------------------
    @staticmethod
    def _path(spec: model.StatefulSetAction) -> str:
        return f"/apis/apps/v1/namespaces/{spec.namespace}/statefulsets/{spec.name}?fieldManager={FIELD_MANAGER}"

    def request(self, spec: model.StatefulSetAction, target: model.Target) -> dict[str, Any]:
        """The exact PATCH: path, content type and strategic-merge body. Nothing is sent."""
        if spec.mode is model.RolloutMode.PIN:
            image = f"{target.image}@{target.digest}"
            body: dict[str, Any] = {
                "spec": {"template": {"spec": {"containers": [{"name": spec.container, "image": image}]}}}
            }
        else:
            stamp = self._clock().strftime("%Y-%m-%dT%H:%M:%SZ")
            body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        return {"method": "PATCH", "path": self._path(spec), "content_type": SMP, "body": body}

    @staticmethod
    def mark(spec: model.StatefulSetAction, request: Mapping[str, Any], marker: str) -> dict[str, Any]:
        """The request as recorded: a patch needs no marker, since `find` recognises the patch itself."""
        return dict(request)

    # --- launch ---------------------------------------------------------------------------------------------
    def launch(self, spec: model.StatefulSetAction, request: Mapping[str, Any]) -> model.Launch:
        sts = self._read(spec)
        container = self._container(sts, spec)
        if _strategy(sts) == "OnDelete" and spec.on_delete is not model.OnDelete.DELETE_PODS:
            raise errors.KubeError(
                f"StatefulSet {spec.namespace}/{spec.name} uses the OnDelete update strategy: its pods must be "
                'deleted to pick up the change; set on_delete = "delete-pods" to let reconciler delete them'
            )
        note = None
        policy = container.get("imagePullPolicy")
        if spec.mode is model.RolloutMode.RESTART and policy != "Always":
            note = (
                f"warning: container {spec.container!r} has imagePullPolicy {policy}, "
                'so a restart may not pull the new digest; use mode = "pin" or imagePullPolicy Always'
            )
            log.warning("StatefulSet %s/%s: %s", spec.namespace, spec.name, note)
        for attempt in range(1, CONFLICT_RETRIES + 1):
            try:
                with self._mapped("patch", "statefulsets", spec):
                    patched = self._apps.patch_namespaced_stateful_set(
                        spec.name, spec.namespace, dict(request["body"]), field_manager=FIELD_MANAGER
                    )
                break
            except errors.KubeUnavailable as exc:  # the patch may have been applied: look before patching again
                raise errors.LaunchOutcomeUnknown(str(exc)) from None
            except errors.KubeConflict:
                if attempt == CONFLICT_RETRIES:
                    raise
                log.info("StatefulSet %s/%s: conflict on patch, trying again", spec.namespace, spec.name)
        generation = self._json(patched).get("metadata", {}).get("generation", 0)
        return model.Launch(ref=str(generation), link=None, note=note)

    def find(
        self, spec: model.StatefulSetAction, record: model.ActionRecord, *, exclude: Set[str] = frozenset()
    ) -> model.Launch | None:
        """Whether our recorded patch is already on the StatefulSet (the process stopped before recording it)."""
        body = (record.request or {}).get("body")
        if not isinstance(body, dict):
            return None
        sts = self._read(spec)
        template = sts["spec"]["template"]
        if spec.mode is model.RolloutMode.PIN:
            wanted = body["spec"]["template"]["spec"]["containers"][0]["image"]
            applied = self._container(sts, spec).get("image") == wanted
        else:
            wanted = body["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
            applied = ((template.get("metadata") or {}).get("annotations") or {}).get(RESTARTED_AT) == wanted
        if not applied:
            return None
        return model.Launch(ref=str(sts["metadata"].get("generation", 0)), link=None)

    # --- wait -----------------------------------------------------------------------------------------------
    def wait(
        self, spec: model.StatefulSetAction, record: model.ActionRecord, *, keep_alive: Callable[[], None]
    ) -> model.Finish:
        generation = int(record.external_ref or 0)
        deadline = (record.launched_at or self._clock()) + spec.timeout
        last = "not read yet"
        while True:
            try:
                sts = self._read(spec)
                if _strategy(sts) == "OnDelete":
                    self._delete_next_stale_pod(spec, sts)
                state = progress(sts, generation=generation)
                last = state.summary
                if state.done and self._pods_current(spec, sts):
                    return self._verify(spec, sts, record)
            except errors.KubeUnavailable as exc:  # a blip of the API server is not the roll-out failing
                log.warning("StatefulSet %s/%s: %s", spec.namespace, spec.name, exc)
                last = str(exc)
            if self._clock() >= deadline:
                return model.Finish(
                    False,
                    f"roll-out of StatefulSet {spec.namespace}/{spec.name} did not finish "
                    f"within {spec.timeout}: {last}",
                )
            keep_alive()
            self._sleep(self._poll)

    def _delete_next_stale_pod(self, spec: model.StatefulSetAction, sts: Mapping[str, Any]) -> None:
        """OnDelete: delete the highest-ordinal pod still at the old revision, once the others are ready."""
        update = (sts.get("status") or {}).get("updateRevision")
        pods = self._pods(spec, sts)
        replicas = (sts.get("spec") or {}).get("replicas", 1)
        if len(pods) < replicas or any(not _ready(p) or p["metadata"].get("deletionTimestamp") for p in pods):
            return  # one at a time: wait for the last deleted pod to come back ready
        stale = [p for p in pods if _revision(p) != update]
        if not stale:
            return
        victim = max(stale, key=_ordinal)["metadata"]["name"]
        log.info("StatefulSet %s/%s: deleting pod %s (OnDelete)", spec.namespace, spec.name, victim)
        with self._mapped("delete", "pods", spec):
            self._core.delete_namespaced_pod(victim, spec.namespace)

    def _pods_current(self, spec: model.StatefulSetAction, sts: Mapping[str, Any]) -> bool:
        """Every pod the roll-out updates is at the update revision, Ready, and not being deleted."""
        update = (sts.get("status") or {}).get("updateRevision")
        partition = _partition(sts)
        return all(
            _revision(p) == update and _ready(p) and not p["metadata"].get("deletionTimestamp")
            for p in self._pods(spec, sts)
            if _ordinal(p) >= partition
        )

    def _verify(
        self, spec: model.StatefulSetAction, sts: Mapping[str, Any], record: model.ActionRecord
    ) -> model.Finish:
        """Every updated pod must run the expected digest in the named container."""
        partition = _partition(sts)
        pods = [p for p in self._pods(spec, sts) if _ordinal(p) >= partition]
        wrong, unknown = [], []
        for pod in pods:
            name = pod["metadata"]["name"]
            statuses = [
                c for c in (pod.get("status") or {}).get("containerStatuses") or [] if c.get("name") == spec.container
            ]
            digest = running_digest(statuses[0].get("imageID")) if statuses else None
            if digest is None:
                unknown.append(name)
            elif digest != record.digest:
                wrong.append(f"{name} runs {digest}")
        if wrong or unknown:
            parts = wrong + ([f"{', '.join(unknown)}: digest unknown"] if unknown else [])
            return model.Finish(
                False,
                f"roll-out of {spec.namespace}/{spec.name} finished but not on {record.digest}: {'; '.join(parts)}",
            )
        names = ", ".join(p["metadata"]["name"] for p in pods)
        return model.Finish(True, f"rolled out: {names} run {record.digest}")

    # --- reads and error mapping ----------------------------------------------------------------------------
    def _json(self, obj: object) -> dict[str, Any]:
        """A client model as the API serves it (camelCase JSON): one shape to read, with absent zeros absent."""
        serialized = self._api.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
        return serialized if isinstance(serialized, dict) else {}

    def _read(self, spec: model.StatefulSetAction) -> dict[str, Any]:
        """The StatefulSet as the API serves it (camelCase JSON), read through the typed client."""
        with self._mapped("get", "statefulsets", spec):
            sts = self._apps.read_namespaced_stateful_set(spec.name, spec.namespace)
        return self._json(sts)

    def _pods(self, spec: model.StatefulSetAction, sts: Mapping[str, Any]) -> list[dict[str, Any]]:
        labels = ((sts.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        with self._mapped("list", "pods", spec):
            listed = self._core.list_namespaced_pod(spec.namespace, label_selector=selector)
        pods: list[dict[str, Any]] = self._json(listed).get("items") or []
        owned = [
            p
            for p in pods
            if any(
                o.get("kind") == "StatefulSet" and o.get("name") == spec.name
                for o in p["metadata"].get("ownerReferences") or []
            )
        ]
        return sorted(owned, key=_ordinal)

    @staticmethod
    def _container(sts: Mapping[str, Any], spec: model.StatefulSetAction) -> dict[str, Any]:
        containers: list[dict[str, Any]] = sts["spec"]["template"]["spec"]["containers"]
        for container in containers:
            if container.get("name") == spec.container:
                return container
        names = ", ".join(str(c.get("name")) for c in containers)
        raise errors.KubeError(
            f"StatefulSet {spec.namespace}/{spec.name} has no container {spec.container!r} (it has: {names})"
        )

    @contextmanager
    def _mapped(self, verb: str, resource: str, spec: model.StatefulSetAction) -> Iterator[None]:
        where = f"{resource} in namespace {spec.namespace}"
        try:
            yield
        except ApiException as exc:
            message = _status_message(exc)
            group = "apps" if resource == "statefulsets" else '"" (core)'
            if exc.status == 403:
                raise errors.KubeError(
                    f"Kubernetes forbids {verb} on {where} (403): grant the ServiceAccount the "
                    f"{verb!r} verb on {resource} in API group {group} ({message})"
                ) from None
            if exc.status == 404:
                raise errors.KubeError(f"StatefulSet {spec.namespace}/{spec.name} not found (404): {message}") from None
            if exc.status == 409:
                raise errors.KubeConflict(f"Kubernetes reported a conflict on {where} (409): {message}") from None
            if exc.status == 422:
                raise errors.KubeError(f"Kubernetes rejected the {verb} of {where} (422): {message}") from None
            if exc.status == 401:
                raise errors.KubeError(f"Kubernetes refused the credentials at {self._host} (401)") from None
            error = errors.KubeUnavailable if (exc.status or 0) >= 500 else errors.KubeError
            raise error(f"Kubernetes answered {exc.status} to {verb} on {where}: {message}") from None
        except (HTTPError, OSError) as exc:
            raise errors.KubeUnavailable(
                f"cannot reach the Kubernetes API at {self._host}: {type(exc).__name__}"
            ) from None


def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
        return str(body.get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason or "no details")


def _partition(sts: Mapping[str, Any]) -> int:
    strategy = (sts.get("spec") or {}).get("updateStrategy") or {}
    return int((strategy.get("rollingUpdate") or {}).get("partition") or 0)


def _strategy(sts: Mapping[str, Any]) -> str:
    return str(((sts.get("spec") or {}).get("updateStrategy") or {}).get("type") or "RollingUpdate")


def _revision(pod: Mapping[str, Any]) -> str | None:
    labels: Mapping[str, str] = pod["metadata"].get("labels") or {}
    return labels.get("controller-revision-hash")


def _ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _ordinal(pod: Mapping[str, Any]) -> int:
    tail = str(pod["metadata"].get("name", "")).rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1

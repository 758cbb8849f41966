"""The pure side of a StatefulSet roll-out: the shape a served StatefulSet or pod list must
have to be read, when a roll-out is done, which pod to delete next under `OnDelete`, and what each pod's `imageID`
says about the digest it runs.

Reads objects as the API serves them (camelCase JSON, zero-valued status fields omitted); no I/O, no clock, no
logging — `kube.py` reads the objects and acts. `statefulset` and `pods` check an answer once, where it is read, so
the functions after them read a field without guarding its type; anything served that a message shows goes through
`shown`, to keep the message on one line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from reconciler import model

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_ORDINAL = re.compile(r"[0-9]{1,10}")  # ASCII: '²'.isdigit() is true and int('²') fails; an ordinal is an int32


class Unreadable(ValueError):
    """A served object lacks a field the roll-out reads, or has it with another type; the message names the field."""


@dataclass(frozen=True, slots=True)
class _Required:
    shape: object


@dataclass(frozen=True, slots=True)
class _MapOf:
    value: object


# What the roll-out reads of each object: a dict lists the fields of an object (absent, or null, unless _Required),
# a one-item list the shape of every item, _MapOf the values of a map. The API server always sends the _Required
# ones (a StatefulSet's generation starts at 1; the pydantic models of kubernetes 37 require the rest).
_TEXTS = _MapOf(str)  # labels, annotations, matchLabels
_STATEFULSET = {
    "metadata": _Required({"generation": _Required(int)}),
    "spec": _Required(
        {
            "replicas": int,
            "selector": {"matchLabels": _TEXTS},
            "updateStrategy": {"type": str, "rollingUpdate": {"partition": int}},
            "template": _Required(
                {
                    "metadata": {"annotations": _TEXTS},
                    "spec": _Required({"containers": _Required([{"name": _Required(str), "image": str,
                                                                 "imagePullPolicy": str}])}),
                }
            ),
        }
    ),
    "status": {"observedGeneration": int, "readyReplicas": int, "updatedReplicas": int, "currentRevision": str,
               "updateRevision": str},
}  # fmt: skip
_POD_LIST = {
    "items": _Required(
        [
            {
                "metadata": _Required({"name": _Required(str), "labels": _TEXTS, "deletionTimestamp": str,
                                       "ownerReferences": [{"kind": str, "name": str}]}),
                "status": {"conditions": [{"type": str, "status": str}],
                           "containerStatuses": [{"name": str, "imageID": str}]},
            }
        ]
    )
}  # fmt: skip


def statefulset(served: object) -> dict[str, Any]:
    """`served` if the roll-out can read it as a StatefulSet; else Unreadable, naming the first field it cannot."""
    _check(served, _STATEFULSET, "")
    return cast(dict[str, Any], served)


def pods(served: object) -> list[dict[str, Any]]:
    """The items of a served PodList if the roll-out can read every pod; else Unreadable, naming the field."""
    _check(served, _POD_LIST, "")
    return cast(list[dict[str, Any]], cast(dict[str, Any], served)["items"])


def generation(sts: Mapping[str, Any]) -> int:
    return int(sts["metadata"]["generation"])


def _check(value: object, shape: object, path: str) -> None:
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            raise Unreadable(f"{path or 'the answer'} is {_kind(value)}, not an object")
        for key, inner in shape.items():
            where = f"{path}.{key}" if path else key
            item = value.get(key)
            if item is None:  # null is absent, as the API's omitempty and the client's models have it
                if isinstance(inner, _Required):
                    raise Unreadable(f"{where} is missing")
                continue
            _check(item, inner.shape if isinstance(inner, _Required) else inner, where)
    elif isinstance(shape, list):
        if not isinstance(value, list):
            raise Unreadable(f"{path} is {_kind(value)}, not a list")
        for index, item in enumerate(value):
            _check(item, shape[0], f"{path}[{index}]")
    elif isinstance(shape, _MapOf):
        if not isinstance(value, dict):
            raise Unreadable(f"{path} is {_kind(value)}, not an object")
        for key, item in value.items():
            _check(item, shape.value, f"{path}[{shown(key)}]")
    elif shape is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise Unreadable(f"{path} is {_kind(value)}, not an integer")
    elif not isinstance(value, str):
        raise Unreadable(f"{path} is {_kind(value)}, not a string")


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object" if isinstance(value, dict) else type(value).__name__


def shown(text: object) -> str:
    """Served text as a message shows it: as is if printable, else quoted with escapes (so on one line)."""
    value = str(text)
    return value if value.isprintable() else repr(value)


@dataclass(frozen=True, slots=True)
class Progress:
    """The roll-out as the predicate sees it; `done` only when every condition of `progress` holds."""

    done: bool
    summary: str


@dataclass(frozen=True, slots=True)
class RunningDigest:
    """What a container's `imageID` tells: the repository (manifest) digest it runs, or why that cannot be known."""

    digest: str | None
    unknown: str = ""


def progress(sts: Mapping[str, Any], *, generation: int) -> Progress:
    """The roll-out predicate on a StatefulSet as the API serves it (zero-valued status fields are omitted):
    kubectl's `rollout status` for StatefulSets (pkg/polymorphichelpers/rollout_status.go), made stricter."""
    spec, status = sts.get("spec") or {}, sts.get("status") or {}
    replicas = spec.get("replicas", 1)
    part = partition(sts)
    observed = status.get("observedGeneration") or 0
    updated = status.get("updatedReplicas") or 0
    ready = status.get("readyReplicas") or 0
    current, update = status.get("currentRevision"), status.get("updateRevision")
    summary = (
        f"generation {generation}, observed {observed}; {updated}/{replicas} updated, {ready}/{replicas} ready"
        f"{f', partition {part}' if part else ''}; revision {shown(current)} -> {shown(update)}"
    )
    done = (
        observed >= generation
        and updated >= replicas - part
        and ready >= replicas
        # the controller completes a revision only for an unpartitioned RollingUpdate (completeRollingUpdate);
        # otherwise the pods' own revision labels are what tell (pods_current)
        and (part > 0 or strategy(sts) == "OnDelete" or current == update)
    )
    return Progress(done=done, summary=summary)


def owned(pods: Iterable[Mapping[str, Any]], name: str) -> list[dict[str, Any]]:
    """The pods whose ownerReference is the StatefulSet `name` (a selector may match other workloads), by ordinal."""
    mine = [
        dict(p)
        for p in pods
        if any(
            o.get("kind") == "StatefulSet" and o.get("name") == name for o in p["metadata"].get("ownerReferences") or []
        )
    ]
    return sorted(mine, key=ordinal)


def next_to_delete(sts: Mapping[str, Any], pods: list[dict[str, Any]]) -> str | None:
    """OnDelete: the highest-ordinal pod still at an old revision, once every pod is back and ready; else None."""
    update = (sts.get("status") or {}).get("updateRevision")
    replicas = (sts.get("spec") or {}).get("replicas", 1)
    if len(pods) < replicas or any(not ready(p) or p["metadata"].get("deletionTimestamp") for p in pods):
        return None  # one at a time: wait for the last deleted pod to come back ready
    stale = [p for p in pods if revision(p) != update]
    return str(max(stale, key=ordinal)["metadata"]["name"]) if stale else None


def pods_current(sts: Mapping[str, Any], pods: list[dict[str, Any]]) -> bool:
    """Every pod the roll-out updates is at the update revision, Ready, and not being deleted."""
    update = (sts.get("status") or {}).get("updateRevision")
    return all(
        revision(p) == update and ready(p) and not p["metadata"].get("deletionTimestamp") for p in updated(sts, pods)
    )


def updated(sts: Mapping[str, Any], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pods a roll-out replaces: ordinals at or above the partition."""
    part = partition(sts)
    return [p for p in pods if ordinal(p) >= part]


def running_digest(image_id: str | None) -> RunningDigest:
    """The digest in a container's `imageID` (`docker.io/x/y@sha256:…`, `docker-pullable://x/y@sha256:…`).

    containerd reports the image's first repository digest, and falls back to the image's *config* digest (a bare
    `sha256:…`, no repository) when the image has none — an image imported by hand or with `kind load`
    (containerd internal/cri/server/container_status.go: `imageRef := container.ImageRef`, replaced by
    `repoDigests[0]` only `if len(repoDigests) > 0`). A config digest is never the manifest
    digest the registry serves, so it says nothing about which manifest runs: unknown, not "another digest".
    """
    if not image_id:
        return RunningDigest(None, "no imageID reported yet")
    ref = image_id.split("://", 1)[-1]
    repo, at, digest = ref.rpartition("@")
    if at and repo and _DIGEST.match(digest):
        return RunningDigest(digest)
    if _DIGEST.match(ref):
        return RunningDigest(
            None,
            f"its imageID {ref} is the image's config digest, not a registry digest: the node holds the image without"
            " a repository digest (loaded by hand or with `kind load`, not pulled)",
        )
    return RunningDigest(None, f"its imageID {image_id!r} shows no sha256 digest")


def verify(
    sts: Mapping[str, Any], pods: list[dict[str, Any]], *, container: str, expected: str, where: str
) -> model.Finish:
    """Every updated pod must run `expected` in `container`; the detail names each pod that does not, and why."""
    checked = updated(sts, pods)
    wrong: list[str] = []
    unknown: dict[str, list[str]] = {}  # why -> pods
    for pod in checked:
        name = shown(pod["metadata"]["name"])
        statuses = [c for c in (pod.get("status") or {}).get("containerStatuses") or [] if c.get("name") == container]
        seen = running_digest(statuses[0].get("imageID")) if statuses else RunningDigest(None, "no such container")
        if seen.digest is None:
            unknown.setdefault(seen.unknown, []).append(name)
        elif seen.digest != expected:
            wrong.append(f"{name} runs {seen.digest}")
    if not wrong and not unknown:
        return model.Finish(
            True, f"rolled out: {', '.join(shown(p['metadata']['name']) for p in checked)} run {expected}"
        )
    parts = wrong + [f"{', '.join(names)}: digest cannot be verified: {why}" for why, names in unknown.items()]
    head = f"not on {expected}" if wrong else f"running {expected} cannot be verified"
    return model.Finish(False, f"roll-out of {where} finished but {head}: {'; '.join(parts)}")


def partition(sts: Mapping[str, Any]) -> int:
    rolling = ((sts.get("spec") or {}).get("updateStrategy") or {}).get("rollingUpdate") or {}
    return int(rolling.get("partition") or 0)


def strategy(sts: Mapping[str, Any]) -> str:
    return str(((sts.get("spec") or {}).get("updateStrategy") or {}).get("type") or "RollingUpdate")


def revision(pod: Mapping[str, Any]) -> str | None:
    labels: Mapping[str, str] = pod["metadata"].get("labels") or {}
    return labels.get("controller-revision-hash")


def ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def ordinal(pod: Mapping[str, Any]) -> int:
    """`stack-2` → 2; -1 for a name without an ordinal."""
    tail = str(pod["metadata"].get("name", "")).rsplit("-", 1)[-1]
    return int(tail) if _ORDINAL.fullmatch(tail) else -1

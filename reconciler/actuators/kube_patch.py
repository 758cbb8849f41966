"""The PATCH a StatefulSet action sends, and how to tell it is on a served StatefulSet.

`restart` sends the strategic-merge patch `kubectl rollout restart` sends (the `restartedAt` annotation); `pin`
sets the named container's image to `repo@sha256:…` with a strategic-merge patch touching that container only.
The body says which patch it is, so a recorded one is recognised by itself (`applied`), whatever the watch's
`mode` is now. No I/O: `kube.py` sends the patch and reads the StatefulSet.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from reconciler import errors, model
from reconciler.actuators import rollout

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
FIELD_MANAGER = "reconciler"
SMP = "application/strategic-merge-patch+json"


def path(spec: model.StatefulSetAction) -> str:
    return f"/apis/apps/v1/namespaces/{spec.namespace}/statefulsets/{spec.name}?fieldManager={FIELD_MANAGER}"


def request(spec: model.StatefulSetAction, target: model.Target, *, clock: Callable[[], datetime]) -> dict[str, Any]:
    """The exact PATCH: path, content type and strategic-merge body. Nothing is sent."""
    if spec.mode is model.RolloutMode.PIN:
        image = f"{target.image}@{target.digest}"
        body: dict[str, Any] = {
            "spec": {"template": {"spec": {"containers": [{"name": spec.container, "image": image}]}}}
        }
    else:
        stamp = clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
    return {"method": "PATCH", "path": path(spec), "content_type": SMP, "body": body}


def applied(sts: Mapping[str, Any], spec: model.StatefulSetAction, body: Mapping[str, Any]) -> bool:
    """Whether the patch `body` is on the StatefulSet `sts`. The body says which patch it is (the watch's `mode`
    may have changed since it was recorded); one of another shape was never ours."""
    template = sts["spec"]["template"]
    try:
        patched = body["spec"]["template"]
        if "spec" in patched:
            wanted = patched["spec"]["containers"][0]["image"]
            on: bool = container(sts, spec).get("image") == wanted
        else:
            wanted = patched["metadata"]["annotations"][RESTARTED_AT]
            on = ((template.get("metadata") or {}).get("annotations") or {}).get(RESTARTED_AT) == wanted
    except (KeyError, IndexError, TypeError):
        return False
    return on


def container(sts: Mapping[str, Any], spec: model.StatefulSetAction) -> dict[str, Any]:
    """The action's container in the StatefulSet's pod template; a KubeError naming the ones it has if none."""
    containers: list[dict[str, Any]] = sts["spec"]["template"]["spec"]["containers"]
    for found in containers:
        if found.get("name") == spec.container:
            return found
    names = ", ".join(rollout.shown(c.get("name")) for c in containers)
    raise errors.KubeError(
        f"StatefulSet {spec.namespace}/{spec.name} has no container {spec.container!r} (it has: {names})"
    )

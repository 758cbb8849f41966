"""A stateful fake Kubernetes API server (StatefulSets, Pods, Leases), in-process on 127.0.0.1, over real HTTP.

Faithful to the Kubernetes API server's sources (where they disagree, this file is wrong), for the real
`kubernetes` 37.x client:
* Client: `Authorization: Bearer <token>` else the 401 Status; every field the pydantic models require is sent
  (`spec.selector`/`template`, `status.replicas`, containerStatus `name/ready/restartCount/image/imageID`, condition
  `type/status`, `items`); dict bodies arrive as strategic-merge patches, lists as JSON Patch.
* Objects: StatefulSet shape; `status.replicas`/`availableReplicas` always sent, the other status ints/strings omitted
  when zero (omitempty); a PATCH returns the whole object, bumps `metadata.generation` only when `spec` changes
  (`status.observedGeneration` waits for the controller) and `resourceVersion` on any change (not on a no-op).
  Status errors with the errors.go message templates: NotFound/Forbidden/Conflict/AlreadyExists `details.kind` is the
  plural resource, Invalid uses the Kind; `details` leaves out empty fields (omitempty: no `group` for pods); the 403
  wording for the ServiceAccount `system:serviceaccount:<ns>:watcher`; the 422 text for spec fields other than
  replicas/template/updateStrategy/minReadySeconds/persistentVolumeClaimRetentionPolicy/ordinals.
* Pods: labels `controller-revision-hash`, `statefulset.kubernetes.io/pod-name`, `apps.kubernetes.io/pod-index`,
  the StatefulSet ownerReference; `imageID` = `docker.io/<repo>@<digest>` (containerd), `image` echoes the spec.
* Pods: the controller (played by the test via `controller_step`) replaces pods one at a time, highest ordinal first,
  only ordinals >= `rollingUpdate.partition`, OrderedReady (waits for each pod to be ready, creates missing pods in
  ascending order), and sets currentRevision = updateRevision only by completeRollingUpdate (RollingUpdate and
  updatedReplicas == replicas == readyReplicas, so never while partitioned). Missing pods are recreated at the revision
  newVersionedStatefulSetPod picks (below the partition: the current revision). OnDelete replaces deleted pods only.
  Revision names are `<name>-<SafeEncodeString(FNV-1 32 of the template)>`, like HashControllerRevision.
Routes (anything else under them → 405 "fake Kubernetes does not model …"): /apis/apps/v1/namespaces/{ns}/statefulsets
GET, …/{name} and …/{name}/status GET PATCH; /api/v1/namespaces/{ns}/pods GET (?labelSelector), …/{name} GET DELETE;
/apis/coordination.k8s.io/v1/namespaces/{ns}/leases GET POST, …/{name} GET PUT (409 AlreadyExists, stale
resourceVersion → 409 Conflict, no resourceVersion → unconditional). Order: hook, fault, 401, 404 route, 403, handler,
fault `after`. DELETE of a pod that is gone: 404 `pods "<name>" not found` for the pod (the registry store's Delete,
apiserver storage/errors InterpretDeleteError → NewNotFound(qualifiedResource, name)).
Misbehaviour (`fail_next`), as the real API server sends it:
* 429 from the overload filters (max-in-flight and priority-and-fairness both call `tooManyRequests`, apiserver
  server/filters/maxinflight.go): NOT a Status but Go's `http.Error` — `text/plain; charset=utf-8`,
  `X-Content-Type-Options: nosniff`, body "Too many requests, please try again later.\n" — with `Retry-After: 1`
  (the filter's constant); priority-and-fairness adds the X-Kubernetes-PF-FlowSchema-UID / -PriorityLevel-UID headers.
  The request was not processed.
* 504 from the timeout filter (server/filters/timeout.go): `NewTimeoutError("request did not complete within the
  allotted timeout", 0)` JSON-encoded without kind/apiVersion (ErrStatus has no TypeMeta) and no Content-Type, so Go
  sniffs text/plain; the handler goes on after it ("post-timeout activity"), so with `after=True` the PATCH is applied.
* `after=True`: the request is processed (a PATCH applied and recorded) and then answered with the fault; status 0:
  the connection is closed without an answer (a dropped connection; urllib3 re-sends a GET itself, not a PATCH).
* `side_load`: containerd reports the image's config digest, bare, as imageID when the image has no repository digest
  (imported by hand, `kind load`): internal/cri/server/container_status.go keeps `container.ImageRef` unless
  `len(repoDigests) > 0`.
Assumed: the mutable spec fields are the brief's (newer servers also allow revisionHistoryLimit and list all of them
in a longer 422 text); one controller step = one sync doing one thing (observe the generation; create, replace or
remove one pod; or start one pod), a replacement's delete and re-create being one step; a new pod is
Pending/ContainerCreating with `imageID: ""`, then Running+Ready; a stalled pod goes to CrashLoopBackOff (Running, not
ready) and stays; minReadySeconds counts as 0; a deleted pod comes back with `deletionTimestamp` and is gone at once
(grace period elapsed); the spec is not defaulted (partition=None leaves `rollingUpdate` out, as an old server did);
bad JSON → 400; JSON Patch apply errors → 422 "the server rejected our request…" with the error as a cause; a list
item without its merge key → 500; 415 lists the four patch types; unknown paths → 404 Status "the server could not
find the requested resource"; Lease MicroTimes normalised to RFC 3339 with microseconds and Z.
Not modelled, answered 400/405 saying so: server-side apply, `dryRun`, `watch`, set-based label selectors, JSON Patch
move/copy, SMP directives other than `$patch` replace/delete and `$setElementOrder` (ignored); not modelled at all:
template/selector validation, ControllerRevision objects, managedFields, pod deletion grace periods.
Controls: add_statefulset, set_image_digest, side_load, controller_step, settle, stall, recreate_pod, delete_pod,
forbid, conflict_next, fail_next, before_next, clock; recorded: requests, patches; views: statefulset(), pods(), leases.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

from kubernetes import client

from tests.support.loopback import LoopbackServer

SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"
GROUPS = {"statefulsets": "apps", "pods": "", "leases": "coordination.k8s.io"}
KINDS = {"statefulsets": "StatefulSet", "pods": "Pod", "leases": "Lease"}
OMITEMPTY = ("observedGeneration", "readyReplicas", "currentReplicas", "updatedReplicas", "currentRevision",
             "updateRevision", "collisionCount", "conditions")  # fmt: skip
MUTABLE_SPEC = frozenset({"replicas", "template", "updateStrategy", "minReadySeconds",
                          "persistentVolumeClaimRetentionPolicy", "ordinals"})  # fmt: skip
SPEC_FORBIDDEN = (
    "Forbidden: updates to statefulset spec for fields other than 'replicas', 'template', and 'updateStrategy' are "
    "forbidden"
)
MERGE_KEYS = {"containers": "name", "initContainers": "name", "ephemeralContainers": "name", "env": "name",
              "volumes": "name", "imagePullSecrets": "name", "volumeMounts": "mountPath",
              "ports": "containerPort"}  # fmt: skip # patchMergeKey of these core/v1 PodSpec lists
REVISION_LABEL = "controller-revision-hash"
_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery rand.SafeEncodeString
_ROUTE = re.compile(r"^/(api/v1|apis/apps/v1|apis/coordination\.k8s\.io/v1)/namespaces/([a-z0-9.-]+)/([a-z]+)"
                    r"(?:/([^/]+)(?:/([a-z]+))?)?$")  # fmt: skip
_VERBS = {"GET": "get", "PATCH": "patch", "PUT": "update", "POST": "create", "DELETE": "delete"}
_FAULT_REASONS = {500: "InternalError", 503: "ServiceUnavailable", 429: "TooManyRequests", 504: "Timeout"}
OVERLOADED = "Too many requests, please try again later."  # apiserver server/filters/maxinflight.go tooManyRequests
TIMED_OUT = "Timeout: request did not complete within the allotted timeout"  # server/filters/timeout.go


class Recorded(NamedTuple):
    method: str
    path: str  # with the query string
    headers: dict[str, str]  # keys lower-cased
    body: bytes


class Patch(NamedTuple):
    path: str
    content_type: str
    body: Any  # parsed JSON
    field_manager: str | None


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class _Http(Exception):
    def __init__(self, status: int, payload: Mapping[str, Any]) -> None:
        super().__init__(status)
        self.reply = _json(status, payload)


@dataclass
class _Fault:
    count: int
    status: int
    body: Any
    resource: str | None
    method: str | None = None
    after: bool = False
    retry_after: str | None = None


@dataclass
class _Hook:
    method: str
    resource: str
    action: Callable[[], object]


@dataclass
class _Set:
    obj: dict[str, Any]
    revisions: dict[str, dict[str, Any]]  # revision name -> its pod template (the ControllerRevision data)
    digests: dict[str, str]  # container name -> digest the registry serves for its (unpinned) image now
    stalled: bool = False
    side_loaded: dict[str, str] = field(default_factory=dict)  # container name -> config digest (no repo digest)


def _json(status: int, payload: object) -> _Reply:
    headers = {"Content-Type": "application/json", "Cache-Control": "no-cache, private", "Audit-Id": str(uuid.uuid4())}
    return _Reply(status, json.dumps(payload).encode(), headers)


def status_body(code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A metav1.Status failure; `details` keeps only non-empty fields (omitempty)."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason}  # fmt: skip
    if details is not None:
        body["details"] = {k: v for k, v in details.items() if v not in ("", None, [])}
    return body | {"code": code}


def _qualified(resource: str) -> str:
    return f"{resource}.{GROUPS[resource]}" if GROUPS[resource] else resource


def _error(code: int, reason: str, resource: str, name: str, message: str) -> _Http:
    return _Http(code, status_body(code, reason, message, {"name": name, "group": GROUPS[resource], "kind": resource}))


def not_found(resource: str, name: str) -> _Http:
    return _error(404, "NotFound", resource, name, f'{_qualified(resource)} "{name}" not found')


def conflict(resource: str, name: str) -> _Http:
    why = "the object has been modified; please apply your changes to the latest version and try again"
    message = f'Operation cannot be fulfilled on {_qualified(resource)} "{name}": {why}'
    return _error(409, "Conflict", resource, name, message)


def _invalid(resource: str, name: str, causes: list[tuple[str, str, str]]) -> _Http:
    """causes: (field, reason type, ErrorBody) as field.Error; message like ErrorList.ToAggregate()."""
    texts = [f"{f}: {body}" for f, _, body in causes]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    kind = f"{KINDS[resource]}.{GROUPS[resource]}" if GROUPS[resource] else KINDS[resource]
    details = {"name": name, "group": GROUPS[resource], "kind": KINDS[resource],
               "causes": [{"reason": r, "message": b, "field": f} for f, r, b in causes]}  # fmt: skip
    return _Http(422, status_body(422, "Invalid", f'{kind} "{name}" is invalid: {joined}', details))


def _bad_request(message: str) -> _Http:
    return _Http(400, status_body(400, "BadRequest", message))


def _sha(value: object) -> str:
    return "sha256:" + hashlib.sha256(str(value).encode()).hexdigest()


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def revision_name(set_name: str, template: Mapping[str, Any]) -> str:
    """`<name>-<hash>`: FNV-1 32 of the template, decimal, through SafeEncodeString, as HashControllerRevision."""
    value = 0x811C9DC5
    for byte in json.dumps(template, sort_keys=True, separators=(",", ":")).encode():
        value = ((value * 0x01000193) & 0xFFFFFFFF) ^ byte
    return f"{set_name}-" + "".join(_SAFE[ord(c) % len(_SAFE)] for c in str(value))


def image_repo(image: str) -> str:
    """The fully qualified repository of an image reference, as containerd reports it in imageID."""
    ref = image.split("@", 1)[0]
    if ":" in ref.rsplit("/", 1)[-1]:
        ref = ref[: ref.rfind(":")]
    parts = ref.split("/")
    if len(parts) == 1:
        return f"docker.io/library/{ref}"
    if "." in parts[0] or ":" in parts[0] or parts[0] == "localhost":
        return ref
    return f"docker.io/{ref}"


def _merge(target: Any, patch: Any, strategic: bool) -> Any:
    """RFC 7386 merge patch; `strategic` adds lists merged by key (MERGE_KEYS) and the `$patch` directives."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if strategic and patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if strategic and key.startswith("$setElementOrder/"):
            continue  # ordering hint only
        if strategic and key.startswith("$"):
            raise _bad_request(f"fake Kubernetes does not model the strategic merge directive {key!r}")
        if value is None:
            out.pop(key, None)
        elif strategic and key in MERGE_KEYS and isinstance(value, list):
            before = out.get(key)
            out[key] = _merge_list(before if isinstance(before, list) else [], value, MERGE_KEYS[key])
        else:
            out[key] = _merge(out.get(key), value, strategic)
    return out


def _merge_list(original: list[Any], patch: list[Any], key: str) -> list[Any]:
    out = copy.deepcopy(original)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            message = f"map: {item} does not contain declared merge key: {key}"
            raise _Http(500, status_body(500, "InternalError", message, {}))
        at = next((i for i, old in enumerate(out) if isinstance(old, dict) and old.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if at is not None:
                del out[at]
        elif at is not None:
            out[at] = _merge(out[at], item, True)
        else:
            out.append(_merge({}, item, True))
    return out


def _json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 add/remove/replace/test; errors as ValueError (the caller makes them a 422)."""
    if not isinstance(ops, list):
        raise _bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(doc)
    for op in ops:
        kind, path = (op.get("op"), op.get("path")) if isinstance(op, dict) else (None, None)
        if kind in ("move", "copy"):
            raise _bad_request(f"fake Kubernetes does not model JSON Patch {kind!r}")
        if kind not in ("add", "remove", "replace", "test") or not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"Unexpected kind: {kind}" if isinstance(path, str) else "missing path")
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
        parent = doc
        for part in parents:
            try:
                parent = parent[int(part)] if isinstance(parent, list) else parent[part]
            except (KeyError, IndexError, ValueError, TypeError):
                raise ValueError(f"{kind} operation does not apply: doc is missing path: {path!r}") from None
        if not isinstance(parent, dict | list):
            raise ValueError(f"{kind} operation does not apply: doc is missing path: {path!r}")
        exists = (last in parent) if isinstance(parent, dict) else last.isdigit() and int(last) < len(parent)
        if kind != "add" and not exists:
            raise ValueError(f"{kind} operation does not apply: doc is missing path: {path!r}")
        index: Any = last if isinstance(parent, dict) else (len(parent) if last == "-" else int(last))
        if kind == "test" and parent[index] != op.get("value"):
            raise ValueError(f"testing value {path} failed: test failed")
        if kind == "remove":
            del parent[index]
        elif kind == "replace" or (kind == "add" and isinstance(parent, dict)):
            parent[index] = copy.deepcopy(op.get("value"))
        elif isinstance(parent, list):
            parent.insert(index, copy.deepcopy(op.get("value")))
    return doc


def _ready(pod: Mapping[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def _selector(raw: str) -> list[tuple[str, str, str | None]]:
    """Equality-based label selector terms (key, op, value); op is = != exists !exists."""
    if "(" in raw:
        raise _bad_request(f"fake Kubernetes does not model set-based label selectors: {raw!r}")
    terms: list[tuple[str, str, str | None]] = []
    for term in filter(None, (t.strip() for t in raw.split(","))):
        if m := re.fullmatch(r"([\w./-]+)\s*(==|=|!=)\s*([\w.-]*)", term):
            terms.append((m[1], "!=" if m[2] == "!=" else "=", m[3]))
        elif m := re.fullmatch(r"(!?)([\w./-]+)", term):
            terms.append((m[2], "!exists" if m[1] else "exists", None))
        else:
            raise _bad_request(f"unable to parse requirement: {term!r}")
    return terms


def _matches(labels: Mapping[str, str], terms: list[tuple[str, str, str | None]]) -> bool:
    checks: dict[str, Callable[[str, str | None], bool]] = {
        "=": lambda k, v: labels.get(k) == v, "!=": lambda k, v: labels.get(k) != v,
        "exists": lambda k, v: k in labels, "!exists": lambda k, v: k not in labels,
    }  # fmt: skip
    return all(checks[op](key, value) for key, op, value in terms)


class FakeKube:
    """apps/v1 StatefulSets, core/v1 Pods, coordination.k8s.io/v1 Leases; the StatefulSet controller is the test."""

    def __init__(self, *, token: str = "kube-test-token") -> None:
        self.token = token
        self.base = ""
        self.lock = threading.RLock()
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.requests: list[Recorded] = []
        self.patches: list[Patch] = []
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self._sets: dict[tuple[str, str], _Set] = {}
        self._pods: dict[tuple[str, str], dict[str, Any]] = {}
        self._forbidden: set[tuple[str, str]] = set()
        self._conflicts = 0
        self._faults: list[_Fault] = []
        self._hooks: list[_Hook] = []
        self._rv = 1000
        self._http = LoopbackServer(_Handler, owner=self, name="fake-kube")

    def start(self) -> FakeKube:
        self.base = self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def api_client(self, *, retries: Any = None) -> client.ApiClient:
        """A client for this server; `retries`: its `Configuration.retries` (None: urllib3's Retry.DEFAULT, which
        re-sends a GET or DELETE answered 429/503 with Retry-After, sleeping in real time)."""
        config = client.Configuration(host=self.base, api_key={"authorization": self.token},
                                      api_key_prefix={"authorization": "Bearer"})  # fmt: skip
        config.retries = retries
        return client.ApiClient(config)

    # --- controls -------------------------------------------------------------------------------------------------

    def add_statefulset(
        self,
        namespace: str,
        name: str,
        *,
        replicas: int = 1,
        container: str = "stack",
        image: str = "docker.io/xchem/fragalysis-stack:latest",
        pull_policy: str = "Always",
        update_strategy: str = "RollingUpdate",
        partition: int | None = 0,
        labels: Mapping[str, str] | None = None,
        digest: str | None = None,
    ) -> dict[str, Any]:
        """A settled StatefulSet (generation 1, all pods Ready at one revision) and its pods; returns its view."""
        labels = dict(labels if labels is not None else {"name": name})
        digest = digest or _sha(image)
        strategy: dict[str, Any] = {"type": update_strategy}
        if partition is not None and update_strategy == "RollingUpdate":
            strategy["rollingUpdate"] = {"partition": partition}
        main = {"name": container, "image": image, "imagePullPolicy": pull_policy}
        template = {"metadata": {"labels": dict(labels)}, "spec": {"containers": [main]}}
        revision = revision_name(name, template)
        with self.lock:
            if (namespace, name) in self._sets:
                raise ValueError(f"statefulset {namespace}/{name} exists")
            obj = {
                "kind": "StatefulSet", "apiVersion": "apps/v1",
                "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()),
                             "resourceVersion": self._next_rv(), "generation": 1,
                             "creationTimestamp": _stamp(self.clock()), "labels": dict(labels)},
                "spec": {"replicas": replicas, "selector": {"matchLabels": dict(labels)}, "serviceName": name,
                         "template": template, "podManagementPolicy": "OrderedReady", "updateStrategy": strategy,
                         "revisionHistoryLimit": 10},
                "status": {"observedGeneration": 1, "replicas": 0, "readyReplicas": 0, "currentReplicas": 0,
                           "updatedReplicas": 0, "currentRevision": revision, "updateRevision": revision,
                           "collisionCount": 0, "availableReplicas": 0},
            }  # fmt: skip
            entry = _Set(obj, {revision: copy.deepcopy(template)}, {container: digest})
            self._sets[(namespace, name)] = entry
            for ordinal in range(replicas):
                self._create_pod(entry, ordinal, revision, ready=True)
            self._recount(entry)
            return self.statefulset(namespace, name)

    def set_image_digest(self, namespace: str, name: str, digest: str, *, container: str | None = None) -> None:
        """The digest pods started from now on run for `container` (default: the set's first container)."""
        with self.lock:
            entry = self._entry(namespace, name)
            container = container or entry.obj["spec"]["template"]["spec"]["containers"][0]["name"]
            entry.digests[container] = digest

    def side_load(self, namespace: str, name: str, config_digest: str, *, container: str | None = None) -> None:
        """Pods started from now on run an image put on the node by hand (`kind load`, `ctr images import`): it has
        no repository digest, so containerd reports its config digest, bare, as `imageID`."""
        with self.lock:
            entry = self._entry(namespace, name)
            container = container or entry.obj["spec"]["template"]["spec"]["containers"][0]["name"]
            entry.side_loaded[container] = config_digest

    def delete_pod(self, namespace: str, name: str) -> None:
        """Someone else (kubectl, an eviction) deletes a pod; gone at once, re-created by the next controller step."""
        with self.lock:
            if self._pods.pop((namespace, name), None) is None:
                raise KeyError(f"no pod {namespace}/{name}")

    def stall(self, namespace: str, name: str, stalled: bool = True) -> None:
        """A broken image: pods started while stalled crash-loop and never get Ready, so OrderedReady stops."""
        with self.lock:
            self._entry(namespace, name).stalled = stalled

    def forbid(self, verb: str, resource: str) -> None:
        """RBAC denies `verb` (get list patch update create delete) on `resource` (e.g. "statefulsets/status")."""
        with self.lock:
            self._forbidden.add((verb, resource))

    def conflict_next(self, count: int = 1) -> None:
        with self.lock:
            self._conflicts += count

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        *,
        resource: str | None = None,
        method: str | None = None,
        body: Any = None,
        after: bool = False,
        retry_after: str | None = None,
    ) -> None:
        """The next `count` requests (to `resource` with `method`, or any) get `status` before auth, as an overloaded
        server or a proxy would, or (`after`) once the request has been processed. body: Mapping → JSON, str/bytes →
        as is, None → what the API server sends for the code (429: the overload filters' text with `Retry-After: 1`;
        504: the timeout filter's; others: a Status with the code's reason). `retry_after` sets or (with body) adds
        the header. Status 0: the connection is closed without an answer."""
        with self.lock:
            self._faults.append(_Fault(count, status, body, resource, method, after, retry_after))

    def before_next(self, method: str, resource: str, action: Callable[[], object]) -> None:
        """Run `action` (another actor, e.g. `delete_pod`) just before the next `method` request to `resource`."""
        with self.lock:
            self._hooks.append(_Hook(method, resource, action))

    def controller_step(self, namespace: str, name: str) -> bool:
        """One StatefulSet controller sync; True if anything changed."""
        with self.lock:
            entry = self._entry(namespace, name)
            obj, status = entry.obj, entry.obj["status"]
            revision = revision_name(name, obj["spec"]["template"])
            entry.revisions.setdefault(revision, copy.deepcopy(obj["spec"]["template"]))
            if status["observedGeneration"] != obj["metadata"]["generation"] or status["updateRevision"] != revision:
                status.update(observedGeneration=obj["metadata"]["generation"], updateRevision=revision)
                self._recount(entry)
                obj["metadata"]["resourceVersion"] = self._next_rv()
                return True
            acted = self._act(entry)
            if self._recount(entry) or acted:
                obj["metadata"]["resourceVersion"] = self._next_rv()
                return True
            return False

    def settle(self, namespace: str, name: str, limit: int = 1000) -> int:
        """Run controller_step until nothing changes; returns the number of steps that changed something."""
        for done in range(limit):
            if not self.controller_step(namespace, name):
                return done
        raise RuntimeError(f"statefulset {namespace}/{name} did not settle in {limit} steps")

    def recreate_pod(self, namespace: str, name: str, *, ready: bool = True) -> dict[str, Any]:
        """Out of band, re-create a deleted pod `<set>-<ordinal>` at the revision the controller would pick."""
        set_name, _, ordinal = name.rpartition("-")
        with self.lock:
            entry = self._entry(namespace, set_name)
            if (namespace, name) in self._pods:
                raise ValueError(f"pod {namespace}/{name} exists")
            pod = self._create_pod(entry, int(ordinal), self._versioned(entry, int(ordinal)), ready=ready)
            return copy.deepcopy(pod)

    def statefulset(self, namespace: str, name: str) -> dict[str, Any]:
        """The StatefulSet as the wire shows it (zero omitempty status fields left out)."""
        with self.lock:
            view = copy.deepcopy(self._entry(namespace, name).obj)
        view["status"] = {k: v for k, v in view["status"].items() if k not in OMITEMPTY or v}
        return view

    def pods(self, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        terms = _selector(selector)
        with self.lock:
            found = [p for (ns, _), p in sorted(self._pods.items()) if ns == namespace]
            return [copy.deepcopy(p) for p in found if _matches(p["metadata"].get("labels", {}), terms)]

    # --- the controller -------------------------------------------------------------------------------------------

    def _entry(self, namespace: str, name: str) -> _Set:
        if (namespace, name) not in self._sets:
            raise KeyError(f"no statefulset {namespace}/{name}; add_statefulset first")
        return self._sets[(namespace, name)]

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _owned(self, entry: _Set) -> dict[int, dict[str, Any]]:
        uid, ns = entry.obj["metadata"]["uid"], entry.obj["metadata"]["namespace"]
        return {int(p["metadata"]["labels"]["apps.kubernetes.io/pod-index"]): p for (pod_ns, _), p in self._pods.items()
                if pod_ns == ns and any(o["uid"] == uid for o in p["metadata"].get("ownerReferences", []))}  # fmt: skip

    def _versioned(self, entry: _Set, ordinal: int) -> str:
        """newVersionedStatefulSetPod: which revision a (re-)created pod gets."""
        spec, status = entry.obj["spec"], entry.obj["status"]
        rolling = spec["updateStrategy"].get("rollingUpdate")
        unpartitioned = spec["updateStrategy"]["type"] == "RollingUpdate" and rolling is None
        if (unpartitioned and ordinal < status["currentReplicas"]) or (rolling and ordinal < rolling["partition"]):
            return str(status["currentRevision"])
        return str(status["updateRevision"])

    def _act(self, entry: _Set) -> bool:
        spec, pods = entry.obj["spec"], self._owned(entry)
        replicas = spec.get("replicas", 1)
        for ordinal in range(replicas):  # OrderedReady: create in order, wait for each to be Running and Ready
            pod = pods.get(ordinal)
            if pod is None:
                self._create_pod(entry, ordinal, self._versioned(entry, ordinal), ready=False)
                return True
            if not _ready(pod):
                return self._start(entry, pod)
        if condemned := sorted(i for i in pods if i >= replicas):
            del self._pods[(entry.obj["metadata"]["namespace"], pods[condemned[-1]]["metadata"]["name"])]
            return True
        strategy = spec["updateStrategy"]
        if strategy["type"] != "RollingUpdate":
            return False
        update = entry.obj["status"]["updateRevision"]
        partition = (strategy.get("rollingUpdate") or {}).get("partition") or 0
        for ordinal in reversed(range(partition, replicas)):  # highest ordinal first
            if pods[ordinal]["metadata"]["labels"][REVISION_LABEL] != update:
                self._create_pod(entry, ordinal, update, ready=False)  # delete + re-create, one step
                return True
        return False

    def _recount(self, entry: _Set) -> bool:
        status, pods = entry.obj["status"], self._owned(entry).values()
        before = dict(status)
        revisions = [p["metadata"]["labels"][REVISION_LABEL] for p in pods]
        ready = sum(_ready(p) for p in pods)
        status.update(replicas=len(revisions), readyReplicas=ready, availableReplicas=ready,
                      currentReplicas=revisions.count(status["currentRevision"]),
                      updatedReplicas=revisions.count(status["updateRevision"]))  # fmt: skip
        if (entry.obj["spec"]["updateStrategy"]["type"] == "RollingUpdate"
                and status["updatedReplicas"] == status["replicas"] == ready):  # completeRollingUpdate # fmt: skip
            status.update(currentReplicas=status["updatedReplicas"], currentRevision=status["updateRevision"])
        return bool(status != before)

    def _create_pod(self, entry: _Set, ordinal: int, revision: str, *, ready: bool) -> dict[str, Any]:
        meta, template = entry.obj["metadata"], copy.deepcopy(entry.revisions[revision])
        name, now = f"{meta['name']}-{ordinal}", _stamp(self.clock())
        labels = template["metadata"].get("labels", {}) | {REVISION_LABEL: revision,
                 "statefulset.kubernetes.io/pod-name": name, "apps.kubernetes.io/pod-index": str(ordinal)}  # fmt: skip
        owner = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": meta["name"], "uid": meta["uid"],
                 "controller": True, "blockOwnerDeletion": True}  # fmt: skip
        pod: dict[str, Any] = {
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {**template["metadata"], "name": name, "generateName": f"{meta['name']}-",
                         "namespace": meta["namespace"], "uid": str(uuid.uuid4()), "resourceVersion": self._next_rv(),
                         "creationTimestamp": now, "labels": labels, "ownerReferences": [owner]},
            "spec": {**template["spec"], "hostname": name, "subdomain": entry.obj["spec"]["serviceName"],
                     "nodeName": "node-1", "restartPolicy": "Always"},
            "status": {"phase": "Pending", "hostIP": "10.0.0.1", "startTime": now, "qosClass": "BestEffort",
                       "conditions": self._conditions(False, template["spec"]["containers"]),
                       "containerStatuses": [{"name": c["name"], "image": c["image"], "imageID": "", "ready": False,
                                              "restartCount": 0, "started": False, "lastState": {},
                                              "state": {"waiting": {"reason": "ContainerCreating"}}}
                                             for c in template["spec"]["containers"]]},
        }  # fmt: skip
        self._pods[(meta["namespace"], name)] = pod
        if ready:
            self._start(entry, pod)
        return pod

    def _conditions(self, ready: bool, containers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        names = " ".join(c["name"] for c in containers)
        why = {"reason": "ContainersNotReady", "message": f"containers with unready status: [{names}]"}
        return [{"type": kind, "status": "True" if ready or not gated else "False", "lastProbeTime": None,
                 "lastTransitionTime": _stamp(self.clock()), **({} if ready or not gated else why)}
                for kind, gated in (("Initialized", False), ("Ready", True), ("ContainersReady", True),
                                    ("PodScheduled", False))]  # fmt: skip

    def _start(self, entry: _Set, pod: dict[str, Any]) -> bool:
        """A Pending pod starts: Ready, or (stalled) CrashLoopBackOff once; False if nothing changes."""
        containers, status, now = pod["spec"]["containers"], pod["status"], _stamp(self.clock())
        if entry.stalled and status["phase"] == "Running":
            return False
        for cs, spec in zip(status["containerStatuses"], containers, strict=True):
            pinned = spec["image"].partition("@")[2]
            digest = pinned or entry.digests.get(spec["name"]) or _sha(spec["image"])
            image_id = entry.side_loaded.get(spec["name"]) or f"{image_repo(spec['image'])}@{digest}"
            cs.update(imageID=image_id, containerID=f"containerd://{_sha(pod)[7:]}")
            if entry.stalled:
                waiting = {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}
                crashed = {"exitCode": 1, "reason": "Error", "startedAt": now, "finishedAt": now}
                cs.update(ready=False, started=False, restartCount=3, state={"waiting": waiting},
                          lastState={"terminated": crashed})  # fmt: skip
            else:
                cs.update(ready=True, started=True, state={"running": {"startedAt": now}})
        status.update(phase="Running", podIP=f"10.244.0.{len(self._pods) % 250 + 2}",
                      conditions=self._conditions(not entry.stalled, containers))  # fmt: skip
        pod["metadata"]["resourceVersion"] = self._next_rv()
        return True

    # --- HTTP -----------------------------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        hdrs = {k.lower(): v for k, v in headers.items()}
        with self.lock:
            self.requests.append(Recorded(method, target, hdrs, body))
        split = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        route = _ROUTE.match(split.path)
        resource = route[3] if route else None
        with self.lock:
            hook = next((h for h in self._hooks if (h.method, h.resource) == (method, resource)), None)
            if hook is not None:
                self._hooks.remove(hook)
                hook.action()
        if (reply := self._take_fault(resource, method, after=False)) is not None:
            return reply
        reply = self._handle(method, target, hdrs, body, route, query)
        return self._take_fault(resource, method, after=True) or reply

    def _handle(self, method: str, target: str, hdrs: dict[str, str], body: bytes, route: re.Match[str] | None,
                query: dict[str, str]) -> _Reply:  # fmt: skip
        try:
            scheme, _, credentials = hdrs.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or credentials.strip() != self.token:
                raise _Http(401, status_body(401, "Unauthorized", "Unauthorized"))
            if route is None or GROUPS.get(route[3]) != ("" if route[1] == "api/v1" else route[1][5:-3]):
                raise _Http(404, status_body(404, "NotFound", "the server could not find the requested resource", {}))
            _, namespace, resource, name, sub = route.groups()
            if sub is not None and (resource, sub) != ("statefulsets", "status"):
                raise _Http(404, status_body(404, "NotFound", "the server could not find the requested resource", {}))
            for unsupported in ("dryRun", "watch"):
                if unsupported in query:
                    raise _bad_request(f"fake Kubernetes does not model {unsupported}")
            verb = "list" if method == "GET" and name is None else _VERBS.get(method, method.lower())
            full = f"{resource}/{sub}" if sub else resource
            with self.lock:
                if (verb, full) in self._forbidden:
                    user = f"system:serviceaccount:{namespace}:watcher"
                    why = (f'User "{user}" cannot {verb} resource "{full}" in API group "{GROUPS[resource]}" '
                           f'in the namespace "{namespace}"')  # fmt: skip
                    subject = f'{_qualified(resource)} "{name}"' if name else _qualified(resource)
                    raise _error(403, "Forbidden", resource, name or "", f"{subject} is forbidden: {why}")
                return self._dispatch(method, target, namespace, resource, name, sub, query, hdrs, body)
        except _Http as http:
            return http.reply

    def _take_fault(self, resource: str | None, method: str, *, after: bool) -> _Reply | None:
        with self.lock:
            fault = next((f for f in self._faults if f.after == after and f.resource in (None, resource)
                          and f.method in (None, method)), None)  # fmt: skip
            if fault is None:
                return None
            fault.count -= 1
            if fault.count <= 0:
                self._faults.remove(fault)
        reply = _fault_reply(fault)
        if fault.retry_after is not None:
            reply.headers["Retry-After"] = fault.retry_after
        return reply

    def _dispatch(self, method: str, target: str, ns: str, resource: str, name: str | None, sub: str | None,
                  query: dict[str, str], hdrs: dict[str, str], body: bytes) -> _Reply:  # fmt: skip
        allowed = {("statefulsets", True): "GET PATCH", ("statefulsets", False): "GET", ("pods", True): "GET DELETE",
                   ("pods", False): "GET", ("leases", True): "GET PUT", ("leases", False): "GET POST"}  # fmt: skip
        if method not in allowed[(resource, name is not None)].split():
            message = f"fake Kubernetes does not model {method} on {resource}" + (f"/{name}" if name else "")
            raise _Http(405, status_body(405, "MethodNotAllowed", message, {}))
        if resource == "statefulsets":
            if name is None:
                items = [self.statefulset(n, s) for (n, s) in sorted(self._sets) if n == ns]
                return _json(200, {"kind": "StatefulSetList", "apiVersion": "apps/v1",
                                   "metadata": {"resourceVersion": str(self._rv)}, "items": items})  # fmt: skip
            if (ns, name) not in self._sets:
                raise not_found(resource, name)
            if method == "PATCH":
                self._patch(self._sets[(ns, name)], target, sub, query, hdrs, body)
            return _json(200, self.statefulset(ns, name))
        if resource == "pods":
            if name is None:
                items = self.pods(ns, query.get("labelSelector", ""))
                return _json(200, {"kind": "PodList", "apiVersion": "v1",
                                   "metadata": {"resourceVersion": str(self._rv)}, "items": items})  # fmt: skip
            if (pod := self._pods.get((ns, name))) is None:
                raise not_found(resource, name)  # for DELETE too: the pod, never its StatefulSet
            if method == "DELETE":
                del self._pods[(ns, name)]
                pod["metadata"].update(deletionTimestamp=_stamp(self.clock()), deletionGracePeriodSeconds=30,
                                       resourceVersion=self._next_rv())  # fmt: skip
            return _json(200, pod)
        return self._lease(method, ns, name, body)

    def _patch(self, entry: _Set, target: str, sub: str | None, query: dict[str, str], hdrs: dict[str, str],
               body: bytes) -> None:  # fmt: skip
        ctype = hdrs.get("content-type", "").split(";")[0].strip().lower()
        name = entry.obj["metadata"]["name"]
        if ctype == APPLY:
            raise _bad_request("fake Kubernetes does not model server-side apply")
        if ctype not in (SMP, MERGE, JSON_PATCH):
            accepted = ", ".join((JSON_PATCH, MERGE, SMP, APPLY))
            message = f"the body of the request was in an unknown format - accepted media types include: {accepted}"
            raise _Http(415, status_body(415, "UnsupportedMediaType", message))
        try:
            patch = json.loads(body)
        except ValueError as exc:
            raise _bad_request(f"error decoding patch: {exc}") from None
        self.patches.append(Patch(urlsplit(target).path, ctype, patch, query.get("fieldManager")))
        if self._conflicts > 0:
            self._conflicts -= 1
            raise conflict("statefulsets", name)
        old = entry.obj
        if ctype == JSON_PATCH:
            try:
                new = _json_patch(old, patch)
            except ValueError as exc:
                cause = {"reason": "UnexpectedServerResponse", "message": str(exc)}
                message = "the server rejected our request due to an error in our request"
                raise _Http(422, status_body(422, "Invalid", message, {"causes": [cause]})) from None
        elif not isinstance(patch, dict):
            kind = "array" if isinstance(patch, list) else type(patch).__name__
            raise _bad_request(f"json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}")
        else:
            new = _merge(old, patch, ctype == SMP)
        wanted_rv = (new.get("metadata") or {}).get("resourceVersion")
        if wanted_rv is not None and wanted_rv != old["metadata"]["resourceVersion"]:
            raise conflict("statefulsets", name)
        if sub == "status":
            new = {**old, "status": new.get("status") if isinstance(new.get("status"), dict) else old["status"]}
        server_meta = {k: old["metadata"][k] for k in ("name", "namespace", "uid", "resourceVersion", "generation",
                                                       "creationTimestamp")}  # fmt: skip
        new = {**new, "kind": old["kind"], "apiVersion": old["apiVersion"], "status": new.get("status", old["status"]),
               "metadata": {**(new.get("metadata") or {}), **server_meta}}  # fmt: skip
        if sub != "status":
            new["status"] = old["status"]
            self._validate(name, old["spec"], new.get("spec"))
        if new == old:
            return
        if new["spec"] != old["spec"]:
            new["metadata"]["generation"] = old["metadata"]["generation"] + 1
        new["metadata"]["resourceVersion"] = self._next_rv()
        entry.obj = new

    def _validate(self, name: str, old: dict[str, Any], new: Any) -> None:
        if not isinstance(new, dict):
            raise _invalid("statefulsets", name, [("spec", "FieldValueRequired", "Required value")])
        if any(new.get(k) != old.get(k) for k in (new.keys() | old.keys()) - MUTABLE_SPEC):
            raise _invalid("statefulsets", name, [("spec", "FieldValueForbidden", SPEC_FORBIDDEN)])
        causes: list[tuple[str, str, str]] = []
        replicas = new.get("replicas", 1)
        if not isinstance(replicas, int) or replicas < 0:
            causes.append(("spec.replicas", "FieldValueInvalid",
                           f"Invalid value: {replicas}: must be greater than or equal to 0"))  # fmt: skip
        containers = ((new.get("template") or {}).get("spec") or {}).get("containers")
        if not isinstance(containers, list) or not containers:
            causes.append(("spec.template.spec.containers", "FieldValueRequired", "Required value"))
        else:
            for i, c in enumerate(containers):
                causes += [(f"spec.template.spec.containers[{i}].{key}", "FieldValueRequired", "Required value")
                           for key in ("name", "image") if not isinstance(c, dict) or not c.get(key)]  # fmt: skip
        if causes:
            raise _invalid("statefulsets", name, causes)

    def _lease(self, method: str, ns: str, name: str | None, body: bytes) -> _Reply:
        if name is None and method == "GET":
            items = [copy.deepcopy(v) for (n, _), v in sorted(self.leases.items()) if n == ns]
            return _json(200, {"kind": "LeaseList", "apiVersion": "coordination.k8s.io/v1",
                               "metadata": {"resourceVersion": str(self._rv)}, "items": items})  # fmt: skip
        if method == "GET":
            if (ns, name) not in self.leases:
                raise not_found("leases", name or "")
            return _json(200, self.leases[(ns, name or "")])
        try:
            sent = json.loads(body)
        except ValueError as exc:
            raise _bad_request(f"error decoding body: {exc}") from None
        if not isinstance(sent, dict):
            raise _bad_request('Lease in version "v1" cannot be handled as a Lease: not an object')
        meta = sent.get("metadata") or {}
        lease_name = meta.get("name") or ""
        if not lease_name:
            raise _invalid("leases", "", [("metadata.name", "FieldValueRequired",
                                           "Required value: name or generateName is required")])  # fmt: skip
        spec = dict(sent.get("spec") or {})
        for key in ("acquireTime", "renewTime"):
            if spec.get(key) is not None:
                try:
                    moment = datetime.fromisoformat(str(spec[key]).replace("Z", "+00:00"))
                except ValueError:
                    moment = None
                if moment is None or moment.tzinfo is None:
                    raise _bad_request(f'Lease in version "v1" cannot be handled as a Lease: bad {key} {spec[key]!r}')
                spec[key] = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        old = self.leases.get((ns, lease_name))
        if method == "POST":
            if old is not None:
                raise _error(409, "AlreadyExists", "leases", lease_name,
                             f'{_qualified("leases")} "{lease_name}" already exists')  # fmt: skip
            keep = {"uid": str(uuid.uuid4()), "creationTimestamp": _stamp(self.clock())}
        else:
            if lease_name != name:
                raise _bad_request(f"the name of the object ({lease_name}) does not match the name on the URL ({name})")
            if old is None:
                raise not_found("leases", lease_name)
            if meta.get("resourceVersion") not in (None, "", old["metadata"]["resourceVersion"]):
                raise conflict("leases", lease_name)
            keep = {k: old["metadata"][k] for k in ("uid", "creationTimestamp")}
        extra = {k: meta[k] for k in ("labels", "annotations") if meta.get(k)}
        lease = {"kind": "Lease", "apiVersion": "coordination.k8s.io/v1",
                 "metadata": {"name": lease_name, "namespace": ns, **keep, "resourceVersion": self._next_rv(), **extra},
                 "spec": {k: v for k, v in spec.items() if v is not None}}  # fmt: skip
        self.leases[(ns, lease_name)] = lease
        return _json(201 if method == "POST" else 200, lease)


def _fault_reply(fault: _Fault) -> _Reply:
    if fault.status == 0:
        return _Reply(0)
    if fault.body is None and fault.status == 429:  # http.Error: Fprintln adds the newline
        headers = {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff",
                   "Retry-After": "1", "Cache-Control": "no-cache, private", "Audit-Id": str(uuid.uuid4()),
                   "X-Kubernetes-Pf-Flowschema-Uid": str(uuid.uuid4()),
                   "X-Kubernetes-Pf-Prioritylevel-Uid": str(uuid.uuid4())}  # fmt: skip
        return _Reply(429, (OVERLOADED + "\n").encode(), headers)
    if fault.body is None and fault.status == 504:  # json.Encoder: a trailing newline; Go sniffs the type
        status = {"metadata": {}, "status": "Failure", "message": TIMED_OUT, "reason": "Timeout", "details": {},
                  "code": 504}  # fmt: skip
        headers = {"Content-Type": "text/plain; charset=utf-8", "Audit-Id": str(uuid.uuid4())}
        return _Reply(504, (json.dumps(status, separators=(",", ":")) + "\n").encode(), headers)
    if fault.body is None or isinstance(fault.body, Mapping):
        reason = _FAULT_REASONS.get(fault.status, "InternalError")
        return _json(fault.status, fault.body or status_body(fault.status, reason, "fake fault", {}))
    raw = fault.body.encode() if isinstance(fault.body, str) else bytes(fault.body)
    return _Reply(fault.status, raw, {"Content-Type": "text/plain; charset=utf-8"})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        kube: FakeKube = self.server.owner  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        reply = kube.handle(self.command, self.path, dict(self.headers.items()), body)
        if reply.status == 0:  # drop the connection without an answer
            self.close_connection = True
            return
        try:
            self.send_response(reply.status)
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass

"""Property-based fuzz tests of the StatefulSet actuator's boundary with the Kubernetes API: whatever
the API server answers, `launch`, `find` and `wait` return normally or raise one of our errors, on one line.

A loopback server the test owns answers the four requests the actuator makes (the StatefulSet GET and PATCH, the pod
list, a pod DELETE) with what the fake API server (tests/fakes/kube.py) served for a real roll-out, except for the one
request an example makes misbehave: a raw status, headers and body; or that valid JSON with one field replaced by any
JSON value or deleted; or pods with any names. The real `kubernetes` client reads every answer; the clock and sleep
are injected, so nothing sleeps real time.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from kubernetes import client as k8s
from urllib3 import Retry

from reconciler import errors, model
from reconciler.actuators import kube as kube_actuator
from tests.fakes.kube import FakeKube, status_body
from tests.support import fuzzing
from tests.support.loopback import LoopbackServer

NS, STS, TOKEN = "staging-stack", "stack", "kube-test-token"
NEW = "sha256:" + "2" * 64
NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
ROUTES = ("get", "patch", "list", "delete")  # the StatefulSet GET and PATCH, the pod list, a pod DELETE
ALWAYS = 10**9  # an answer given to every request of its route
JSON = {"Content-Type": "application/json"}
STATUSES = [200, 201, 204, 299, 302, 400, 401, 403, 404, 405, 409, 410, 415, 422, 429, 500, 502, 503, 504, 599]
CONTENT_TYPES = [
    None,  # the client then tries JSON, else keeps the text
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=utf-16",
    "application/json; charset=klingon",  # a charset Python does not know: LookupError
    "application/json; charset=base64",  # a codec, but not a text encoding: LookupError too
    "application/json;charset=unicode-escape",
    "application/merge-patch+json",
    "text/plain; charset=utf-8",
    "text/html",
    "application/vnd.kubernetes.protobuf",  # the client refuses it: an ApiException with status 0
    "application/yaml",
]


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))
    times: int = ALWAYS
    after: int = 0  # valid answers first


def raw(
    status: int, body: bytes, content_type: str = "application/json", *, times: int = ALWAYS, after: int = 0,
    retry_after: str | None = None,
) -> Answer:  # fmt: skip
    headers = {"Content-Type": content_type} | ({} if retry_after is None else {"Retry-After": retry_after})
    return Answer(status, body, headers, times, after)


# --- what a real roll-out served ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """The valid answers of one scenario, as the fake API server sent them."""

    mode: model.RolloutMode
    strategy: str
    bodies: dict[str, Any] = field(repr=False)  # route -> JSON


@cache
def served(mode: model.RolloutMode, strategy: str) -> Served:
    """Patch a settled StatefulSet of two pods through the fake API server and let its controller roll it: the PATCH
    answer, then the StatefulSet and the pods once rolled (an OnDelete set's pods stay at the old revision, so the
    wait deletes one)."""
    fake = FakeKube(token=TOKEN)
    fake.clock = lambda: NOW
    fake.add_statefulset(NS, STS, replicas=2, update_strategy=strategy, partition=None if strategy == "OnDelete" else 0)
    fake.set_image_digest(NS, STS, NEW)
    with k8s.ApiClient() as offline:
        request = actuator_for(offline, Clock()).request(spec(mode, strategy), target())
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": request["content_type"]}
    patched = fake.handle("PATCH", request["path"], headers, json.dumps(request["body"]).encode())
    assert patched.status == 200, patched.body
    fake.settle(NS, STS)
    pods = fake.pods(NS)
    bodies = {
        "patch": json.loads(patched.body),
        "get": fake.statefulset(NS, STS),
        "list": {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "2000"}, "items": pods},
        "delete": pods[-1],
    }
    return Served(mode, strategy, bodies)


def spec(mode: model.RolloutMode, strategy: str) -> model.StatefulSetAction:
    on_delete = model.OnDelete.DELETE_PODS if strategy == "OnDelete" else model.OnDelete.REPORT
    return model.StatefulSetAction(
        namespace=NS, name=STS, container="stack", mode=mode, on_delete=on_delete, timeout=timedelta(minutes=1)
    )


def target() -> model.Target:
    image = model.ImageRef.parse("xchem/fragalysis-stack")
    return model.Target(watch="staging", image=image, tag="latest", digest=NEW)


# --- the loopback server ------------------------------------------------------------------------------------------


class Server:
    """Answers each route with its valid JSON, or with the misbehaving answer set for it (`times` requests)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.valid: dict[str, Any] = {}
        self.odd: dict[str, Answer] = {}
        self.seen: list[str] = []
        self._http = LoopbackServer(_Handler, owner=self, name="fuzz-kube")
        self.base = ""

    def __enter__(self) -> Server:
        self.base = self._http.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.stop()

    def serve(self, valid: dict[str, Any], odd: dict[str, Answer]) -> None:
        with self.lock:
            self.valid, self.odd, self.seen = valid, {k: copy.copy(v) for k, v in odd.items()}, []

    def answer(self, method: str, path: str) -> Answer:
        parts = path.split("?", 1)[0].strip("/").split("/")  # …/namespaces/<ns>/<resource>[/<name>]
        at = parts.index("namespaces") + 2 if "namespaces" in parts else len(parts)
        resource, named = (parts[at] if at < len(parts) else None), len(parts) == at + 2
        routes: dict[tuple[str, str | None, bool], str] = {
            ("GET", "statefulsets", True): "get",
            ("PATCH", "statefulsets", True): "patch",
            ("GET", "pods", False): "list",
            ("DELETE", "pods", True): "delete",
        }
        route = routes.get((method, resource, named))
        with self.lock:
            if route is None:
                return Answer(404, json.dumps(status_body(404, "NotFound", "the server could not find it")).encode())
            self.seen.append(route)
            odd = self.odd.get(route)
            if odd is not None and odd.after > 0:
                odd.after -= 1
            elif odd is not None and odd.times > 0:
                odd.times -= 1
                return odd
            return Answer(200, json.dumps(self.valid[route]).encode())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        server: Server = self.server.owner  # type: ignore[attr-defined]
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        answer = server.answer(self.command, self.path)
        # every answer on its own connection: a body sent with a 204 must not be read as the next answer
        self.close_connection = True
        self.send_response(answer.status)
        for key, value in answer.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(answer.body)

    do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def actuator_for(api: k8s.ApiClient, clock: Clock) -> kube_actuator.StatefulSetActuator:
    return kube_actuator.StatefulSetActuator(api=api, clock=clock, sleep=clock.sleep)


@dataclass(frozen=True)
class Action:
    """One action of a scenario: an actuator with its own clock, the action, its PATCH and its record once launched
    (at generation 2, as the fake API server answered the PATCH)."""

    actuator: kube_actuator.StatefulSetActuator
    spec: model.StatefulSetAction
    request: dict[str, Any]
    record: model.ActionRecord

    @classmethod
    def of(cls, api: k8s.ApiClient, scenario: Served) -> Action:
        actuator, action = actuator_for(api, Clock()), spec(scenario.mode, scenario.strategy)
        request = actuator.request(action, target())
        record = model.ActionRecord(
            id=1, watch="staging", kind=model.ActionKind.STATEFULSET, status=model.ActionStatus.LAUNCHED,
            tag="latest", digest=NEW, attempt=1, created_at=NOW, request=request, external_ref="2", launched_at=NOW,
        )  # fmt: skip
        return cls(actuator, action, request, record)

    def launch(self) -> model.Launch:
        return self.actuator.launch(self.spec, self.request)

    def find(self) -> model.Launch | None:
        return self.actuator.find(self.spec, self.record)

    def wait(self) -> model.Finish | model.Unfinished:
        return self.actuator.wait(self.spec, self.record, keep_alive=lambda: None)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with Server() as running:
        yield running


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[k8s.ApiClient]:
    config = k8s.Configuration(host=server.base, api_key={"authorization": TOKEN},
                               api_key_prefix={"authorization": "Bearer"})  # fmt: skip
    config.retries = Retry(total=3, read=0, respect_retry_after_header=False)  # as clients.kube_api builds it
    with k8s.ApiClient(config) as client:
        yield client


# --- the contract -------------------------------------------------------------------------------------------------


def check(call: Callable[[], object]) -> None:
    """The call returns (any detail it returns on one line) or raises one of our errors, on one line."""
    try:
        result = call()
    except errors.ReconcilerError as exc:
        assert fuzzing.one_line(str(exc)), repr(str(exc))
        return
    if isinstance(result, model.Finish | model.Unfinished):
        assert fuzzing.one_line(result.detail), repr(result.detail)
    if isinstance(result, model.Launch):
        int(result.ref)  # what `wait` reads back


def roll(server: Server, api: k8s.ApiClient, scenario: Served, odd: dict[str, Answer]) -> None:
    """launch, find and wait, each with a fresh clock, against the valid answers with `odd` in place."""
    for call in (Action.launch, Action.find, Action.wait):
        action = Action.of(api, scenario)
        server.serve(scenario.bodies, odd)
        check(lambda: call(action))  # noqa: B023  (called at once)


def test_the_valid_answers_roll_out(server: Server, api: k8s.ApiClient) -> None:
    """The baseline every example departs from: each scenario launches, is found, and finishes."""
    for mode in model.RolloutMode:
        action = Action.of(api, served(mode, "RollingUpdate"))
        server.serve(served(mode, "RollingUpdate").bodies, {})
        assert action.launch() == model.Launch(ref="2", link=None)
        assert action.find() == model.Launch(ref="2", link=None)
        assert action.wait() == model.Finish(True, f"rolled out: stack-0, stack-1 run {NEW}")
    ondelete = served(model.RolloutMode.RESTART, "OnDelete")
    server.serve(ondelete.bodies, {})
    finish = Action.of(api, ondelete).wait()  # its pods, served as they are, never come back at the new revision
    assert isinstance(finish, model.Finish) and not finish.succeeded
    assert server.seen.count("delete") > 1


RESTART = served(model.RolloutMode.RESTART, "RollingUpdate")


# --- what an unreadable answer costs (kube_errors.Unreadable) ---------------------------------------------------------


def test_an_unreadable_statefulset_before_the_patch_fails_the_attempt(server: Server, api: k8s.ApiClient) -> None:
    """Nothing was sent: a plain KubeError (an attempt used), not an outage, and no PATCH."""
    action = Action.of(api, RESTART)
    server.serve(RESTART.bodies, {"get": raw(200, b"null")})
    with pytest.raises(errors.KubeError) as raised:
        action.launch()
    assert not isinstance(raised.value, errors.ActuatorUnavailable)
    assert str(raised.value) == (
        "the Kubernetes API sent a StatefulSet that cannot be read (get StatefulSet staging-stack/stack): "
        "the answer is null, not an object"
    )
    assert server.seen == ["get"]


def test_an_unreadable_answer_to_the_patch_is_looked_for(server: Server, api: k8s.ApiClient) -> None:
    """A 2xx without a readable generation: most likely applied, so looked for rather than taken as generation 0."""
    action = Action.of(api, RESTART)
    server.serve(RESTART.bodies, {"patch": raw(200, b"null")})
    assert action.launch().ref == "2"
    assert server.seen == ["get", "patch", "get"]
    server.serve(RESTART.bodies, {"patch": raw(200, b"{}"), "get": raw(200, b"<html>", "text/html", after=1)})
    with pytest.raises(errors.LaunchOutcomeUnknown, match="the patch may have been applied and was not seen"):
        action.launch()
    assert server.seen.count("patch") == 1  # never sent again while its fate is unknown


def test_the_wait_polls_through_unreadable_answers(server: Server, api: k8s.ApiClient) -> None:
    action = Action.of(api, RESTART)
    server.serve(RESTART.bodies, {"get": raw(200, b'{"kind": "StatefulSet"', times=2), "list": raw(200, b"", times=1)})
    assert action.wait() == model.Finish(True, f"rolled out: stack-0, stack-1 run {NEW}")
    server.serve(RESTART.bodies, {"list": raw(200, b"\xff")})
    unfinished = action.wait()
    assert isinstance(unfinished, model.Unfinished) and "a pod list that cannot be read" in unfinished.detail


# --- generated answers --------------------------------------------------------------------------------------------

scenarios = st.builds(
    served, st.sampled_from(list(model.RolloutMode)), st.sampled_from(["RollingUpdate", "RollingUpdate", "OnDelete"])
)
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20)
retry_afters = st.one_of(
    st.sampled_from(["0", "1", "3600", "-1", "1.5", "", "9" * 400, "9" * 5000, "Fri, 31 Dec 1999 23:59:59 GMT"]),
    st.integers(min_value=0, max_value=10**40).map(str),
    header_text,
)
charsets = st.from_regex(r"[A-Za-z0-9-]{1,16}", fullmatch=True).map(lambda c: f"application/json; charset={c}")


@st.composite
def raw_answers(draw: st.DrawFn) -> Answer:
    content_type = draw(st.one_of(st.sampled_from(CONTENT_TYPES), charsets))
    headers = {} if content_type is None else {"Content-Type": content_type}
    if draw(st.booleans()):
        headers["Retry-After"] = draw(retry_afters)
    status = draw(st.sampled_from(STATUSES))
    return Answer(status, draw(fuzzing.broken_bodies), headers, draw(st.sampled_from([1, 2, ALWAYS])))


@fuzzing.examples(100)
@given(scenario=scenarios, route=st.sampled_from(ROUTES), answer=raw_answers())
@example(scenario=RESTART, route="get", answer=raw(200, b'{"id": '))  # JSONDecodeError
@example(scenario=RESTART, route="patch", answer=raw(200, b'{"id": '))
@example(scenario=RESTART, route="list", answer=raw(200, b"\xff\xfe"))  # UnicodeDecodeError
@example(scenario=RESTART, route="get", answer=raw(200, b"{}", "application/json; charset=klingon"))  # LookupError
@example(scenario=RESTART, route="get", answer=raw(200, fuzzing.nested(3000).encode()))  # RecursionError
@example(scenario=RESTART, route="list", answer=raw(200, fuzzing.nested(3000, opener="{").encode()))
@example(scenario=RESTART, route="get", answer=raw(200, b""))  # pydantic ValidationError
@example(scenario=RESTART, route="get", answer=raw(200, b"null"))  # KeyError: 'spec'
@example(scenario=RESTART, route="patch", answer=raw(200, b"null"))  # no generation: not "generation 0"
@example(scenario=RESTART, route="patch", answer=raw(200, b"{}", "application/vnd.kubernetes.protobuf"))
@example(scenario=RESTART, route="get", answer=raw(429, b"", "text/plain", retry_after="1" + "0" * 400))
@example(scenario=RESTART, route="list", answer=raw(503, b"", "text/plain", retry_after="9" * 5000))
@example(scenario=RESTART, route="get", answer=raw(500, b'{"kind": "Status", "message": "etcd\\nleader changed"}'))
def test_any_raw_answer(server: Server, api: k8s.ApiClient, scenario: Served, route: str, answer: Answer) -> None:
    roll(server, api, scenario, {route: answer})


# --- any value in place of a field --------------------------------------------------------------------------------

Path = tuple[str | int, ...]
READ = {  # the fields the actuator reads, picked half the time: fuzzing the others tests only the client
    "get": [(), ("metadata",), ("metadata", "generation"), ("spec",), ("spec", "replicas"), ("spec", "selector"),
            ("spec", "selector", "matchLabels"), ("spec", "updateStrategy"), ("spec", "updateStrategy", "type"),
            ("spec", "updateStrategy", "rollingUpdate", "partition"), ("spec", "template"),
            ("spec", "template", "metadata", "annotations"), ("spec", "template", "spec"),
            ("spec", "template", "spec", "containers"), ("spec", "template", "spec", "containers", 0),
            ("spec", "template", "spec", "containers", 0, "name"),
            ("spec", "template", "spec", "containers", 0, "image"),
            ("spec", "template", "spec", "containers", 0, "imagePullPolicy"), ("status",),
            ("status", "observedGeneration"), ("status", "readyReplicas"), ("status", "updatedReplicas"),
            ("status", "currentRevision"), ("status", "updateRevision")],
    "list": [(), ("items",), ("items", 0), ("items", 0, "metadata"), ("items", 0, "metadata", "name"),
             ("items", 0, "metadata", "ownerReferences"), ("items", 0, "metadata", "ownerReferences", 0),
             ("items", 0, "metadata", "ownerReferences", 0, "name"), ("items", 0, "metadata", "labels"),
             ("items", 1, "metadata", "deletionTimestamp"), ("items", 1, "status"),
             ("items", 1, "status", "conditions"), ("items", 1, "status", "conditions", 1, "status"),
             ("items", 1, "status", "containerStatuses"), ("items", 1, "status", "containerStatuses", 0, "imageID")],
}  # fmt: skip
READ["patch"] = READ["get"][:4]
READ["delete"] = [(), ("metadata",), ("metadata", "name"), ("status",)]  # the client decodes the deleted pod


def paths(doc: Any, at: Path = ()) -> list[Path]:
    """Every node of a JSON document, the root first."""
    found = [at]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += paths(value, (*at, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found += paths(value, (*at, index))
    return found


def edited(doc: Any, path: Path, value: Any, *, delete: bool = False) -> Any:
    """`doc` with the node at `path` set to `value` (or deleted); a path `doc` lacks is made."""
    if not path:
        return value
    doc = copy.deepcopy(doc)
    parent = doc
    for key in path[:-1]:
        if isinstance(parent, list) and isinstance(key, int) and key < len(parent):
            parent = parent[key]
        elif isinstance(parent, dict) and isinstance(key, str):
            parent = parent.setdefault(key, {})
        else:
            return doc
    last = path[-1]
    if isinstance(parent, dict) and isinstance(last, str):
        if delete:
            parent.pop(last, None)
        else:
            parent[last] = value
    elif isinstance(parent, list) and isinstance(last, int) and last < len(parent):
        if delete:
            del parent[last]
        else:
            parent[last] = value
    return doc


@st.composite
def edits(draw: st.DrawFn) -> tuple[Served, str, Answer]:
    scenario = draw(scenarios)
    route = draw(st.sampled_from(ROUTES))
    doc = scenario.bodies[route]
    path = draw(st.sampled_from(READ[route]) if draw(st.booleans()) else st.sampled_from(paths(doc)))
    value = draw(st.one_of(fuzzing.json_values, fuzzing.huge_numbers, fuzzing.weird_text))
    changed = edited(doc, path, value, delete=draw(st.integers(0, 4)) == 0)
    return scenario, route, Answer(200, fuzzing.body(changed), dict(JSON), draw(st.sampled_from([1, ALWAYS])))


def edit(route: str, path: Path, value: Any, *, delete: bool = False, scenario: Served = RESTART) -> Any:
    return scenario, route, Answer(200, json.dumps(edited(scenario.bodies[route], path, value, delete=delete)).encode())


OWNERS = ("items", 0, "metadata", "ownerReferences")


@fuzzing.examples(100)
@given(edit=edits())
@example(edit=edit("list", OWNERS, False))  # TypeError in the client: 'bool' object is not iterable
@example(edit=edit("list", OWNERS, True))
@example(edit=edit("list", OWNERS, "StatefulSet"))
@example(edit=edit("get", ("spec", "template", "spec"), None, delete=True))  # no containers
@example(edit=edit("get", ("spec", "template", "spec", "containers"), []))
@example(edit=edit("patch", ("metadata", "generation"), None, delete=True))
@example(edit=edit("list", ("items", 0), None))
@example(edit=edit("list", ("items", 0, "metadata"), None, delete=True))
@example(edit=edit("get", ("spec", "replicas"), 10**330))
@example(edit=edit("get", ("status", "currentRevision"), "stack-1\nstack-2"))
@example(edit=edit("get", ("spec", "template", "spec", "containers", 0, "imagePullPolicy"), "Never\nAlways"))
def test_any_value_in_place_of_a_field(server: Server, api: k8s.ApiClient, edit: tuple[Served, str, Answer]) -> None:
    scenario, route, answer = edit
    roll(server, api, scenario, {route: answer})


# --- pod names ----------------------------------------------------------------------------------------------------

pod_names = st.one_of(
    fuzzing.weird_text,
    st.sampled_from(["stack-²", "stack-٣", "stack-0", "stack-1", "stack-", "stack--1", "stack-01", "-1", "stack"]),
    st.just("stack-" + "9" * 5000),  # int() refuses more than 4300 digits
)


def named(scenario: Served, names: list[str]) -> Answer:
    listed = copy.deepcopy(scenario.bodies["list"])
    for i, pod in enumerate(listed["items"]):
        pod["metadata"]["name"] = names[i % len(names)]
    return Answer(200, json.dumps(listed).encode())


@fuzzing.examples(40)
@given(scenario=scenarios, names=st.lists(pod_names, min_size=1, max_size=3))
@example(scenario=RESTART, names=["stack-²"])  # '²'.isdigit() is True, int('²') fails
@example(scenario=served(model.RolloutMode.RESTART, "OnDelete"), names=["stack-²", "stack-\n1"])
@example(scenario=RESTART, names=["stack-" + "9" * 5000])
def test_any_pod_names(server: Server, api: k8s.ApiClient, scenario: Served, names: list[str]) -> None:
    roll(server, api, scenario, {"list": named(scenario, names)})

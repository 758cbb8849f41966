"""The StatefulSet actuator when the API server misbehaves the way a real one does: throttling
(the overload filters' plain-text 429 with `Retry-After`), 5xx before and after a PATCH was applied, dropped
connections, a pod deleted by someone else, and an `imageID` that is only a config digest.

Driven through the real `kubernetes` client against the fake API server over HTTP; the injected sleep moves the
clock and lets the StatefulSet controller take a step, so no test sleeps real time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import urllib3

from reconciler import errors, model
from reconciler.actuators import kube as kube_actuator
from reconciler.actuators import rollout
from tests.fakes.kube import FakeKube

NS, STS = "staging-stack", "stack"
OLD, NEW = "sha256:" + "1" * 64, "sha256:" + "2" * 64
# The client as the composition root should build it: urllib3 still re-sends what never left (connect errors) and
# idempotent requests that lost their connection, but not an answered 429/503, which it would otherwise re-send
# after sleeping in real time; the actuator asks again itself, with the injected clock.
NO_STATUS_RETRIES = urllib3.Retry(total=3, respect_retry_after_header=False)


@dataclass
class Clock:
    """The injected clock and sleep: each sleep moves time on and lets the controller take one step."""

    kube: FakeKube
    now: datetime = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)
        self.kube.controller_step(NS, STS)


@dataclass
class Harness:
    kube: FakeKube
    clock: Clock
    actuator: kube_actuator.StatefulSetActuator
    spec: model.StatefulSetAction

    def request(self) -> dict[str, Any]:
        target = model.Target(watch="staging", image=model.ImageRef.parse("xchem/fragalysis-stack"), tag="latest",
                              digest=NEW)  # fmt: skip
        return self.actuator.request(self.spec, target)

    def record(self, request: dict[str, Any], launch: model.Launch | None = None) -> model.ActionRecord:
        return model.ActionRecord(
            id=1, watch="staging", kind=model.ActionKind.STATEFULSET, status=model.ActionStatus.LAUNCHED,
            tag="latest", digest=NEW, attempt=1, created_at=self.clock(), request=request,
            external_ref=launch.ref if launch else None, launched_at=self.clock(),
        )  # fmt: skip

    def roll(self) -> model.Finish:
        """launch, then wait, as the deployer does."""
        request = self.request()
        launch = self.actuator.launch(self.spec, request)
        return self.actuator.wait(self.spec, self.record(request, launch), keep_alive=lambda: None)

    def sent(self, method: str) -> list[str]:
        return [path.split("?")[0].rsplit("/", 1)[-1] for m, path, *_ in self.kube.requests if m == method]


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube() as fake:
        yield fake


@pytest.fixture
def harness(kube: FakeKube) -> Iterator[Callable[..., Harness]]:
    clients: list[Any] = []

    def make(*, retries: Any = NO_STATUS_RETRIES, on_delete: str = "report", **sts: Any) -> Harness:
        kube.add_statefulset(NS, STS, digest=OLD, **sts)
        kube.set_image_digest(NS, STS, NEW)  # what `latest` resolves to now; pulled by the restarted pods
        clock = Clock(kube)
        api = kube.api_client(retries=retries)
        clients.append(api)
        actuator = kube_actuator.StatefulSetActuator(api=api, clock=clock, sleep=clock.sleep, poll=5.0)
        spec = model.StatefulSetAction(namespace=NS, name=STS, container="stack", on_delete=model.OnDelete(on_delete))
        return Harness(kube=kube, clock=clock, actuator=actuator, spec=spec)

    yield make
    for api in clients:
        api.close()


def test_a_throttled_patch_waits_retry_after_and_restarts_the_pods_once(
    kube: FakeKube, harness: Callable[..., Harness]
) -> None:
    h = harness(replicas=3)
    kube.fail_next(2, 429, resource="statefulsets", method="PATCH")  # the overload filter: not processed
    request = h.request()
    finish = h.roll()
    assert finish == model.Finish(True, f"rolled out: stack-0, stack-1, stack-2 run {NEW}")
    assert h.clock.slept[:2] == [1.0, 1.0]  # Retry-After: 1, through the injected sleep
    assert h.sent("PATCH") == [STS] * 3
    assert [p.body for p in kube.patches] == [request["body"]]  # one patch applied: one restart
    assert kube.statefulset(NS, STS)["metadata"]["generation"] == 2


def test_a_long_retry_after_is_capped(kube: FakeKube, harness: Callable[..., Harness]) -> None:
    h = harness()
    kube.fail_next(1, 429, resource="statefulsets", method="PATCH", retry_after="3600")
    launch = h.actuator.launch(h.spec, h.request())
    assert launch.ref == "2" and h.clock.slept == [kube_actuator.RETRY_AFTER_CAP] == [30.0]


@pytest.mark.parametrize("status", [504, 0], ids=["504-timeout-filter", "dropped-connection"])
def test_a_patch_applied_before_its_error_is_found_not_sent_again(
    kube: FakeKube, harness: Callable[..., Harness], status: int
) -> None:
    h = harness(replicas=2)
    kube.fail_next(1, status, resource="statefulsets", method="PATCH", after=True)
    # and the look that follows is throttled once: asked again too
    kube.before_next("PATCH", "statefulsets", lambda: kube.fail_next(1, 429, resource="statefulsets", method="GET"))
    request = h.request()
    launch = h.actuator.launch(h.spec, request)
    assert launch.ref == "2"
    assert h.sent("PATCH") == [STS] and [p.body for p in kube.patches] == [request["body"]]
    assert h.clock.slept == [1.0, 1.0]  # a back-off after the 5xx, then Retry-After for the throttled look
    finish = h.actuator.wait(h.spec, h.record(request, launch), keep_alive=lambda: None)
    assert finish.succeeded, finish.detail


def test_a_5xx_before_the_patch_is_looked_for_then_sent_again(kube: FakeKube, harness: Callable[..., Harness]) -> None:
    h = harness()
    kube.fail_next(1, 503, resource="statefulsets", method="PATCH")  # e.g. etcd unavailable: nothing written
    launch = h.actuator.launch(h.spec, h.request())
    assert launch.ref == "2"
    assert [m for m, *_ in kube.requests] == ["GET", "PATCH", "GET", "PATCH"]  # looked before sending again
    assert len(kube.patches) == 1 and h.clock.slept == [kube_actuator.BACKOFF_FIRST]


@pytest.mark.parametrize(
    ("faults", "raised"),
    [
        pytest.param([(99, 429, "PATCH", False)], errors.KubeUnavailable, id="throttled-throughout"),
        pytest.param([(99, 503, "PATCH", False)], errors.LaunchOutcomeUnknown, id="5xx-throughout"),
        pytest.param(
            [(1, 500, "PATCH", True), (99, 429, "GET", False)], errors.LaunchOutcomeUnknown, id="applied-then-unseen"
        ),
    ],
)
def test_launch_asks_again_for_at_most_its_budget(
    kube: FakeKube, harness: Callable[..., Harness], faults: list[tuple[int, int, str, bool]], raised: type[Exception]
) -> None:
    h = harness()
    kube.before_next(  # the faults start with the first PATCH (the read before it goes through)
        "PATCH",
        "statefulsets",
        lambda: [kube.fail_next(n, s, resource="statefulsets", method=m, after=a) for n, s, m, a in faults],
    )
    start = h.clock()
    with pytest.raises(errors.ActuatorError) as exc:
        h.actuator.launch(h.spec, h.request())
    assert type(exc.value) is raised, exc.value
    assert h.clock() - start <= kube_actuator.LAUNCH_BUDGET and len(h.clock.slept) >= 3
    assert "\n" not in str(exc.value)
    if raised is errors.KubeUnavailable:
        assert "nothing was patched" in str(exc.value) and kube.patches == []
        assert "Too many requests, please try again later." in str(exc.value)
    else:
        assert "the patch may have been applied" in str(exc.value)
        assert not exc.value.answered  # type: ignore[attr-defined]  # it may still land: look for it a while


def test_the_wait_polls_through_throttling_and_5xx(kube: FakeKube, harness: Callable[..., Harness]) -> None:
    h = harness(replicas=2)
    request = h.request()
    launch = h.actuator.launch(h.spec, request)
    kube.fail_next(3, 429, resource="statefulsets", method="GET")
    kube.fail_next(2, 500, resource="pods", method="GET")
    finish = h.actuator.wait(h.spec, h.record(request, launch), keep_alive=lambda: None)
    assert finish == model.Finish(True, f"rolled out: stack-0, stack-1 run {NEW}")
    assert max(h.clock.slept) == 10.0  # the poll interval, doubled after a second 5xx in a row
    assert len(kube.patches) == 1


def test_a_client_whose_urllib3_gave_up_is_asked_again(kube: FakeKube, harness: Callable[..., Harness]) -> None:
    """A client built without `retries`: urllib3 itself re-sends a throttled GET (here Retry-After: 0, so no real
    sleep) three times, then raises; that is throttling too, not an unreachable server nor a failure."""
    h = harness(retries=None)
    kube.fail_next(4, 429, resource="statefulsets", method="GET", retry_after="0")
    launch = h.actuator.launch(h.spec, h.request())
    assert launch.ref == "2" and h.clock.slept == [1.0] and h.sent("GET") == [STS] * 5


def test_a_pod_deleted_by_someone_else_is_not_a_missing_statefulset(
    kube: FakeKube, harness: Callable[..., Harness]
) -> None:
    h = harness(replicas=2, update_strategy="OnDelete", partition=None, on_delete="delete-pods")
    kube.before_next("DELETE", "pods", lambda: kube.delete_pod(NS, "stack-1"))  # quicker than us: our DELETE 404s
    finish = h.roll()
    assert finish == model.Finish(True, f"rolled out: stack-0, stack-1 run {NEW}")
    assert h.sent("DELETE") == ["stack-1", "stack-0"]


def test_a_bare_config_digest_cannot_be_verified(kube: FakeKube, harness: Callable[..., Harness]) -> None:
    h = harness(replicas=2)
    config = "sha256:" + "c" * 64
    kube.side_load(NS, STS, config)  # `kind load`: the node has the image, but no repository digest for it
    finish = h.roll()
    assert finish == model.Finish(
        False,
        f"roll-out of {NS}/{STS} finished but running {NEW} cannot be verified: stack-0, stack-1: digest cannot be "
        f"verified: its imageID {config} is the image's config digest, not a registry digest: the node holds the "
        "image without a repository digest (loaded by hand or with `kind load`, not pulled)",
    )


@pytest.mark.parametrize(
    ("image_id", "digest", "why"),
    [
        (f"docker.io/xchem/fragalysis-stack@{NEW}", NEW, ""),
        (f"docker-pullable://xchem/fragalysis-stack@{NEW}", NEW, ""),
        (NEW, None, "config digest"),
        (f"docker://{NEW}", None, "config digest"),
        ("", None, "no imageID reported yet"),
        ("sha256:abc", None, "shows no sha256 digest"),
        (f"@{NEW}", None, "shows no sha256 digest"),
    ],
)
def test_what_an_image_id_says(image_id: str, digest: str | None, why: str) -> None:
    seen = rollout.running_digest(image_id)
    assert seen.digest == digest and why in seen.unknown


def test_a_stop_while_a_patch_is_throttled_ends_the_asking_at_once(
    kube: FakeKube, harness: Callable[..., Harness]
) -> None:
    h = harness(replicas=1)
    kube.fail_next(10_000, 429, resource="statefulsets", method="PATCH")

    def keep_alive() -> None:  # the stop request arrives during the first wait
        if h.clock.slept:
            raise errors.Stopped("stopping")

    with pytest.raises(errors.Stopped):
        h.actuator.launch(h.spec, h.request(), keep_alive=keep_alive)
    assert len(h.sent("PATCH")) <= 2


def test_an_api_outage_at_the_end_of_the_timeout_is_not_a_failed_rollout(
    kube: FakeKube, harness: Callable[..., Harness]
) -> None:
    """It may well have finished: failing it would restart every pod again on the retry."""
    h = harness(replicas=1)
    request = h.request()
    launch = h.actuator.launch(h.spec, request)
    kube.fail_next(10**6, 503, resource="statefulsets", method="GET")
    result = h.actuator.wait(h.spec, h.record(request, launch), keep_alive=lambda: None)
    assert isinstance(result, model.Unfinished) and "checked again in the next pass" in result.detail

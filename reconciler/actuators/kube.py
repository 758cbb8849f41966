"""Roll a StatefulSet directly and wait for the roll-out.

`restart` and `pin` each send one strategic-merge PATCH, built (and recognised on the StatefulSet) by `kube_patch`.
The wait uses a predicate stricter than kubectl's (see `rollout`); an `OnDelete` StatefulSet needs its pods deleted,
which is done one at a time in reverse ordinal order only when the action says `on_delete = "delete-pods"`. After
the roll-out every updated pod's `imageID` digest is compared with the expected one.

The API server throttles (429) and fails (5xx) now and then; neither fails a roll-out. `launch` asks again for up
to `LAUNCH_BUDGET` of injected time, and before re-sending a PATCH whose fate is unknown it looks for the patch on
the StatefulSet; `wait` keeps polling through them until the action's timeout.
Receives its `kubernetes.client.ApiClient`; builds none. Kubernetes errors are mapped here, once (`_mapped`): the
client's own, and an answer that cannot be read, whether the client cannot decode it or it lacks what the roll-out
reads (`rollout.statefulset`, `rollout.pods`), so nothing but our errors leaves the actuator.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Set
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any, NoReturn

from kubernetes import client as k8s

from reconciler import errors, model
from reconciler.actuators import kube_errors, kube_patch, rollout

log = logging.getLogger(__name__)
CONFLICT_RETRIES = 3
REQUEST_TIMEOUT = (3.0, 7.0)  # connect, read: a stalled API server must not hold a pass (and a stop) forever
# `launch` runs between two renewals of the lease, so its asking again is bounded in (injected) time
LAUNCH_BUDGET = timedelta(seconds=30)
RETRY_AFTER_CAP = 30.0  # seconds: the server's Retry-After is honoured up to this
BACKOFF_FIRST = 1.0  # seconds: after a 5xx or a lost connection without Retry-After, doubling to RETRY_AFTER_CAP


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
    def request(self, spec: model.StatefulSetAction, target: model.Target) -> dict[str, Any]:
        """The exact PATCH: path, content type and strategic-merge body (`kube_patch.request`). Nothing is sent."""
        return kube_patch.request(spec, target, clock=self._clock)

    @staticmethod
    def mark(spec: model.StatefulSetAction, request: Mapping[str, Any], marker: str) -> dict[str, Any]:
        """The request as recorded: a patch needs no marker, since `find` recognises the patch itself."""
        return dict(request)

    # --- launch ---------------------------------------------------------------------------------------------
    def launch(
        self,
        spec: model.StatefulSetAction,
        request: Mapping[str, Any],
        *,
        keep_alive: Callable[[], None] = lambda: None,
    ) -> model.Launch:
        """PATCH once; throttling and failures are asked again within LAUNCH_BUDGET, looking before re-sending.

        Every attempt sends the same recorded body, so a patch that lands twice changes nothing the second time (no
        new generation, no second restart); looking first (`_applied`, as `find` does) tells the generation.
        Raises LaunchOutcomeUnknown when a PATCH of this launch may have been applied (a 5xx, a dropped connection)
        and the budget ran out before it could be seen; KubeUnavailable when nothing was applied for sure (every
        PATCH was throttled or never connected).
        """
        deadline = self._clock() + LAUNCH_BUDGET
        body = dict(request["body"])
        unsure: errors.KubeError | None = None  # what left a PATCH of ours with its fate unknown
        note: str | None = None
        checked = False
        conflicts = failures = 0
        said = ""  # the last failure logged: the same one again is not said again
        while True:
            step = "read"
            try:
                if not checked:
                    note = self._preflight(spec, self._read(spec))
                    checked = True
                if unsure is not None and (ref := self._applied(spec, body)) is not None:
                    log.info("StatefulSet %s/%s: the patch was applied (generation %s)", spec.namespace, spec.name, ref)
                    return model.Launch(ref=ref, link=None, note=note)
                step = "patch"
                with self._mapped("patch", "statefulsets", spec):
                    patched = self._apps.patch_namespaced_stateful_set(
                        spec.name,
                        spec.namespace,
                        body,
                        field_manager=kube_patch.FIELD_MANAGER,
                        _request_timeout=REQUEST_TIMEOUT,
                    )
                    generation = rollout.generation(rollout.statefulset(self._json(patched)))
                return model.Launch(ref=str(generation), link=None, note=note)
            except errors.KubeConflict:
                conflicts += 1
                if conflicts == CONFLICT_RETRIES:
                    raise
                log.info("StatefulSet %s/%s: conflict on patch, trying again", spec.namespace, spec.name)
            except (kube_errors.Unavailable, kube_errors.Unreadable) as exc:
                if isinstance(exc, kube_errors.Unreadable) and step == "read" and unsure is None:
                    raise  # nothing was sent: a StatefulSet that cannot be read fails the attempt
                if step == "patch" and (isinstance(exc, kube_errors.Unreadable) or exc.maybe_applied):
                    unsure = exc  # an unreadable 2xx to a PATCH: applied, most likely, with no generation to tell
                failures += 1
                pause = self._pause(exc, failures, base=BACKOFF_FIRST)
                if self._clock() + timedelta(seconds=pause) > deadline:
                    self._give_up(exc, unsure)
                if str(exc) != said:
                    # info: the action's outcome, if it comes to that, is the warning (said once per pass)
                    log.info("StatefulSet %s/%s: %s; asking again", spec.namespace, spec.name, exc)
                    said = str(exc)
                keep_alive()  # a stop (or a lost lease) ends the asking at once
                self._sleep(pause)

    def _preflight(self, spec: model.StatefulSetAction, sts: Mapping[str, Any]) -> str | None:
        """Refuse what the patch cannot roll; a warning to keep with the action, if any."""
        container = kube_patch.container(sts, spec)
        if rollout.strategy(sts) == "OnDelete" and spec.on_delete is not model.OnDelete.DELETE_PODS:
            raise errors.ActionRefused(
                f"StatefulSet {spec.namespace}/{spec.name} uses the OnDelete update strategy: its pods must be "
                'deleted to pick up the change; set on_delete = "delete-pods" to let reconciler delete them'
            )
        policy = container.get("imagePullPolicy")
        if spec.mode is not model.RolloutMode.RESTART or policy == "Always":
            return None
        note = (
            f"warning: container {spec.container!r} has imagePullPolicy {rollout.shown(policy)}, "
            'so a restart may not pull the new digest; use mode = "pin" or imagePullPolicy Always'
        )
        log.warning("StatefulSet %s/%s: %s", spec.namespace, spec.name, note)
        return note

    @staticmethod
    def _give_up(exc: errors.KubeError, unsure: errors.KubeError | None) -> NoReturn:
        budget = f"within {LAUNCH_BUDGET.total_seconds():g}s of asking again"
        if unsure is not None:
            # even a patch not seen since may still land: the API server's timeout filter answers 504 while the
            # handler goes on (apiserver filters/timeout.go, "post-timeout activity"), so it stays unknown
            raise errors.LaunchOutcomeUnknown(
                f"{unsure}; the patch may have been applied and was not seen {budget} ({exc})", answered=False
            ) from None
        raise errors.KubeUnavailable(f"{exc} (so {budget}; nothing was patched)") from None

    def find(
        self, spec: model.StatefulSetAction, record: model.ActionRecord, *, exclude: Set[str] = frozenset()
    ) -> model.Launch | None:
        """Whether our recorded patch is already on the StatefulSet (the process stopped before recording it)."""
        body = (record.request or {}).get("body")
        if not isinstance(body, dict):
            return None
        ref = self._applied(spec, body)
        return None if ref is None else model.Launch(ref=ref, link=None)

    def _applied(self, spec: model.StatefulSetAction, body: Mapping[str, Any]) -> str | None:
        """The StatefulSet's generation if the patch `body` is on it (`kube_patch.applied`), else None."""
        sts = self._read(spec)
        return str(rollout.generation(sts)) if kube_patch.applied(sts, spec, body) else None

    # --- wait -----------------------------------------------------------------------------------------------
    def wait(
        self,
        spec: model.StatefulSetAction,
        record: model.ActionRecord,
        *,
        keep_alive: Callable[[], None],
        progress: Callable[[str, str, datetime], None] = lambda *_: None,
    ) -> model.Finish | model.Unfinished:
        generation = int(record.external_ref or 0)
        started = record.launched_at or self._clock()
        deadline = started + spec.timeout
        last = "not read yet"
        failures = 0
        while True:
            pause = self._poll
            try:
                sts = self._read(spec)
                if rollout.strategy(sts) == "OnDelete":
                    self._delete_next_stale_pod(spec, sts)
                state = rollout.progress(sts, generation=generation)
                last = state.summary
                if state.done and rollout.pods_current(sts, pods := self._pods(spec, sts)):
                    where = f"{spec.namespace}/{spec.name}"
                    return rollout.verify(sts, pods, container=spec.container, expected=record.digest, where=where)
                failures = 0
            except (
                kube_errors.Unavailable,
                kube_errors.Unreadable,
            ) as exc:  # a throttled, failing or garbled API server is not the
                failures += 1  # roll-out failing: the next poll may well read it
                pause = self._pause(exc, failures, base=self._poll)
                if failures == 1 or str(exc) != last:  # said once while it lasts; the outcome is the warning
                    log.info("StatefulSet %s/%s: %s; polling again", spec.namespace, spec.name, exc)
                last = str(exc)
            if self._clock() >= deadline and failures:  # it may well have finished: not a failed roll-out
                return model.Unfinished(
                    f"the Kubernetes API gave no usable answer at the end of the roll-out's {spec.timeout} ({last}); "
                    "it is checked again in the next pass"
                )
            if self._clock() >= deadline:
                return model.Finish(
                    False,
                    f"roll-out of StatefulSet {spec.namespace}/{spec.name} did not finish "
                    f"within {spec.timeout}: {last}",
                )
            progress(f"the roll-out of StatefulSet {spec.namespace}/{spec.name}", last, started)
            keep_alive()
            self._sleep(pause)

    def _delete_next_stale_pod(self, spec: model.StatefulSetAction, sts: Mapping[str, Any]) -> None:
        """OnDelete: delete the highest-ordinal pod still at the old revision, once the others are ready."""
        victim = rollout.next_to_delete(sts, self._pods(spec, sts))
        if victim is None:
            return
        log.info("StatefulSet %s/%s: deleting pod %s (OnDelete)", spec.namespace, spec.name, rollout.shown(victim))
        try:
            with self._mapped("delete", "pods", spec, name=victim):
                self._core.delete_namespaced_pod(victim, spec.namespace, _request_timeout=REQUEST_TIMEOUT)
        except (
            kube_errors.NotFound
        ):  # gone already (deleted by someone else): the controller re-creates it all the same
            # (a DELETE of a missing pod is the pod's own NotFound: apiserver storage/errors InterpretDeleteError)
            log.info("StatefulSet %s/%s: pod %s was already gone", spec.namespace, spec.name, rollout.shown(victim))

    @staticmethod
    def _pause(exc: errors.KubeError, failures: int, *, base: float) -> float:
        """Seconds before asking again: the server's Retry-After (capped), else a doubling back-off; never < base.

        client-go does the same: it retries a 429 (or a 5xx) carrying Retry-After after that many seconds
        (client-go rest/with_retry.go checkWait, up to 10 times); a 429 from the overload filters always carries
        `Retry-After: 1` (apiserver filters/maxinflight.go tooManyRequests, also used by priority-and-fairness).
        """
        if isinstance(exc, kube_errors.Unavailable) and exc.retry_after is not None:
            return max(min(exc.retry_after, RETRY_AFTER_CAP), base)
        return min(base * 2.0 ** (failures - 1), max(RETRY_AFTER_CAP, base))

    # --- reads and error mapping ----------------------------------------------------------------------------
    def _json(self, obj: object) -> object:
        """A client model as the API serves it (camelCase JSON): one shape to read, with absent zeros absent. What
        the answer was (None for `null` or a 204), for `rollout` to check."""
        return self._api.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]

    def _read(self, spec: model.StatefulSetAction) -> dict[str, Any]:
        """The StatefulSet as the API serves it (camelCase JSON), read through the typed client."""
        with self._mapped("get", "statefulsets", spec):
            sts = self._apps.read_namespaced_stateful_set(spec.name, spec.namespace, _request_timeout=REQUEST_TIMEOUT)
            return rollout.statefulset(self._json(sts))

    def _pods(self, spec: model.StatefulSetAction, sts: Mapping[str, Any]) -> list[dict[str, Any]]:
        labels = ((sts.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        with self._mapped("list", "pods", spec):
            listed = self._core.list_namespaced_pod(
                spec.namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT
            )
            return rollout.owned(rollout.pods(self._json(listed)), spec.name)

    def _mapped(
        self, verb: str, resource: str, spec: model.StatefulSetAction, *, name: str | None = None
    ) -> AbstractContextManager[None]:
        """Every Kubernetes error of the call inside, mapped once (`kube_errors.mapped`)."""
        return kube_errors.mapped(verb, resource, spec, host=self._host, name=name)

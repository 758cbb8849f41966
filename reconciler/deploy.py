"""Carrying out a watch's action through the outbox, so that a crash never loses or doubles a deployment.

    planned --launch--> launched(external ref) --wait--> succeeded | failed
       └── launch outcome unknown: look for the job first; not found -> failed (or superseded on resume)

Each transition is committed before the next step. On start, `resume` finishes what a previous process left
open: a `launched` action is waited for, never launched again; a `planned` one is looked for among the
template's recent jobs, and taken as launched if found, else superseded (the pass plans it again if still due).
A failure leaves the watch drifted; `decide` retries it after `decide.backoff`, up to `max_attempts`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence, Set
from datetime import datetime, timedelta
from typing import Any, Protocol

from reconciler import decide, errors, model

log = logging.getLogger(__name__)
# How long a launch whose answer never came stays open before it is taken as never sent: longer than any request
# timeout, so a server still working on it has created its job (and `find` sees it) by then.
UNRESOLVED_GRACE = timedelta(minutes=2)


class Actuator(Protocol):
    """One kind of side effect (an AWX job template, a StatefulSet roll-out)."""

    def request(self, spec: Any, target: model.Target) -> dict[str, Any]: ...

    def launch(self, spec: Any, request: Mapping[str, Any]) -> model.Launch: ...

    def find(
        self, spec: Any, record: model.ActionRecord, *, exclude: Set[str] = frozenset()
    ) -> model.Launch | None: ...

    def wait(self, spec: Any, record: model.ActionRecord, *, keep_alive: Callable[[], None]) -> model.Finish: ...


class Outbox(Protocol):
    def open_actions(self) -> list[model.ActionRecord]: ...

    def refs(self, watch: str) -> set[str]: ...

    def plan(
        self, *, target: model.Target, kind: model.ActionKind, attempt: int, request: Mapping[str, Any], now: datetime
    ) -> model.ActionRecord | None: ...

    def launched(self, action_id: int, launch: model.Launch, now: datetime) -> model.ActionRecord: ...

    def superseded(self, action_id: int, detail: str, now: datetime) -> model.ActionRecord: ...

    def failed(
        self, action_id: int, detail: str, now: datetime, *, retry_at: datetime | None
    ) -> model.ActionRecord: ...

    def succeeded(self, action: model.ActionRecord, detail: str, now: datetime) -> model.ActionRecord: ...


def target_of(watch: model.Watch, observation: model.Observation, deployed: model.Deployed | None) -> model.Target:
    return model.Target(
        watch=watch.name,
        image=watch.image,
        tag=observation.tag,
        digest=observation.digest,
        previous_tag=deployed.tag if deployed else None,
        previous_digest=deployed.digest if deployed else None,
    )


class Deployer:
    def __init__(
        self,
        *,
        outbox: Outbox,
        actuators: Mapping[model.ActionKind, Actuator],
        clock: Callable[[], datetime],
        keep_alive: Callable[[], None] = lambda: None,
    ) -> None:
        self._outbox = outbox
        self._actuators = actuators
        self._clock = clock
        self._keep_alive = keep_alive

    def _actuator(self, spec: model.Action) -> Actuator:
        return self._actuators[spec.kind]

    def describe(self, watch: model.Watch, target: model.Target) -> dict[str, Any]:
        """The exact request the action would send (for --dry-run); changes nothing anywhere."""
        assert watch.action is not None
        return self._actuator(watch.action).request(watch.action, target)

    def act(self, watch: model.Watch, target: model.Target, *, attempt: int) -> model.ActionRecord | None:
        """Plan, launch, wait and record one action; None when another instance already has it open."""
        spec = watch.action
        assert spec is not None
        actuator = self._actuator(spec)
        try:
            request = actuator.request(spec, target)
        except errors.ActuatorError as exc:  # nothing was sent; still an attempt, recorded and retried
            record = self._outbox.plan(target=target, kind=spec.kind, attempt=attempt, request={}, now=self._clock())
            return None if record is None else self._failed(record, str(exc))
        self._keep_alive()  # never plan, nor launch, without the lease
        record = self._outbox.plan(target=target, kind=spec.kind, attempt=attempt, request=request, now=self._clock())
        if record is None:
            return None
        log.info(
            "watch %s: action #%d planned: %s",
            watch.name,
            record.id,
            spec.describe(),
            extra={"watch": watch.name, "action_id": record.id},
        )
        try:
            self._keep_alive()
            launch = actuator.launch(spec, request)
        except errors.LaunchOutcomeUnknown as exc:
            try:
                launch_found = actuator.find(spec, record, exclude=self._outbox.refs(record.watch))
            except errors.ActuatorError:
                launch_found = None
            if launch_found is None and exc.answered:
                return self._failed(record, f"{exc}; nothing was launched")
            if launch_found is None:  # the server may still act on it: resolved by a later pass's `resume`
                log.warning(
                    "watch %s: action #%d: %s; left planned, to be looked for again",
                    watch.name,
                    record.id,
                    exc,
                    extra={"watch": watch.name, "action_id": record.id},
                )
                return record
            launch = launch_found
        except errors.ActuatorError as exc:
            return self._failed(record, str(exc))
        record = self._outbox.launched(record.id, launch, self._clock())
        log.info(
            "watch %s: action #%d launched: %s",
            watch.name,
            record.id,
            launch.link or launch.ref,
            extra={"watch": watch.name, "action_id": record.id},
        )
        return self._wait(spec, record)

    def resume(self, watches: Sequence[model.Watch]) -> list[model.ActionRecord]:
        """Finish the actions a previous process left open (called under the lease, before a pass)."""
        by_name = {w.name: w for w in watches}
        finished = []
        for left_open in self._outbox.open_actions():
            record = left_open
            watch = by_name.get(record.watch)
            if watch is None or watch.action is None or watch.action.kind is not record.kind:
                continue  # not ours to finish in this run (another watch selection, or a changed configuration)
            spec = watch.action
            if record.status is model.ActionStatus.PLANNED:
                try:
                    launch = self._actuator(spec).find(spec, record, exclude=self._outbox.refs(record.watch))
                except errors.ActuatorError as exc:
                    log.warning(
                        "watch %s: action #%d: cannot tell whether it launched: %s", record.watch, record.id, exc
                    )
                    continue
                if launch is None and self._clock() - record.created_at < UNRESOLVED_GRACE:
                    continue  # its request may still be acted on; look again in a later pass
                if launch is None:
                    finished.append(
                        self._outbox.superseded(
                            record.id,
                            "never launched (the process stopped first); planned again if still due",
                            self._clock(),
                        )
                    )
                    continue
                record = self._outbox.launched(record.id, launch, self._clock())
            log.info("watch %s: resuming action #%d (%s)", record.watch, record.id, record.link or record.external_ref)
            finished.append(self._wait(spec, record))
        return finished

    def _wait(self, spec: model.Action, record: model.ActionRecord) -> model.ActionRecord:
        try:
            finish = self._actuator(spec).wait(spec, record, keep_alive=self._keep_alive)
        except errors.ActuatorError as exc:  # e.g. the permission to follow the roll-out is missing
            return self._failed(record, str(exc))
        detail = "; ".join(filter(None, [finish.detail, record.detail]))  # keep a launch warning with the outcome
        if finish.succeeded:
            done = self._outbox.succeeded(record, detail, self._clock())
            log.info(
                "watch %s: action #%d succeeded: %s",
                record.watch,
                record.id,
                finish.detail,
                extra={"watch": record.watch, "action_id": record.id},
            )
            return done
        return self._failed(record, detail)

    def _failed(self, record: model.ActionRecord, detail: str) -> model.ActionRecord:
        now = self._clock()
        log.warning(
            "watch %s: action #%d failed (attempt %d): %s",
            record.watch,
            record.id,
            record.attempt,
            detail,
            extra={"watch": record.watch, "action_id": record.id},
        )
        return self._outbox.failed(record.id, detail, now, retry_at=now + decide.backoff(record.attempt))

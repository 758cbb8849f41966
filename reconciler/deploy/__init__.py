"""Carrying out a watch's action through the outbox, so that a crash or a misbehaving system never loses or
doubles a deployment.

    [awaiting_approval --approved-->] planned --launch--> launched(external ref) --wait--> succeeded | failed
       └── launch outcome unknown (a timeout, a gateway's 502/503/504): looked for (`lookup`) until its grace has
           passed, never launched again before; found -> launched, not found -> failed as an outage

Each transition is committed before the next step. Here: an action planned, or recorded awaiting approval and
released once approved (or withdrawn, or superseded, when it no longer stands); from there, `launch` follows it to
its end. On start, `resume` finishes what a previous process left open: a `launched` action is waited for, never
launched again; a `planned` one is looked for and taken as launched if found, else superseded once the grace has
passed (the pass plans it again if still due). An open action whose watch no longer has an action of its kind in
the configuration is closed as superseded.

How a failure counts, and when it is tried again: `failures`. A wait may end `Unfinished` (a cancel not yet
effective): the action stays open and no retry runs beside it (`launch`). What it needs of actuators and the store:
`ports`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from reconciler import decide, errors, events, model
from reconciler.deploy.launch import Launcher
from reconciler.deploy.launch import extra as _extra
from reconciler.deploy.ports import Actuator, Outbox, Progress, Tell

__all__ = ["Actuator", "Deployer", "Outbox", "Progress", "Tell", "marker", "target_of"]

log = logging.getLogger(__name__)


def target_of(watch: model.Watch, observation: model.Observation, deployed: model.Deployed | None) -> model.Target:
    return model.Target(
        watch=watch.name,
        image=watch.image,
        tag=observation.tag,
        digest=observation.digest,
        previous_tag=deployed.tag if deployed else None,
        previous_digest=deployed.digest if deployed else None,
    )


def marker(watch: str, action_id: int | str) -> str:
    """What a launch carries to say which action it belongs to: `<watch>#<action id>`."""
    return f"{watch}#{action_id}"


def _quiet(what: str, state: str, since: datetime) -> None:
    """No one to tell how a wait goes."""


class Deployer:
    def __init__(
        self,
        *,
        outbox: Outbox,
        actuators: Mapping[model.ActionKind, Actuator],
        clock: Callable[[], datetime],
        keep_alive: Callable[[], None] = lambda: None,
        sleep: Callable[[float], object] = lambda _: None,
        configured: Sequence[model.Watch] | None = None,
        progress: Progress = _quiet,
    ) -> None:
        self._outbox = outbox
        self._actuators = actuators
        self._clock = clock
        self._keep_alive = keep_alive
        self._configured = None if configured is None else {w.name: w for w in configured}
        self._launcher = Launcher(
            outbox=outbox, actuators=actuators, clock=clock, keep_alive=keep_alive, sleep=sleep, progress=progress
        )

    def _actuator(self, spec: model.Action) -> Actuator:
        return self._actuators[spec.kind]

    def describe(self, watch: model.Watch, target: model.Target) -> dict[str, Any]:
        """The exact request the action would send (for --dry-run); changes nothing anywhere."""
        assert watch.action is not None
        actuator = self._actuator(watch.action)
        return actuator.mark(watch.action, actuator.request(watch.action, target), marker(watch.name, "<id>"))

    def act(
        self,
        watch: model.Watch,
        target: model.Target,
        *,
        attempt: int,
        outages: int = 0,
        last: model.ActionRecord | None = None,
    ) -> model.ActionRecord | None:
        """Plan, launch, wait and record one action; None when another instance already has it open.

        On a watch that needs approval, the action is first recorded awaiting approval, with its exact request,
        and carried out only when `last` is that action, approved; one that no longer stands (a newer digest,
        changed configuration) is superseded. A retry of an approved digest carries its approval."""
        spec = watch.action
        assert spec is not None
        if last is not None and last.status is model.ActionStatus.AWAITING_APPROVAL:
            if last.approved and decide.awaits_this(watch, last, target):
                return self._release(watch, last)
            self._keep_alive()
            why = f"superseded by {target.tag} ({events.short(target.digest)}) before it was launched"
            if self._outbox.withdrawn(last.id, why, self._clock()) is None:
                return None  # released meanwhile (being launched) or rejected: a later pass sees what to do
        actuator = self._actuator(spec)
        carried = last if decide.carries_approval(watch, last, target) else None

        def plan(request: Callable[[int], Mapping[str, Any]], *, approve: bool) -> model.ActionRecord | None:
            return self._outbox.plan(
                target=target,
                kind=spec.kind,
                attempt=attempt,
                request=request,
                now=self._clock(),
                fingerprint=model.fingerprint(spec),
                outages=outages,
                needs_approval=approve,
                approval=carried,
                tell=self._launcher.tell(watch),
            )

        try:
            request = actuator.request(spec, target)
        except errors.ActuatorError as exc:  # nothing was sent; still recorded, and retried after a back-off
            record = plan(lambda _: {}, approve=False)
            return None if record is None else self._launcher.failed_by(watch, record, exc)
        self._keep_alive()  # never plan, nor launch, without the lease
        record = plan(
            lambda action_id: actuator.mark(spec, request, marker(watch.name, action_id)), approve=watch.approve
        )
        if record is None:
            return None
        if record.waiting:
            log.info(
                "watch %s: action #%d waits for approval: %s",
                watch.name,
                record.id,
                spec.describe(),
                extra=_extra(record),
            )
            return record
        log.info("watch %s: action #%d planned: %s", watch.name, record.id, spec.describe(), extra=_extra(record))
        return self._launcher.launch(watch, record)

    def _release(self, watch: model.Watch, waiting: model.ActionRecord) -> model.ActionRecord | None:
        """An approved action: planned now (by this process alone), then launched as any other."""
        self._keep_alive()
        record = self._outbox.release(waiting.id, self._clock())
        if record is None:  # another process released it, or it was superseded meanwhile
            return None
        log.info(
            "watch %s: action #%d approved by %s; launching",
            watch.name,
            record.id,
            record.decided_by,
            extra=_extra(record),
        )
        return self._launcher.launch(watch, record)

    def withdraw(self, record: model.ActionRecord, why: str) -> model.ActionRecord | None:
        """An action waiting for approval that no longer stands for what is observed: closed, nothing sent; None
        when it no longer waits (released meanwhile, or rejected)."""
        withdrawn = self._outbox.withdrawn(record.id, f"withdrawn before it was launched: {why}", self._clock())
        if withdrawn is not None:
            log.info("watch %s: action #%d withdrawn: %s", record.watch, record.id, why, extra=_extra(record))
        return withdrawn

    def resume(self, watches: Sequence[model.Watch]) -> list[model.ActionRecord]:
        """Finish the actions a previous process left open (called under the lease, before a pass); close those
        whose watch is configured here without their kind of action. One odd action never stops the others."""
        by_name = {w.name: w for w in watches}
        finished = []
        for record in self._outbox.open_actions():
            try:
                done = self._resume_one(record, by_name)
            except (errors.LeaseLost, errors.Stopped, errors.StoreError):
                raise
            except Exception as exc:  # one odd record must not stop the recovery of the others
                log.error(
                    "watch %s: action #%d could not be resumed, left open: %s",
                    record.watch,
                    record.id,
                    exc,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                    extra=_extra(record),
                )
                continue
            if done is not None:
                finished.append(done)
        return finished

    def _orphaned(self, record: model.ActionRecord) -> str | None:
        """Why an open action no longer belongs to the configuration, if it does not."""
        if self._configured is None:
            return None
        watch = self._configured.get(record.watch)
        if watch is None:  # another configuration's (one database may serve several): not ours to judge
            return None
        if watch.action is None or watch.action.kind is not record.kind:
            return f"watch {record.watch} no longer has an action of kind {record.kind.value} in the configuration"
        return None

    def _resume_one(self, record: model.ActionRecord, by_name: Mapping[str, model.Watch]) -> model.ActionRecord | None:
        orphaned = self._orphaned(record)
        if orphaned is not None:
            running = f"; its {record.link or record.external_ref} may still run" if record.external_ref else ""
            log.warning("action #%d closed: %s%s", record.id, orphaned, running, extra=_extra(record))
            return self._outbox.superseded(record.id, f"closed: {orphaned}{running}", self._clock())
        watch = by_name.get(record.watch)
        if watch is None or watch.action is None or watch.action.kind is not record.kind:
            return None  # another watch selection's, or an unchecked configuration's: not ours to finish here
        if watch.cannot_act is not None:  # e.g. its AWX token is not set: left open until it is
            return None
        if record.status is model.ActionStatus.AWAITING_APPROVAL:  # a pass releases it once approved
            return None
        if record.status is model.ActionStatus.PLANNED:
            why = "the process that launched it stopped before recording an answer"
            return self._launcher.resolve(watch, record, why, resuming=True)
        log.info("watch %s: resuming action #%d (%s)", record.watch, record.id, record.link or record.external_ref)
        return self._launcher.wait(watch, record)

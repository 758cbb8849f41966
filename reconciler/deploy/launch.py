"""A planned action followed to its end: its recorded request sent, the launch recorded, waited for, and its outcome
recorded, each transition committed before the next step.

    planned --launch--> launched(external ref) --wait--> succeeded | failed
       └── launch outcome unknown (a timeout, a gateway's 502/503/504): looked for (`lookup`) until its grace has
           passed, never launched again before; found -> launched, not found -> failed as an outage

A wait may end `Unfinished` (a cancel not yet effective): the action stays open, its note beginning `waiting: `, and
no retry runs beside it. A failure is recorded with its retry time (`failures`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from reconciler import errors, events, model
from reconciler.deploy import failures, lookup
from reconciler.deploy.ports import Actuator, Outbox, Progress, Tell

log = logging.getLogger("reconciler.deploy")  # the deployer's log: what it says of an action, as it always has
OUTAGE = model.Failure.OUTAGE
WAITING = "waiting: "  # how a note of an action left open begins (replaced by the outcome when it ends)


def extra(record: model.ActionRecord) -> dict[str, object]:
    """What a log line about an action carries besides its message."""
    return {"watch": record.watch, "action_id": record.id}


class Launcher:
    def __init__(
        self,
        *,
        outbox: Outbox,
        actuators: Mapping[model.ActionKind, Actuator],
        clock: Callable[[], datetime],
        keep_alive: Callable[[], None],
        sleep: Callable[[float], object],
        progress: Progress,
    ) -> None:
        self._outbox = outbox
        self._progress = progress
        self._actuators = actuators
        self._clock = clock
        self._keep_alive = keep_alive
        self._lookup = lookup.Lookup(outbox=outbox, clock=clock, keep_alive=keep_alive, sleep=sleep)

    def _actuator(self, spec: model.Action) -> Actuator:
        return self._actuators[spec.kind]

    def tell(self, watch: model.Watch) -> Tell:
        """The notices an action of this watch gives rise to as its status changes."""
        return lambda record: events.of_action(watch, record, self._clock())

    def launch(self, watch: model.Watch, record: model.ActionRecord) -> model.ActionRecord:
        """Send a planned action's recorded request, then follow it to its end."""
        assert watch.action is not None
        spec, actuator = watch.action, self._actuator(watch.action)
        try:
            self._keep_alive()
            launch = actuator.launch(spec, record.request or {}, keep_alive=self._keep_alive)
        except errors.LaunchOutcomeUnknown as exc:
            log.warning("watch %s: action #%d: %s; looking for it", watch.name, record.id, exc, extra=extra(record))
            return self.resolve(watch, record, str(exc))
        except errors.ActuatorError as exc:
            return self.failed_by(watch, record, exc)
        return self._launched(watch, record, launch)

    def _launched(self, watch: model.Watch, record: model.ActionRecord, launch: model.Launch) -> model.ActionRecord:
        record = self._outbox.launched(record.id, launch, self._clock(), tell=self.tell(watch))
        log.info(
            "watch %s: action #%d launched: %s",
            record.watch,
            record.id,
            launch.link or launch.ref,
            extra=extra(record),
        )
        return self.wait(watch, record)

    def resolve(
        self, watch: model.Watch, record: model.ActionRecord, why: str, *, resuming: bool = False
    ) -> model.ActionRecord:
        """A launch whose outcome is unknown (`lookup`): found, it is launched; surely never launched, a launch that
        got no answer fails as an outage (backed off, no attempt used) and a row a stopped process left behind is
        superseded, so the pass plans it again; still unknown, it stays open (busy) for a later pass to look again."""
        assert watch.action is not None
        found = self._lookup.look(watch.action, self._actuator(watch.action), record)
        if isinstance(found, model.Launch):
            return self._launched(watch, record, found)
        seconds = int(lookup.UNRESOLVED_GRACE.total_seconds())
        if isinstance(found, lookup.Unknown):
            detail = f"{WAITING}{why}; cannot tell yet whether it launched ({found.why}); looked for again"
            return self._outbox.note(record.id, detail)
        if resuming:
            detail = f"never launched ({why}; no sign of it {seconds}s later); planned again if still due"
            return self._outbox.superseded(record.id, detail, self._clock())
        return self._failed(watch, record, f"{why}; nothing was launched: no sign of it {seconds}s later", OUTAGE)

    def wait(self, watch: model.Watch, record: model.ActionRecord) -> model.ActionRecord:
        """Follow a launched action to its end and record the outcome; one left `Unfinished` stays open."""
        assert watch.action is not None
        spec = watch.action
        try:
            result = self._actuator(spec).wait(spec, record, keep_alive=self._keep_alive, progress=self._progress)
        except errors.ActuatorError as exc:  # e.g. the permission to follow the roll-out is missing
            return self._failed(watch, record, str(exc), model.Failure.DEPLOYMENT)
        if isinstance(result, model.Unfinished):
            log.warning("watch %s: action #%d: %s", record.watch, record.id, result.detail, extra=extra(record))
            return self._outbox.note(record.id, WAITING + result.detail)
        kept = record.detail if record.detail and not record.detail.startswith(WAITING) else None
        detail = "; ".join(filter(None, [result.detail, kept]))  # keep a launch warning with the outcome
        if result.succeeded:
            done = self._outbox.succeeded(record, detail, self._clock(), tell=self.tell(watch))
            log.info("watch %s: action #%d succeeded: %s", record.watch, record.id, result.detail, extra=extra(record))
            return done
        failure = model.Failure.REFUSED if result.final else model.Failure.DEPLOYMENT
        return self._failed(watch, record, detail, failure)

    def failed_by(
        self, watch: model.Watch, record: model.ActionRecord, exc: errors.ActuatorError
    ) -> model.ActionRecord:
        """Record the failure an actuator's error stands for (`failures`)."""
        return self._failed(watch, record, str(exc), failures.failure_of(exc), wait=failures.asked_wait(exc))

    def _failed(
        self,
        watch: model.Watch,
        record: model.ActionRecord,
        detail: str,
        failure: model.Failure,
        *,
        wait: timedelta | None = None,
    ) -> model.ActionRecord:
        """Record the failure with its retry time: the back-off, or longer when the system asked (a rate limit)."""
        now = self._clock()
        log.warning(
            "watch %s: action #%d failed (%s, attempt %d): %s",
            record.watch,
            record.id,
            failure.value,
            record.attempt,
            detail,
            extra=extra(record),
        )
        retry_at = failures.retry_at(record, failure, now, wait=wait)
        return self._outbox.failed(record.id, detail, now, retry_at=retry_at, failure=failure, tell=self.tell(watch))

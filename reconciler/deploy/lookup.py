"""Looking for a launch whose outcome is unknown (a timeout, a gateway's 502/503/504, a process stopped before it
recorded the answer): its job or run is looked for until UNRESOLVED_GRACE has passed, and it is never launched
again before. Only a look that worked, made once the grace had passed, can tell it was never launched; while
looking fails, the answer is `Unknown`, and the action stays open for a later pass to look again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from reconciler import errors, model
from reconciler.deploy.ports import Actuator, Outbox

log = logging.getLogger(__name__)
# How long a launch whose answer never came stays open before it is taken as never sent: longer than any request
# timeout and a gateway's patience, so a server still working on it has created its job (and `find` sees it).
UNRESOLVED_GRACE = timedelta(minutes=2)
RESOLVE_EVERY = 10.0  # seconds between looks for a launch whose outcome is unknown


@dataclass(frozen=True, slots=True)
class NotLaunched:
    """Looked for, successfully, after the grace: there is no sign of it."""


@dataclass(frozen=True, slots=True)
class Unknown:
    """Looking kept failing (`why`) for twice the grace: a later pass looks again."""

    why: str | None


class Lookup:
    def __init__(
        self,
        *,
        outbox: Outbox,
        clock: Callable[[], datetime],
        keep_alive: Callable[[], None],
        sleep: Callable[[float], object],
    ) -> None:
        self._outbox = outbox
        self._clock = clock
        self._keep_alive = keep_alive
        self._sleep = sleep

    def look(
        self, spec: model.Action, actuator: Actuator, record: model.ActionRecord
    ) -> model.Launch | NotLaunched | Unknown:
        """The launch found (never one another action has recorded), or why none can be taken."""
        while True:
            looked_at = self._clock()
            try:
                found = actuator.find(spec, record, exclude=self._outbox.refs())
                if found is not None and (self._launching_beside(record) or found.ref in self._outbox.refs()):
                    found = None  # read after the look: another action may have launched it meanwhile
                failure = None
            except errors.ActuatorError as exc:
                log.warning("watch %s: action #%d: cannot look for it yet: %s", record.watch, record.id, exc)
                found, failure = None, str(exc)
            if found is not None:
                return found
            if failure is None and looked_at - record.planned_at >= UNRESOLVED_GRACE:
                return NotLaunched()
            waited = self._clock() - record.planned_at
            if waited >= 2 * UNRESOLVED_GRACE:  # looking kept failing: hand over to a later pass, still open
                return Unknown(failure)
            self._keep_alive()
            self._sleep(
                RESOLVE_EVERY
                if waited >= UNRESOLVED_GRACE
                else min(RESOLVE_EVERY, (UNRESOLVED_GRACE - waited).total_seconds())
            )

    def _launching_beside(self, record: model.ActionRecord) -> bool:
        """Whether another action is being launched to the same place (two watches dispatching one workflow): until
        it has recorded what it launched, a job or run found could be its, so none is taken yet. Asked after the
        look, so that whatever the look saw had been launched before."""
        url = (record.request or {}).get("url")
        return any(
            other.id != record.id
            and other.status is model.ActionStatus.PLANNED
            and (other.request or {}).get("url") == url
            for other in self._outbox.open_actions()
        )

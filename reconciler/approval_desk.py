"""The daemon's side of approvals and of the status page: a person's decision received over HTTP (on any instance),
and the look, every APPROVALS_EVERY seconds on the instance holding the lease, for approvals given anywhere (the
CLI, another instance's page), each of which starts its watch's pass once. The pass releases the approved action
(`deploy`), exactly once whoever looks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler import errors, model, report

log = logging.getLogger(__name__)
APPROVALS_EVERY = 2.0  # seconds between looks for approvals given elsewhere
Decide = Callable[[str, str | None, bool, str, int | None], model.ActionRecord]  # (watch, digest, approve?, by, id)


@dataclass(frozen=True, slots=True)
class Approvals:
    """What the daemon needs from the composition root: the status page's document, a person's decision, and the
    approved actions no pass has released yet."""

    page: Callable[[], dict[str, Any]]
    decide: Decide
    approved: Callable[[], list[model.ActionRecord]]


class Desk:
    def __init__(
        self,
        approvals: Approvals,
        *,
        watches: Collection[str],
        acting: Callable[[], bool],
        trigger: Callable[[Sequence[str]], list[str]],
        can_approve: bool,
    ) -> None:
        self._approvals = approvals
        self._watches = watches
        self._acting = acting  # whether this instance holds the lease
        self._trigger = trigger  # start these watches' passes now
        self._can_approve = can_approve  # an API token is configured: the page's buttons work
        self._triggered: set[int] = set()  # approved actions a pass was started for

    def page(self) -> dict[str, Any]:
        return {**self._approvals.page(), "standby": not self._acting(), "can_approve": self._can_approve}

    def decide(self, watch: str, digest: str | None, approve: bool, by: str, action: int | None) -> dict[str, Any]:
        """POST /approve or /reject: recorded by whichever instance is asked; an approval is acted on at once here
        when this instance holds the lease, else by the holder's next look."""
        if watch not in self._watches:
            raise errors.ConfigError(f"no watch named {watch!r}")
        decided = self._approvals.decide(watch, digest, approve, by, action)
        log.info("watch %s: action #%d %s by %s", watch, decided.id, decided.approval, by, extra={"watch": watch})
        if approve and self._acting():
            self.look()
        return {"watch": watch, "action": report.action_document(decided)}

    def look(self) -> None:
        """A pass for each watch with an approved action not yet released, once per action."""
        if not self._acting():
            return
        try:
            approved = [a for a in self._approvals.approved() if a.watch in self._watches]
        except errors.StoreError:
            return  # the lease job says the database is away, once a minute
        fresh = sorted({a.watch for a in approved if a.id not in self._triggered})
        self._triggered = {a.id for a in approved}
        if fresh:
            try:
                self._trigger(fresh)
            except (errors.LockHeld, errors.Stopped):
                self._triggered.clear()  # the next holder's look starts them

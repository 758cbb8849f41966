"""Notifications wired from the settings, for the composition root (`app`): the routes the stores record notices
for, the targets (skipping those whose secret is not set), the courier that delivers them, and `notify test`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import Engine

from reconciler import clients, config, errors, events, model
from reconciler.notify import deliver, targets
from reconciler.store import notices

log = logging.getLogger(__name__)


class Notifications:
    """What one process needs to record and deliver notifications."""

    def __init__(self, settings: Sequence[config.NotifySettings], *, clock: Callable[[], datetime]) -> None:
        self.settings = tuple(settings)
        self._clock = clock
        self._targets: dict[str, targets.Target] | None = None
        self._courier: deliver.Courier | None = None
        self.counted: deliver.Counted = lambda target, event, result: None

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.settings]

    def box(self, engine: Engine) -> notices.NoticeBox:
        """The outbox the stores record notices in; each commit that recorded some wakes the courier."""
        return notices.NoticeBox(engine, [s.route for s in self.settings], recorded=self.wake)

    def wake(self) -> None:
        if self._courier is not None:
            self._courier.wake()

    def targets(self) -> dict[str, targets.Target]:
        """The targets that can be sent to: a target whose secret is not set is left out (its notices wait). An
        Apprise URL that Apprise cannot use is a ConfigError (naming the key, never the URL)."""
        if self._targets is None:
            self._targets = {s.name: _target(s) for s in self.settings if not s.missing and s.url is not None}
        return self._targets

    def courier(self, engine: Engine, *, clock: Callable[[], datetime]) -> deliver.Courier:
        """A courier on `clock` (the clock the notices are recorded by), the one each recording wakes from now."""
        self._courier = deliver.Courier(box=self.box(engine), targets=self.targets(), clock=clock, counted=self.counted)
        return self._courier

    def test(self, names: Sequence[str]) -> list[tuple[str, str | None]]:
        """`reconciler notify test`: a `test` notice sent now to each target (these names, or all), not through
        the outbox; per target, None when it was delivered, else why not."""
        chosen = [s for s in self.settings if not names or s.name in names]
        results: dict[str, str | None] = {}
        for s in chosen:
            if s.missing:
                results[s.name] = f"{s.name}: " + "; ".join(str(m) for m in s.missing)
        ready = [self.targets()[s.name] for s in chosen if s.name not in results]
        now = self._clock()

        def item_for(name: str) -> model.Outgoing:
            notice_id = str(uuid.uuid4())
            notice = events.test(name, now)
            return model.Outgoing(
                seq=0,
                id=notice_id,
                target=name,
                event=model.Event.TEST,
                watch=None,
                body=notice.body(notice_id),
                created_at=now,
            )

        results.update(deliver.sent_now(ready, item_for))
        return [(s.name, results[s.name]) for s in chosen]


def _target(s: config.NotifySettings) -> targets.Target:
    assert s.url is not None
    timeout = s.timeout.total_seconds()
    if s.kind is model.NotifyKind.APPRISE:
        unusable = targets.check_apprise_url(s.url.reveal())
        if unusable is not None:
            raise errors.ConfigError(f"notify target {s.name}: the URL in {s.shown}: {unusable}")
        return targets.AppriseTarget(name=s.name, url=s.url.reveal(), timeout=timeout)
    assert s.secret is not None
    return targets.WebhookTarget(
        name=s.name,
        url=s.url.reveal(),
        secret=s.secret.reveal(),
        session=clients.notify_session(),
        timeout=timeout,
        shown=s.shown,
    )

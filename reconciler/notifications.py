"""Notifications wired from the settings, for the composition root (`app`): the routes the stores record notices
for, the targets (skipping those whose secret is not set), the courier that delivers them, and `notify test`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from reconciler import config, errors, events, model
from reconciler.store import notices

if TYPE_CHECKING:
    from reconciler.notify import deliver, targets

log = logging.getLogger(__name__)


class Notifications:
    """What one process needs to record and deliver notifications."""

    def __init__(
        self, settings: Sequence[config.NotifySettings], *, clock: Callable[[], datetime], instance: str = "default"
    ) -> None:
        self.settings = tuple(settings)
        self._instance = instance
        self._clock = clock
        self._targets: dict[str, targets.Target] | None = None
        self._unusable: dict[str, str] = {}  # target -> why it cannot send (a URL Apprise cannot use)
        self._courier: deliver.Courier | None = None
        self.counted: deliver.Counted = lambda target, event, result: None

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.settings]

    def box(self, engine: Engine) -> notices.NoticeBox:
        """The outbox the stores record notices in; each commit that recorded some wakes the courier."""
        return notices.NoticeBox(engine, [s.route for s in self.settings], recorded=self.wake, instance=self._instance)

    def wake(self) -> None:
        if self._courier is not None:
            self._courier.wake()

    def targets(self, *, quiet: bool = False) -> dict[str, targets.Target]:
        """The targets that can be sent to. One whose secret is not set, or whose Apprise URL Apprise cannot use,
        is left out, and only it: its notices wait (for a day) while the others go out. The first call says why,
        once (never showing the URL)."""
        if self._targets is None:
            self._targets = {}
            for s in self.settings:
                if s.missing or s.url is None:
                    continue
                try:
                    self._targets[s.name] = _target(s)
                except errors.ConfigError as exc:
                    self._unusable[s.name] = str(exc)
                    if not quiet:
                        log.warning("notify target %s: %s; its notifications are kept for a day, not sent", s.name, exc)
        return self._targets

    def unusable(self) -> dict[str, str]:
        """The targets whose URL cannot be used, and why (`config check` says so its own way)."""
        self.targets(quiet=True)
        return dict(self._unusable)

    def cannot_send(self) -> dict[str, str]:
        """Why each target that cannot send cannot: its missing secret, or its unusable URL (after `targets`)."""
        why = {s.name: why for s in self.settings if (why := s.cannot_send)}
        return {**why, **self._unusable}

    def courier(
        self, engine: Engine, *, clock: Callable[[], datetime], halt: threading.Event | None = None
    ) -> deliver.Courier:
        """A courier on `clock` (the clock the notices are recorded by), the one each recording wakes from now;
        `halt` (the process's stop request) ends its drain at once."""
        from reconciler.notify import deliver  # noqa: PLC0415  (requests: not for the commands that only read)

        self._courier = deliver.Courier(
            box=self.box(engine), targets=self.targets(), clock=clock, counted=self.counted, halt=halt
        )
        return self._courier

    def test(self, names: Sequence[str]) -> list[tuple[str, str | None]]:
        """`reconciler notify test`: a `test` notice sent now to each target (these names, or all), not through
        the outbox; per target, None when it was delivered, else why not."""
        chosen = [s for s in self.settings if not names or s.name in names]
        senders = self.targets(quiet=True)  # each line says why
        unable = self.cannot_send()
        results: dict[str, str | None] = {s.name: f"{s.name}: {unable[s.name]}" for s in chosen if s.name in unable}
        ready = [senders[s.name] for s in chosen if s.name not in results]
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

        from reconciler.notify import timed_send  # noqa: PLC0415

        results.update(timed_send.sent_now(ready, item_for))
        return [(s.name, results[s.name]) for s in chosen]


def _target(s: config.NotifySettings) -> targets.Target:
    from reconciler import clients  # noqa: PLC0415  (requests: not for the commands that only read)
    from reconciler.notify import targets  # noqa: PLC0415

    assert s.url is not None
    timeout = s.timeout.total_seconds()
    if s.kind is model.NotifyKind.APPRISE:
        unusable = targets.check_apprise_url(s.url.reveal())
        if unusable is not None:
            raise errors.ConfigError(f"the URL in {s.shown}: {unusable}")
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

"""Notifications as values: the events people are told of, a notice (what the webhook body says), which targets
want it, and a notice waiting in the outbox. Nothing here does I/O or knows a receiver's address.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from reconciler import errors

CHECK_FAILING_AFTER = 3  # failed checks in a row (intervals, for the daemon) before `check_failing` is told


class Event(enum.StrEnum):
    DRIFT = "drift"  # a new tag or digest seen on a watch with an action
    AWAITING_APPROVAL = "awaiting_approval"
    STARTED = "started"  # launched
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    GAVE_UP = "gave_up"  # failed, and not retried until `reconciler retry` or a changed action
    CHECK_FAILING = "check_failing"
    RECOVERED = "recovered"  # checks work again after `check_failing`
    TEST = "test"  # `reconciler notify test`


DEFAULT_EVENTS = frozenset(Event) - {Event.DRIFT}


class NotifyKind(enum.StrEnum):
    APPRISE = "apprise"  # an Apprise URL: Slack, Teams, Discord, e-mail, json://, form://, …
    WEBHOOK = "webhook"  # our own JSON, signed with HMAC-SHA256


@dataclass(frozen=True, slots=True)
class Notice:
    """One event to tell people of, as the webhook body carries it (less the `id`, given when it is recorded)."""

    event: Event
    at: datetime
    message: str
    watch: str | None = None
    image: str | None = None
    tag: str | None = None
    digest: str | None = None
    previous_tag: str | None = None
    previous_digest: str | None = None
    action: Mapping[str, Any] | None = None  # {"id", "kind", "status", "attempt", "link"}

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise errors.ConfigError("a notice's time must be timezone-aware")

    @property
    def title(self) -> str:
        """What Apprise targets get as the title: the event and the watch."""
        return f"{self.event.value}: {self.watch}" if self.watch else f"{self.event.value}: reconciler"

    def body(self, notice_id: str) -> str:
        """The webhook's body, exactly the bytes signed and sent (and kept, so a redelivery is the same)."""
        previous = None
        if self.previous_tag is not None or self.previous_digest is not None:
            previous = {"tag": self.previous_tag, "digest": self.previous_digest}
        document = {
            "id": notice_id,
            "event": self.event.value,
            "at": self.at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "watch": self.watch,
            "image": self.image,
            "tag": self.tag,
            "digest": self.digest,
            "previous": previous,
            "action": dict(self.action) if self.action is not None else None,
            "message": self.message,
        }
        return json.dumps(document, separators=(", ", ": "), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Route:
    """Which notices one `[[notify]]` target wants: its events, and its watches (all when None)."""

    target: str
    events: frozenset[Event] = DEFAULT_EVENTS
    watches: frozenset[str] | None = None

    def wants(self, notice: Notice) -> bool:
        if notice.event not in self.events:
            return False
        return self.watches is None or notice.watch is None or notice.watch in self.watches


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A notice in the outbox, for one target: its body as recorded, and how its delivery has gone so far."""

    seq: int  # the order it was recorded in: per target and watch, delivered in this order
    id: str  # the notice's id, shared by its copies for other targets and by a redelivery
    target: str
    event: str  # an Event's value (as recorded: a newer version may record one this one does not know)
    watch: str | None
    body: str = field(repr=False)
    created_at: datetime
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None

    @property
    def notice(self) -> Mapping[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document

    def expired(self, now: datetime, keep: timedelta) -> bool:
        return now - self.created_at >= keep


@dataclass(frozen=True, slots=True)
class Backlog:
    """A target's undelivered notifications, for `status`."""

    target: str
    undelivered: int = 0
    oldest_at: datetime | None = None
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    dropped: int = 0  # given up on after retrying for a day

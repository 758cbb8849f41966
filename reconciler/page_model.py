"""The values the status page's template shows (`page_view` makes them from the daemon's documents): plain text
and numbers, already worded; the template escapes every one of them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Moment:
    """A time as the page shows it: its age ("3m ago", "in 5m") and the ISO text it came from (for a tooltip)."""

    iso: str
    age: str


@dataclass(frozen=True, slots=True)
class Badge:
    """A state or status: the word shown and its colour (a CSS class `tone-<colour>`), never the colour alone."""

    value: str
    word: str
    tone: str


@dataclass(frozen=True, slots=True)
class Image:
    tag: str | None
    digest: str | None
    short: str | None  # "sha256:" and 12 hex digits
    moment: Moment | None


@dataclass(frozen=True, slots=True)
class Action:
    title: str  # "#12 AWX"
    status: Badge
    attempt: int | None  # shown from the second attempt on
    moment: Moment | None
    link: str | None  # an http(s) ref only
    link_text: str
    ref_text: str | None  # a ref that is not a web address, as text
    detail: str | None
    approval: str | None
    next_attempt: Moment | None


@dataclass(frozen=True, slots=True)
class Watch:
    name: str
    image: str | None
    selector: str | None
    state: Badge
    observed: Image | None
    deployed: Image | None
    checked: Moment | None
    action: Action | None
    error: str | None
    cannot_act: str | None
    deploys_via: str | None


@dataclass(frozen=True, slots=True)
class Approval:
    watch: str
    digest: str
    short: str
    tag: str | None
    action_id: str | None
    since: Moment | None
    deploys_via: str | None
    environment: str | None
    command: str  # the CLI command that approves it, quoted for a POSIX shell


@dataclass(frozen=True, slots=True)
class Event:
    moment: Moment | None
    watch: str | None
    title: str  # "observation", "action #12 AWX"
    what: Badge  # the verdict, or the action's status
    image: Image | None
    detail: str | None
    is_error: bool
    link: str | None
    link_text: str


@dataclass(frozen=True, slots=True)
class Page:
    generated: Moment | None
    generated_at: str | None  # "2026-11-27 09:00:00 UTC"
    refresh_seconds: int
    standby: bool
    can_approve: bool
    watches: list[Watch]
    approvals: list[Approval]
    history: list[Event]
    notifications: list[str]

"""What the status page shows, taken from the daemon's documents (`page.render` turns it into HTML): every watch
with its state as a tone and a word, its observed and deployed image and their ages, its last action and link;
the actions waiting for approval; the newest history entries. Every field of the documents is optional: a
missing or odd one makes the page say less, never fail. Links are made only of http(s) references. Pure: ages are
counted up to `now`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from reconciler.page_model import Action, Approval, Badge, Event, Image, Moment, Page, Watch

HISTORY_LIMIT = 50
REFRESH_SECONDS = 30
_TONES = {
    "in_sync": "green",
    "settling": "blue",
    "deploying": "blue",
    "awaiting_approval": "amber",
    "drifted": "orange",
    "failed": "red",
    "error": "red",
    "unknown": "grey",
}
_ACTION_TONES = {
    "succeeded": "green",
    "planned": "blue",
    "launched": "blue",
    "awaiting_approval": "amber",
    "failed": "red",
    "rejected": "red",
    "superseded": "grey",
}
_VERDICT_TONES = {
    "in_sync": "green",
    "baseline": "green",
    "follow": "green",
    "settling": "blue",
    "busy": "blue",
    "drift": "orange",
    "awaiting_approval": "amber",
    "retry_later": "red",
    "gave_up": "red",
    "blocked": "red",
    "rejected": "red",
    "error": "red",
}
_KIND_WORDS = {"awx": "AWX", "github": "GitHub", "statefulset": "StatefulSet"}
_LINK_WORDS = {"awx": "AWX job", "github": "GitHub run"}
_WEB_LINK = re.compile(r"https?://[^\s]+\Z", re.IGNORECASE)


def generated(document: Mapping[str, Any]) -> datetime:
    """When the document was made (what ages are counted up to); now, when it does not say."""
    return _moment(_mapping(document.get("status")).get("generated_at")) or datetime.now(UTC)


def page_of(document: Mapping[str, Any], now: datetime) -> Page:
    """What the template shows, taken from `document` with every field optional; ages are counted up to `now`."""
    status = _mapping(document.get("status"))
    history = _mapping(document.get("history"))
    return Page(
        generated=_when(status.get("generated_at"), now),
        generated_at=_clock_time(status.get("generated_at")),
        refresh_seconds=REFRESH_SECONDS,
        standby=document.get("standby") is True,
        can_approve=document.get("can_approve") is True,
        watches=[_watch(w, now) for w in _mappings(status.get("watches"))],
        approvals=[a for a in (_approval(a, now) for a in _mappings(document.get("approvals"))) if a is not None],
        history=[_event(e, now) for e in _mappings(history.get("events"))[:HISTORY_LIMIT]],
        notifications=_notifications(_mapping(status.get("notifications")), now),
    )


def _watch(watch: Mapping[str, Any], now: datetime) -> Watch:
    action = _mapping(watch.get("last_action"))
    approval = _mapping(watch.get("approval")) or _mapping(action.get("approval"))
    return Watch(
        name=_text(watch.get("name")) or "(unnamed)",
        image=_text(watch.get("image")),
        selector=_text(watch.get("selector")),
        state=_badge(watch.get("state"), _TONES, default="unknown"),
        observed=_image(_mapping(watch.get("observed")), now, "since"),
        deployed=_image(_mapping(watch.get("deployed")), now, "at"),
        checked=_when(watch.get("checked_at"), now),
        action=_action(action, approval, now) if action else None,
        error=_text(watch.get("last_error")),
        cannot_act=_text(watch.get("cannot_act")),
        deploys_via=_text(watch.get("deploys_via")),
    )


def _image(part: Mapping[str, Any], now: datetime, time_field: str | None = None) -> Image | None:
    """The tag and digest in `part` (an observation, a deployment, a history entry); None when it names neither."""
    tag, digest = _text(part.get("tag")), _text(part.get("digest"))
    if tag is None and digest is None:
        return None
    moment = _when(part.get(time_field), now) if time_field else None
    return Image(tag=tag, digest=digest, short=_short_digest(digest), moment=moment)


def _action(action: Mapping[str, Any], approval: Mapping[str, Any], now: datetime) -> Action:
    kind, ref = _text(action.get("kind")), _text(action.get("ref"))
    link = _web_link(ref)
    attempt = action.get("attempt")
    number = _text(action.get("id"))
    return Action(
        title=" ".join(part for part in (f"#{number}" if number else None, _KIND_WORDS.get(kind or "", kind)) if part),
        status=_badge(action.get("status"), _ACTION_TONES, default="unknown"),
        attempt=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) and attempt > 1 else None,
        moment=_when(action.get("finished_at") or action.get("started_at"), now),
        link=link,
        link_text=_LINK_WORDS.get(kind or "", "details"),
        ref_text=ref if link is None else None,
        detail=_text(action.get("detail")) or _failure(action.get("failure")),
        approval=_approval_note(approval, now),
        next_attempt=_when(action.get("next_attempt_at"), now),
    )


def _failure(failure: Any) -> str | None:
    text = _text(failure)
    return None if text is None else f"failure: {_words(text)}"


def _approval_note(approval: Mapping[str, Any], now: datetime) -> str | None:
    """'approved by alice 3m ago', 'rejected 2h ago', 'waiting for approval'."""
    state = _text(approval.get("state"))
    if state is None:
        return None
    if state == "waiting":
        return "waiting for approval"
    by, when = _text(approval.get("by")), _when(approval.get("at"), now)
    return " ".join(part for part in (state, f"by {by}" if by else None, when.age if when else None) if part)


def _approval(approval: Mapping[str, Any], now: datetime) -> Approval | None:
    """A waiting approval; None without the watch or digest that approving it names."""
    watch, digest = _text(approval.get("watch")), _text(approval.get("digest"))
    if watch is None or digest is None:
        return None
    return Approval(
        watch=watch,
        digest=digest,
        short=_short_digest(digest) or digest,
        tag=_text(approval.get("tag")),
        action_id=_text(approval.get("action_id")),
        since=_when(approval.get("since"), now),
        deploys_via=_text(approval.get("deploys_via")),
        environment=_text(approval.get("environment")),
        command=shlex.join(["reconciler", "approve", watch, "--digest", digest]),
    )


def _event(event: Mapping[str, Any], now: datetime) -> Event:
    action = _mapping(event.get("action"))
    moment, watch = _when(event.get("at"), now), _text(event.get("watch"))
    image = _image(event, now)
    if event.get("type") == "action" and action:
        shown = _action(action, _mapping(action.get("approval")), now)
        title = f"action {shown.title}".rstrip()
        detail = shown.detail or shown.ref_text
        return Event(moment, watch, title, shown.status, image, detail, False, shown.link, shown.link_text)
    error = _text(event.get("error"))
    verdict = _badge(event.get("verdict"), _VERDICT_TONES, default="unknown")
    detail = error or _text(event.get("reason"))
    return Event(moment, watch, "observation", verdict, image, detail, error is not None, None, "")


def _notifications(targets: Mapping[str, Any], now: datetime) -> list[str]:
    """One line for each notification target that cannot send or is behind; none for a target that keeps up."""
    lines = []
    for target, value in targets.items():
        backlog = _mapping(value)
        if cannot := _text(backlog.get("cannot_send")):
            lines.append(f"Notifications to {target} cannot be sent: {cannot}")
        undelivered = backlog.get("undelivered")
        if isinstance(undelivered, int) and undelivered > 0:
            oldest = _when(backlog.get("oldest_at"), now)
            why = _text(backlog.get("last_error"))
            lines.append(
                f"Notifications to {target}: {undelivered} not delivered yet"
                + (f" (oldest {oldest.age})" if oldest else "")
                + (f": {why}" if why else "")
            )
    return lines


# --- small helpers ------------------------------------------------------------------------------------------------


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _mappings(value: Any) -> list[Mapping[str, Any]]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def _text(value: Any) -> str | None:
    """A value as text to show, None for nothing (None or an empty string)."""
    if value is None:
        return None
    return str(value) or None


def _words(value: str) -> str:
    return value.replace("_", " ")


def _badge(value: Any, tones: Mapping[str, str], *, default: str) -> Badge:
    text = _text(value) or default
    return Badge(value=text, word=_words(text), tone=tones.get(text, "grey"))


def _short_digest(digest: str | None) -> str | None:
    """'sha256:' and the first 12 hex digits: enough to tell images apart, short enough for a table."""
    if digest is None:
        return None
    algorithm, colon, hexes = digest.partition(":")
    return f"{algorithm}:{hexes[:12]}" if colon else digest[:12]


def _web_link(ref: str | None) -> str | None:
    """`ref` when it is an http(s) address (an AWX job, a GitHub run), else None: never a javascript: or data: URL."""
    return ref if ref is not None and _WEB_LINK.match(ref) else None


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _clock_time(value: Any) -> str | None:
    """'2026-11-27 09:00:00 UTC'; the text itself for a time not understood; None for none."""
    moment = _moment(value)
    return _text(value) if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _when(value: Any, now: datetime) -> Moment | None:
    """The moment `value` names, with its age at `now`; None for no time, the text itself for one not understood."""
    text = _text(value)
    if text is None:
        return None
    moment = _moment(text)
    return Moment(iso=text, age=text if moment is None else _age(moment, now))


def _age(moment: datetime, now: datetime) -> str:
    """'12s ago', '3m ago', '2h ago', '4d ago'; 'in 5m' for a time to come."""
    seconds = int((now - moment).total_seconds())
    span = abs(seconds)
    size, unit = next(((size, unit) for size, unit in ((86400, "d"), (3600, "h"), (60, "m")) if span >= size), (1, "s"))
    shown = f"{span // size}{unit}"
    return f"in {shown}" if seconds < 0 else f"{shown} ago"

"""Frozen value types shared by every layer: images, watches, observations, decisions, reports.

Constructors validate, so an invalid watch or image reference cannot exist. Nothing here does I/O.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from reconciler import errors

DOCKER_HUB = "docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io"})
# distribution-spec "Pulling manifests": repository path components and tags.
_PATH = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")
_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
RELEASE_PATTERN = r"^[0-9]+\.[0-9]+\.[0-9]+$"


class FirstSeen(enum.StrEnum):
    """What to do with the first observation of a watch."""

    BASELINE = "baseline"
    DEPLOY = "deploy"


class ActionKind(enum.StrEnum):
    AWX = "awx"
    STATEFULSET = "statefulset"


class RolloutMode(enum.StrEnum):
    RESTART = "restart"
    PIN = "pin"


class OnDelete(enum.StrEnum):
    """What a roll-out does with an `OnDelete` StatefulSet, whose pods change only when deleted."""

    REPORT = "report"  # fail the action, saying the pods must be deleted
    DELETE_PODS = "delete-pods"  # delete them one at a time, highest ordinal first


class Verdict(enum.StrEnum):
    """What one pass decided for one watch."""

    BASELINE = "baseline"  # first sighting taken as deployed
    IN_SYNC = "in_sync"  # observed == deployed
    SETTLING = "settling"  # new, but not yet seen unchanged for `settle`
    DRIFT = "drift"  # observed != deployed: the action is due
    FOLLOW = "follow"  # changed, and the watch has no action: deployed follows observed
    BUSY = "busy"  # an action for this target is already open (launched, being waited for)
    RETRY_LATER = "retry_later"  # the last attempt failed; the back-off has not passed yet
    GAVE_UP = "gave_up"  # every attempt for this target failed; a newer image starts over
    ERROR = "error"  # the registry could not be asked


class State(enum.StrEnum):
    """What `status` says of a watch."""

    UNKNOWN = "unknown"
    IN_SYNC = "in_sync"
    SETTLING = "settling"
    DRIFTED = "drifted"
    DEPLOYING = "deploying"
    FAILED = "failed"
    ERROR = "error"


class ActionStatus(enum.StrEnum):
    """The outbox: planned -> launched -> succeeded | failed; a planned action never launched is superseded."""

    PLANNED = "planned"
    LAUNCHED = "launched"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SUPERSEDED = "superseded"

    @property
    def open(self) -> bool:
        return self in (ActionStatus.PLANNED, ActionStatus.LAUNCHED)


class Failure(enum.StrEnum):
    """Why a failed action failed, which decides how it is retried."""

    DEPLOYMENT = "deployment"  # it ran and failed (or was refused): uses up one of `max_attempts`
    OUTAGE = "outage"  # nothing reached the system: backed off, but no attempt is used up
    REFUSED = "refused"  # a retry cannot succeed (ignored vars): not retried until the watch's action changes


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A normalised repository: `docker.io/library/busybox`, `ghcr.io/org/img`, `127.0.0.1:5000/a/b`."""

    registry: str
    repository: str

    def __post_init__(self) -> None:
        if not _PATH.fullmatch(self.repository):
            raise errors.ConfigError(
                f"{self.repository!r} is not a valid repository name "
                "(lower-case letters, digits and separators . _ __ - between them, / between components)"
            )

    @classmethod
    def parse(cls, name: str) -> ImageRef:
        """Normalise as Docker does: `xchem/x` -> `docker.io/xchem/x`, `busybox` -> `docker.io/library/busybox`."""
        if "@" in name or ":" in name.rsplit("/", 1)[-1]:
            raise errors.ConfigError(f"image {name!r} must be a repository without a tag or digest")
        first, _, rest = name.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            registry, path = first.lower(), rest
        else:
            registry, path = DOCKER_HUB, name
        if registry in _HUB_ALIASES:
            registry = DOCKER_HUB
            if "/" not in path:
                path = f"library/{path}"
        return cls(registry=registry, repository=path)

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}"


def check_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise errors.ConfigError(f"{tag!r} is not a valid tag (letters, digits, . _ -, at most 128)")
    return tag


def check_digest(digest: str) -> str:
    if not _DIGEST.fullmatch(digest):
        raise errors.ConfigError(f"{digest!r} is not a sha256 digest")
    return digest


@dataclass(frozen=True, slots=True)
class TagSelector:
    """Follow the digest behind one mutable tag."""

    tag: str

    def __post_init__(self) -> None:
        check_tag(self.tag)

    def describe(self) -> str:
        return f"tag:{self.tag}"


@dataclass(frozen=True, slots=True)
class ReleaseSelector:
    """Follow the newest tag matching `pattern` (and `range`), compared as versions, and its digest."""

    pattern: str = RELEASE_PATTERN
    range: str | None = None
    compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)
    specifiers: SpecifierSet | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "compiled", re.compile(self.pattern))
        except re.error as exc:
            raise errors.ConfigError(f"pattern {self.pattern!r} is not a regular expression: {exc}") from exc
        try:
            specs = SpecifierSet(self.range) if self.range is not None else None
        except InvalidSpecifier as exc:
            raise errors.ConfigError(f"range {self.range!r} is not a version range such as '>=2026.1.0,<2027'") from exc
        object.__setattr__(self, "specifiers", specs)

    def describe(self) -> str:
        if self.pattern == RELEASE_PATTERN and self.range is None:
            return "tags:release"
        parts = [f"pattern={self.pattern}"] + ([f"range={self.range}"] if self.range else [])
        return "tags:" + ",".join(parts)


Selector = TagSelector | ReleaseSelector
ExtraVar = str | int | float | bool


@dataclass(frozen=True, slots=True)
class AwxAction:
    """Launch an AWX job template, or a workflow job template (`workflow`), by name or numeric id, and wait."""

    server: str
    template: str | int
    extra_vars: Mapping[str, ExtraVar] = field(default_factory=dict)
    workflow: bool = False
    kind: ActionKind = field(default=ActionKind.AWX, init=False)

    def describe(self) -> str:
        return f"awx {self.server}: {'workflow ' if self.workflow else ''}{self.template}"


@dataclass(frozen=True, slots=True)
class StatefulSetAction:
    """Roll a StatefulSet: restart it, or pin the container's image to the new digest."""

    namespace: str
    name: str
    container: str
    mode: RolloutMode = RolloutMode.RESTART
    timeout: timedelta = timedelta(minutes=15)
    on_delete: OnDelete = OnDelete.REPORT
    kind: ActionKind = field(default=ActionKind.STATEFULSET, init=False)

    def describe(self) -> str:
        return f"statefulset {self.namespace}/{self.name} ({self.mode})"


Action = AwxAction | StatefulSetAction


def fingerprint(action: Action) -> str:
    """A short digest of an action's configuration: a failure that a retry cannot fix is retried once it changes."""
    fields = {k: getattr(action, k) for k in action.__dataclass_fields__}
    canonical = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Watch:
    """One image to follow, how often, and what to do when it drifts."""

    name: str
    image: ImageRef
    selector: Selector
    interval: timedelta = timedelta(minutes=5)
    jitter: timedelta = timedelta(seconds=30)
    settle: timedelta = timedelta(0)
    first_seen: FirstSeen = FirstSeen.BASELINE
    max_attempts: int = 3
    action: Action | None = None

    def __post_init__(self) -> None:
        if not self.name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            raise errors.ConfigError(f"watch name {self.name!r} must be letters, digits, '.', '_' or '-'")
        if self.max_attempts < 1:
            raise errors.ConfigError("max_attempts must be at least 1")


@dataclass(frozen=True, slots=True)
class Seen:
    """A tag and the digest behind it; `since` is when this pair was first observed."""

    tag: str
    digest: str
    since: datetime


@dataclass(frozen=True, slots=True)
class Deployed:
    tag: str
    digest: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Observation:
    """What the registry answered for a watch."""

    tag: str
    digest: str
    checked_at: datetime


@dataclass(frozen=True, slots=True)
class CheckFailure:
    """The registry could not be asked; `message` is the user-facing sentence."""

    message: str
    checked_at: datetime


CheckResult = Observation | CheckFailure


@dataclass(frozen=True, slots=True)
class WatchState:
    """What the database remembers of a watch: seen and deployed kept apart."""

    watch: str
    observed: Seen | None = None
    checked_at: datetime | None = None
    last_error: str | None = None
    deployed: Deployed | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """What an action deploys: the observed tag and digest, and what was deployed before."""

    watch: str
    image: ImageRef
    tag: str
    digest: str
    previous_tag: str | None = None
    previous_digest: str | None = None

    def placeholders(self) -> dict[str, str]:
        """The values of `{image}`, `{tag}`, `{digest}`, `{previous_tag}`, `{previous_digest}`, `{watch}`."""
        return {
            "image": str(self.image),
            "tag": self.tag,
            "digest": self.digest,
            "previous_tag": self.previous_tag or "",
            "previous_digest": self.previous_digest or "",
            "watch": self.watch,
        }


@dataclass(frozen=True, slots=True)
class Launch:
    """A launched action: its external reference (AWX job id) and where a person can look at it."""

    ref: str
    link: str | None = None
    note: str | None = None  # a warning worth keeping with the action (e.g. a pull policy that may not pull)
    abort: str | None = None  # started, but must be stopped at once and fail with this reason (AWX ignored our vars)


@dataclass(frozen=True, slots=True)
class Finish:
    """How a launched action ended; `final`: a retry cannot succeed until the watch's action changes."""

    succeeded: bool
    detail: str
    final: bool = False


@dataclass(frozen=True, slots=True)
class Unfinished:
    """A wait that ended with the action still running (a cancel not yet effective): it stays open, followed later."""

    detail: str


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One row of the outbox: what was (or is to be) done for one watch and target, and how it went."""

    id: int
    watch: str
    kind: ActionKind
    status: ActionStatus
    tag: str
    digest: str
    attempt: int
    created_at: datetime
    previous_tag: str | None = None
    previous_digest: str | None = None
    request: Mapping[str, object] | None = None  # what is sent: method, URL, body (never a secret)
    external_ref: str | None = None  # the AWX job id, once launched
    link: str | None = None  # where a person can look at it (the AWX UI)
    detail: str | None = None
    launched_at: datetime | None = None
    finished_at: datetime | None = None
    next_attempt_at: datetime | None = None
    failure: Failure | None = None  # how a failed action failed
    fingerprint: str | None = None  # `fingerprint(action)` of the configuration it was planned under
    outages: int = 0  # outage failures of the same attempt before this action (their back-off grows)
    abort: str | None = None  # the launched job must be canceled: why
    reset_at: datetime | None = None  # `reconciler retry`: its failures no longer hold the watch back

    def targets(self, tag: str, digest: str) -> bool:
        return (self.tag, self.digest) == (tag, digest)


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: str


@dataclass(frozen=True, slots=True)
class WatchOutcome:
    """One watch in one pass: what was seen, decided, and what state it leaves."""

    watch: Watch
    result: CheckResult
    decision: Decision
    state: WatchState
    changed: bool  # the observed tag/digest or the error differs from the previous pass
    action: ActionRecord | None = None  # taken this pass, or the open/failed one the decision is about
    acted: bool = False  # whether `action` was carried out (or resumed) in this pass
    preview: Mapping[str, object] | None = None  # --dry-run: the exact request it would send, or {"error": …}


@dataclass(frozen=True, slots=True)
class RunReport:
    """One pass over the watches, counted."""

    started_at: datetime
    finished_at: datetime
    dry_run: bool
    outcomes: tuple[WatchOutcome, ...]

    def count(self, verdict: Verdict) -> int:
        return sum(1 for o in self.outcomes if o.decision.verdict is verdict)

    def acted(self, status: ActionStatus) -> int:
        return sum(1 for o in self.outcomes if o.acted and o.action is not None and o.action.status is status)

    def summary(self) -> str:
        counts = ", ".join(f"{v.value}={self.count(v)}" for v in Verdict if self.count(v))
        seconds = (self.finished_at - self.started_at).total_seconds()
        n = len(self.outcomes)
        actions = ", ".join(f"{s.value}={self.acted(s)}" for s in ActionStatus if self.acted(s))
        return f"checked {n} watch{'' if n == 1 else 'es'} in {seconds:.2f}s: {counts or 'nothing to do'}" + (
            f"; actions: {actions}" if actions else ""
        )

"""Frozen value types of the configuration side: images, tags, selectors, actions and watches.

Constructors validate, so an invalid watch or image reference cannot exist. Nothing here does I/O.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from reconciler import errors

DOCKER_HUB = "docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io"})
# distribution-spec "Pulling manifests": repository path components and tags.
_PATH = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")
_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_WATCH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")  # GitHub's owner/name
RELEASE_PATTERN = r"^[0-9]+\.[0-9]+\.[0-9]+$"


class FirstSeen(enum.StrEnum):
    """What to do with the first observation of a watch."""

    BASELINE = "baseline"
    DEPLOY = "deploy"


class ActionKind(enum.StrEnum):
    AWX = "awx"
    STATEFULSET = "statefulset"
    GITHUB = "github"


class RolloutMode(enum.StrEnum):
    RESTART = "restart"
    PIN = "pin"


class OnDelete(enum.StrEnum):
    """What a roll-out does with an `OnDelete` StatefulSet, whose pods change only when deleted."""

    REPORT = "report"  # fail the action, saying the pods must be deleted
    DELETE_PODS = "delete-pods"  # delete them one at a time, highest ordinal first


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
        shown = self.pattern if len(self.pattern) <= 60 else self.pattern[:57] + "..."
        try:
            object.__setattr__(self, "compiled", re.compile(self.pattern))
        except (re.error, OverflowError, RecursionError, ValueError) as exc:  # `a{4294967296}` overflows the engine
            raise errors.ConfigError(f"pattern {shown!r} is not a usable regular expression: {exc}") from None
        shown = (self.range or "")[:60]
        try:
            specs = SpecifierSet(self.range) if self.range is not None else None
        except (InvalidSpecifier, ValueError):
            raise errors.ConfigError(f"range {shown!r} is not a version range such as '>=2026.1.0,<2027'") from None
        # A bound is compared as a version: each number must be one Python converts (4,300 digits at most), and
        # no tag has more than a few; past 18 digits it is no release number.
        if specs is not None and any(len(n) > 18 for spec in specs for n in re.findall(r"\d+", spec.version)):
            raise errors.ConfigError(f"range {shown!r} has a number longer than 18 digits")
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


@dataclass(frozen=True, slots=True)
class GithubAction:
    """Dispatch a GitHub Actions workflow (by name, file name or numeric id) on a ref, with inputs, and wait for
    its run."""

    server: str  # the [github.NAME] it goes through
    repository: str  # owner/name
    workflow: str | int
    ref: str
    inputs: Mapping[str, ExtraVar] = field(default_factory=dict)
    kind: ActionKind = field(default=ActionKind.GITHUB, init=False)

    def __post_init__(self) -> None:
        if not _REPOSITORY.fullmatch(self.repository):
            raise errors.ConfigError(f"repository {self.repository!r} must be owner/name")

    def describe(self) -> str:
        return f"github {self.server}: {self.repository} workflow {self.workflow!r} on {self.ref}"


Action = AwxAction | StatefulSetAction | GithubAction


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
    cannot_act: str | None = None  # why the action may not be attempted, e.g. its secret is not set
    environment: str = ""  # what notifications call it ("STAGING"); by default the name's last "-" part
    approve: bool = False  # each new digest waits for a person's `reconciler approve` before its action runs

    def __post_init__(self) -> None:
        if not _WATCH_NAME.fullmatch(self.name):
            raise errors.ConfigError(f"watch name {self.name!r} must be letters, digits, '.', '_' or '-'")
        if not self.environment:
            object.__setattr__(self, "environment", self.name.rsplit("-", 1)[-1] or self.name)
        if self.max_attempts < 1:
            raise errors.ConfigError("max_attempts must be at least 1")

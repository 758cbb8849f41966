"""Pure tag selection: which of a repository's tags a release watch follows.

A release is a tag that the watch's pattern matches as a whole (by default exactly three dot-separated numbers;
`fullmatch`, since `$` alone also matches before a trailing newline) and, if a range is given, falls inside it.
Releases are compared as versions (`packaging`), never as text:
`1.0.10` is newer than `1.0.9`, and `2026.08.3` (not strict SemVer, leading zero) is read as 2026.8.3.
No I/O, no clock, no logging.
"""

from __future__ import annotations

from collections.abc import Iterable

from packaging.version import InvalidVersion, Version

from reconciler import model


def version_of(tag: str) -> Version | None:
    """The version a tag stands for, or None when it is not one (a number past Python's int-string limit is not:
    `1.0.<4,301 digits>` makes `Version` raise ValueError)."""
    try:
        return Version(tag)
    except (InvalidVersion, ValueError):
        return None


def releases(tags: Iterable[str], selector: model.ReleaseSelector) -> list[tuple[Version, str]]:
    """The tags the selector admits, oldest first (ties between spellings broken by the tag text)."""
    found: list[tuple[Version, str]] = []
    for tag in tags:
        if not selector.compiled.fullmatch(tag):
            continue
        version = version_of(tag)
        if version is None:
            continue
        if selector.specifiers is not None and not selector.specifiers.contains(version, prereleases=True):
            continue
        found.append((version, tag))
    return sorted(found)


def newest(tags: Iterable[str], selector: model.ReleaseSelector) -> str | None:
    """The newest admitted tag, or None when no tag is a release under this selector."""
    admitted = releases(tags, selector)
    return admitted[-1][1] if admitted else None

"""A large configuration, once read and found valid, is kept parsed, so the commands people type many times a day
do not parse its TOML again: `marshal` reads 10,000 watches in ~20 ms where `tomllib` takes ~350 ms. Since the
kept copy was valid, a command about some watches (`status --watch`) builds only those.

A copy is keyed by a hash of the file's bytes, of the environment variables that change its meaning and of this
version, so an edited file or other overrides are read afresh. Copies live in `$XDG_CACHE_HOME/reconciler` (else
`~/.cache/reconciler`), a directory only its owner may write, and are used only from there; the newest few are
kept. A file smaller than `SMALLEST` is parsed every time (it takes less than a millisecond). Where no copy can be
kept (no writable home), nothing is, and nothing else changes. A copy holds what the configuration file holds
(the names of secrets, which are read from the environment or files each time; but a password written in the file,
in a database URL say, too): it is as private as its directory, readable by its owner alone.
"""

from __future__ import annotations

import functools
import hashlib
import marshal
import os
import stat
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reconciler import __version__

SMALLEST = 64 * 1024  # bytes: about 400 watches
KEEP = 8  # copies kept; the oldest go first
FORMAT = 1


def key(raw: bytes, env: Mapping[str, str], overrides: Sequence[str]) -> str:
    digest = hashlib.sha256(raw)
    for name in overrides:
        digest.update(f"\0{name}={env.get(name, '')}".encode("utf-8", "surrogateescape"))
    digest.update(f"\0{__version__}\0{FORMAT}\0{sys.version_info[:2]}\0{_rules()}".encode())
    return digest.hexdigest()


@functools.cache
def _rules() -> int:
    """When the code that checks a configuration last changed: a copy found valid by other rules is not used."""
    here = Path(__file__).resolve().parent
    return max(p.stat().st_mtime_ns for folder in (here, here.parent / "model") for p in folder.glob("*.py"))


def _directory(env: Mapping[str, str]) -> Path | None:
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]) / "reconciler"
    try:
        return Path.home() / ".cache" / "reconciler"
    except RuntimeError:  # no home at all
        return None


def _private(path: Path, *, directory: bool) -> bool:
    """Owned by this user and writable by no one else: nobody else could have put it there."""
    try:
        info = path.stat()
    except OSError:
        return False
    kind = stat.S_ISDIR(info.st_mode) if directory else stat.S_ISREG(info.st_mode)
    return kind and info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def read(name: str, env: Mapping[str, str]) -> dict[str, Any] | None:
    """The parsed configuration kept under this key, or None."""
    folder = _directory(env)
    if folder is None or not _private(folder, directory=True):
        return None
    path = folder / f"{name}.marshal"
    if not _private(path, directory=False):
        return None
    try:
        data = marshal.loads(path.read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        return None
    return data if isinstance(data, dict) else None


def write(name: str, blob: bytes, env: Mapping[str, str]) -> None:
    """Keep this parsed configuration (`marshal.dumps` of it), atomically; on any failure, keep nothing."""
    folder = _directory(env)
    if folder is None:
        return
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(folder, directory=True):
            return
        handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(blob)
            os.replace(temporary, folder / f"{name}.marshal")
        finally:
            Path(temporary).unlink(missing_ok=True)  # gone already once replaced
        copies = sorted(folder.glob("*.marshal"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in copies[KEEP:]:
            old.unlink(missing_ok=True)
    except OSError:
        return
